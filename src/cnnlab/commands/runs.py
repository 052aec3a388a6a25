"""cnnlab runs"""

from __future__ import annotations

from cnnlab.commands._common import add_output_args, table

ORDER = 40


def register(sub) -> None:
    p = sub.add_parser(
        "runs",
        help="table of runs with their validation and test accuracy",
        description="One row per run: model, dataset, epochs done, the validation-selected "
        "epoch (the best checkpoint) with its validation and test accuracy, the last epoch's "
        "test accuracy, training and wall seconds, and whether a checkpoint exists. GAN runs "
        "show their last Fréchet distance.",
    )
    add_output_args(p, name=None, runs_dir_default="runs")
    p.add_argument(
        "--to-csv",
        metavar="FILE",
        help="also write the table as CSV (one header row, then one row per run; - for stdout)",
    )
    p.set_defaults(func=run)


HEADER = [
    "run",
    "model",
    "dataset",
    "epochs",
    "best epoch (by val acc)",
    "val acc (best)",
    "test acc (best)",
    "test acc (last)",
    "train s",
    "wall s",
    "ckpt",
]


def row(d) -> list[str]:
    """A run's row; a damaged config.yaml or metrics.jsonl shows as '?'."""
    from cnnlab.report.rundata import is_gan_run, run_config
    from cnnlab.runs.layout import read_metrics
    from cnnlab.runs.summary import best_epoch, run_seconds

    cfg = run_config(d)
    m = [r for r in read_metrics(d) if isinstance(r, dict)]
    ck = "yes" if (d / "checkpoints" / "last.safetensors").is_file() else "no"
    model = str(cfg.get("model", {}).get("name", "?"))
    data = str(cfg.get("data", {}).get("name", "?"))
    epochs = cfg.get("train", {}).get("epochs", "?")
    done = m[-1].get("epoch", len(m)) if m else 0
    train_s, wall_s = run_seconds(m)
    times = [f"{train_s:.1f}", f"{wall_s:.1f}"] if m else ["-", "-"]
    if is_gan_run(d, cfg, m):
        fd = [r["fd"] for r in m if _num(r.get("fd"))]
        last = f"FD {fd[-1]:.2f}" if fd else "(GAN)"
        return [d.name, model, data, f"{done}/{epochs}", "-", "-", "-", last, *times, ck]
    best = best_epoch(m)
    test = [r["test_acc"] for r in m if _num(r.get("test_acc"))]
    return [
        d.name,
        model,
        data,
        f"{done}/{epochs}",
        str(best["epoch"]) if best else "- (no val split)" if m else "-",
        f"{best['val_acc']:.4f}" if best else "-",
        f"{best['test_acc']:.4f}" if best and _num(best.get("test_acc")) else "-",
        f"{test[-1]:.4f}" if test else "-",
        *times,
        ck,
    ]


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def run(args) -> int:
    from cnnlab.runs.layout import list_runs

    rows = [row(d) for d in list_runs(args.runs_dir)]
    if args.to_csv:
        write_csv(args.to_csv, rows)
        if args.to_csv == "-":
            return 0
    if not rows:
        print(f"no runs in {args.runs_dir}/ yet; start one with `cnnlab train`")
        return 0
    table(rows, HEADER)
    return 0


def write_csv(dest: str, rows: list[list[str]]) -> None:
    """The table as CSV, written all or nothing."""
    import csv
    import io
    import sys

    from cnnlab.runs.files import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    w.writerows(rows)
    if dest == "-":
        sys.stdout.write(buf.getvalue())
        return
    atomic_write_text(dest, buf.getvalue())  # an unwritable path: one CheckpointError line
