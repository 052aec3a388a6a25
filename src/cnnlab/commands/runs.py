"""cnnlab runs"""

from __future__ import annotations

from cnnlab.commands._common import add_output_args, table

ORDER = 40


def register(sub) -> None:
    p = sub.add_parser(
        "runs",
        help="table of runs with their validation and test accuracy",
        description="One row per run: model, dataset, epochs done, the best validation "
        "accuracy (what the best checkpoint was chosen on), the last test accuracy, time "
        "and whether a checkpoint exists. GAN runs show their last Fréchet distance.",
    )
    add_output_args(p, name=None, runs_dir_default="runs")
    p.set_defaults(func=run)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def row(d) -> list[str]:
    """A run's row; a damaged config.yaml or metrics.jsonl shows as '?'."""
    from cnnlab.report.html import is_gan_run, run_config
    from cnnlab.runs.layout import read_metrics

    cfg = run_config(d)
    m = [r for r in read_metrics(d) if isinstance(r, dict)]
    ck = "yes" if (d / "checkpoints" / "last.safetensors").is_file() else "no"
    model = str(cfg.get("model", {}).get("name", "?"))
    data = str(cfg.get("data", {}).get("name", "?"))
    epochs = cfg.get("train", {}).get("epochs", "?")
    done = m[-1].get("epoch", len(m)) if m else 0
    secs = sum(r["seconds"] for r in m if _num(r.get("seconds")))
    val = [r["val_acc"] for r in m if _num(r.get("val_acc"))]
    test = [r["test_acc"] for r in m if _num(r.get("test_acc"))]
    if is_gan_run(d, cfg, m):
        fd = [r["fd"] for r in m if _num(r.get("fd"))]
        last = f"FD {fd[-1]:.2f}" if fd else "(GAN)"
        return [d.name, model, data, f"{done}/{epochs}", "-", last, f"{secs:.0f}s", ck]
    return [
        d.name,
        model,
        data,
        f"{done}/{epochs}",
        f"{max(val):.4f}" if val else "-",
        f"{test[-1]:.4f}" if test else "-",
        f"{secs:.0f}s" if m else "-",
        ck,
    ]


def run(args) -> int:
    from cnnlab.runs.layout import list_runs

    rows = [row(d) for d in list_runs(args.runs_dir)]
    if not rows:
        print(f"no runs in {args.runs_dir}/ yet; start one with `cnnlab train`")
        return 0
    table(
        rows,
        ["run", "model", "dataset", "epochs", "best val acc", "last test acc", "time", "ckpt"],
    )
    return 0
