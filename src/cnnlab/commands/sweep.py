"""cnnlab sweep"""

from __future__ import annotations

from cnnlab.commands._common import (
    add_command,
    add_data_args,
    add_listing_arg,
    add_output_args,
    add_recipe_args,
    add_seed_arg,
    recipe_names,
    table,
)

ORDER = 62

HELP = """\
Hyper-parameter search with Optuna (TPE sampler, median pruner on per-epoch validation
accuracy). The study is stored in <runs-dir>/<study>/study.db: run the same command again
to resume an interrupted sweep, or start it in several processes at once: --trials is the
study's total, shared by all of them. On several machines use a database server
(--storage postgresql://user:pass@host/db) and a shared --runs-dir; `--report` prints the
study as it stands. A worker killed mid-trial has its trial failed after --heartbeat
seconds and run again by another.

Space YAML (config key → distribution):
  optim.lr:          {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  train.batch_size:  {type: categorical, choices: [64, 128, 256]}
  model.activation:  {type: categorical, choices: [tanh, relu]}
  train.epochs:      {type: int, low: 2, high: 4}
Example:
  cnnlab sweep --recipe lenet5-fashion-mnist --space space-lenet5 \\
      --trials 30 --data-dir DATA --set data.train_limit=10000 --set train.epochs=2
Outputs: trials.csv, best.yaml (train it with `cnnlab train --recipe .../best.yaml`),
history.png, importance.png.
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "sweep",
        run,
        "hyper-parameter search with Optuna (resumable SQLite study)",
        HELP,
        raw=True,
    )
    add_recipe_args(p, "fixed overrides for every trial, e.g. --set train.epochs=2")
    add_listing_arg(
        p,
        "--space",
        required=False,
        help="search-space YAML (see above): a path or a shipped one (%(names)s)",
        names=lambda: recipe_names(spaces=True),
    )
    p.add_argument(
        "--trials",
        type=int,
        default=30,
        help="finished trials wanted in the study, counted over all its workers (default 30)",
    )
    p.add_argument("--study", help="study name (default <recipe>-sweep)")
    p.add_argument("--storage", help="database URL (default sqlite:///<runs>/<study>/study.db)")
    add_output_args(p, name=None, runs_dir_default="runs")
    add_data_args(p)
    add_seed_arg(p, "sampler seed", default=0)
    p.add_argument(
        "--prune-after",
        type=int,
        help="epochs a trial runs before the median pruner may stop it (default: a third of "
        "the trial's epochs: a one-cycle schedule's early epochs rank configs poorly)",
    )
    p.add_argument(
        "--no-baseline", action="store_true", help="do not try the recipe's own values first"
    )
    p.add_argument(
        "--confirm",
        type=int,
        default=0,
        metavar="SEEDS",
        help="after the search, full-budget runs of the recipe and the best config with "
        "SEEDS seeds each: does the pick beat the recipe beyond the spread between seeds? "
        "(writes confirm.json)",
    )
    p.add_argument(
        "--confirm-top",
        type=int,
        default=1,
        metavar="K",
        help="with --confirm: confirm the K best trials that beat the recipe's own trial on "
        "validation (default 1)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=120,
        metavar="SECONDS",
        help="a worker silent this long has its running trial failed and queued again for "
        "the other workers (default 120)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="print the study as it stands (trials, best) and write its outputs; run nothing",
    )
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--verbose", action="store_true", help="print each trial's epochs")


def run(args) -> int:
    from cnnlab.errors import ConfigError
    from cnnlab.studies.sweep import run_sweep, sweep_report

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.report:
        res = sweep_report(
            args.recipe,
            study=args.study,
            storage=args.storage,
            runs_dir=args.runs_dir,
            overrides=overrides,
        )
        return show(res)
    if not args.space:
        raise ConfigError("--space is required (a search-space YAML), unless --report")
    res = run_sweep(
        args.recipe,
        args.space,
        args.trials,
        study=args.study,
        storage=args.storage,
        runs_dir=args.runs_dir,
        overrides=overrides,
        seed=args.seed,
        timeout=args.timeout,
        quiet=not args.verbose,
        prune_after=args.prune_after,
        baseline=not args.no_baseline,
        confirm=args.confirm,
        confirm_top=args.confirm_top,
        heartbeat=args.heartbeat,
    )
    return show(res)


def show(res: dict) -> int:
    rows = res["trials"]
    params = sorted(
        {k for r in rows for k in r}
        - {"trial", "state", "val_acc", "test_acc", "epochs", "seconds", "baseline", "worker"}
    )

    short = [k.split(".")[-1] for k in params]  # section dropped where unambiguous

    def f(v):
        return f"{v:.4g}" if isinstance(v, float) else ("–" if v is None else v)

    table(
        [
            [
                r["trial"],
                r["state"] + (" (recipe)" if r.get("baseline") else ""),
                f(r["val_acc"]),
                f(r["test_acc"]),
                r["epochs"],
                f(r["seconds"]),
                *[f(r.get(k)) for k in params],
            ]
            for r in rows
        ],
        [
            "#",
            "state",
            "val acc",
            "test acc",
            "epochs",
            "s",
            *[k.split(".")[-1] if short.count(k.split(".")[-1]) == 1 else k for k in params],
        ],
        title=f"study {res['study']}",
    )
    b = res["best"]
    if b:
        print(f"best: trial {b['trial']} val acc {b['val_acc']:.4f} {b['params']}")
        print(f"best config written to {b['recipe']}")
    for p in res["plots"]:
        print(f"wrote {p}")
    print(f"trials table: {res['dir']}/trials.csv")
    c = res.get("confirm")
    if c:
        print(f"full runs ({c['epochs']} epochs, seeds 0–{c['seeds'] - 1}), test accuracy:")
        for name, r in c["configs"].items():
            accs = ", ".join(f"{a:.4f}" for a in r["test_acc"])
            v = c.get("verdicts", {}).get(name)
            vs = f"  {v['difference'] * 100:+.2f} ± {v['stderr'] * 100:.2f} pts" if v else ""
            print(f"  {name:<10} mean {r['mean']:.4f}{vs}  ({accs})")
        print(f"verdict: {c['verdict']}  ({res['dir']}/confirm.json)")
    return 0
