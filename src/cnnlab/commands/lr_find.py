"""cnnlab lr-find"""

from __future__ import annotations

import sys

from cnnlab.commands._common import (
    add_choice,
    add_command,
    add_data_args,
    add_device_arg,
    add_model_arg,
    add_quiet_arg,
    add_recipe_args,
    add_seed_arg,
    add_training_args,
    resolved_config,
)

ORDER = 11

HELP = """\
The learning-rate range test: train a fresh model for --steps steps while the LR grows
exponentially from --start-lr to --end-lr, then suggest a rate from the smoothed loss
(steepest descent, or the minimum's LR / 10) and plot the curve with it marked. The
model, data and optimiser are the ones `cnnlab train` would build from the same flags;
nothing of a run is changed. `--set optim.lr=auto` on `cnnlab train` runs it first.
Examples:
  cnnlab lr-find --recipe lenet5-fashion-mnist --data-dir DATA
  cnnlab lr-find --model lenet5 --dataset mnist-sample --set optim.name=sgd --steps 300
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "lr-find",
        run,
        "suggest a learning rate (LR range test) and plot the loss against it",
        HELP,
        raw=True,
    )
    add_model_arg(p)
    add_data_args(p, dataset="dataset name (see `cnnlab data`); default mnist-sample")
    add_recipe_args(p)
    add_training_args(p, batch_size="training batch size")
    add_device_arg(p, default=None)
    add_seed_arg(p, "random seed (init, data order)")
    p.add_argument("--steps", type=int, default=200, help="steps of the sweep (default 200)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first LR (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last LR (default 10)")
    add_choice(
        p,
        "--method",
        ("steepest", "min10"),
        "how the rate is suggested: steepest descent of the smoothed loss (default), "
        "or the LR at its minimum / 10",
    )
    p.add_argument(
        "--out",
        help="folder for lr_find.json and lr_find.png (default runs/lr-find-<model>-<dataset>)",
    )
    add_quiet_arg(p, "no progress bar")


def run(args) -> int:
    from pathlib import Path

    from cnnlab.train.lr_find import sweep_config, write_result

    cfg = resolved_config(args, args.quiet)  # an image folder's choices printed unless quiet
    out = Path(args.out or Path(cfg.run.runs_dir) / f"lr-find-{cfg.model.name}-{cfg.data.name}")
    if out.exists() and not out.is_dir():
        from cnnlab.errors import CnnlabError

        raise CnnlabError(f"--out {str(out)!r} is a file; give a folder")
    res = sweep_config(cfg, None, args.quiet, args.start_lr, args.end_lr, args.steps, args.method)
    path = write_result(res, out)
    if res.warning:
        print(res.warning, file=sys.stderr)
    print(
        f"suggested LR {res.suggestion:.2e} ({res.method}; "
        + (
            f"min/10 {res.min10:.2e}"
            if res.method == "steepest"
            else f"steepest {res.steepest:.2e}"
        )
        + f") from {len(res.lrs)} steps"
        + (" (stopped early: the loss diverged)" if res.stopped_early else "")
    )
    print(f"curve: {path}  plot: {path.with_suffix('.png')}")
    print(f"train with it: cnnlab train ... --lr {res.suggestion:.2g}  (or --set optim.lr=auto)")
    return 0
