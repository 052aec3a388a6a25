"""cnnlab ablate"""

from __future__ import annotations

from cnnlab.commands._common import (
    add_command,
    add_data_args,
    add_output_args,
    add_recipe_args,
    add_training_args,
    kwargs_of,
    table,
)

ORDER = 25

HELP = """\
Train every combination of the varied choices (× seeds) and compare them: a table of
mean ± std test accuracy, final train loss and time, plus overlaid learning curves, all in
one study directory (runs/<study>/). Re-running the same command skips finished runs.
Runs are sequential; with several CUDA GPUs they run in parallel, one process per GPU.
Examples:
  cnnlab ablate --recipe lenet5-fashion-mnist --data-dir DATA \\
      --vary model.activation=relu,tanh,sigmoid,elu --epochs 3 --seeds 3
  cnnlab ablate --recipe lenet5-fashion-mnist --vary optim.name=sgd,adam \\
      --vary model.batch_norm=none,conv --epochs 5
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "ablate",
        run,
        "train every combination of choices and compare them (mean ± std over seeds)",
        HELP,
        raw=True,
    )
    add_recipe_args(p, "override a config key in every run")
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a config key and its values to compare; repeat for a grid",
    )
    add_training_args(p, epochs="epochs per run (default: the recipe's)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per combination (0, 1, ...)")
    add_data_args(p)
    add_output_args(p, name=None)
    p.add_argument("--study", help="study name (default: ablate-<recipe>-<varied keys>)")
    p.add_argument("--verbose", action="store_true", help="show each run's epoch lines")


def run(args) -> int:
    from cnnlab.studies.ablate import HEADER, ablate

    st = ablate(
        **kwargs_of(args, "recipe", "vary", "epochs", "seeds", "data_dir", "overrides"),
        **kwargs_of(args, "study", "runs_dir"),
        quiet=not args.verbose,
    )
    table(st.table_rows(), HEADER, title=f"study {st.dir.name}")
    print(f"study directory: {st.dir} (results.csv, results.json, results.md, curves.png)")
    return 0
