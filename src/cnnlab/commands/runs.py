"""cnnlab runs"""

from __future__ import annotations

from cnnlab.commands._common import add_output_args, table

ORDER = 40


def register(sub) -> None:
    p = sub.add_parser("runs", help="table of runs with their best metrics")
    add_output_args(p, name=None, runs_dir_default="runs")
    p.set_defaults(func=run)


def run(args) -> int:
    import yaml

    from cnnlab.runs.layout import list_runs, read_metrics

    rows = []
    for d in list_runs(args.runs_dir):
        m = read_metrics(d)
        try:
            cfg = yaml.safe_load((d / "config.yaml").read_text()) or {}
        except yaml.YAMLError:
            cfg = {}
        ck = "yes" if (d / "checkpoints" / "last.safetensors").is_file() else "no"
        if m:
            best = max(m, key=lambda r: r["test_acc"])
            rows.append(
                [
                    d.name,
                    cfg.get("model", {}).get("name", "?"),
                    cfg.get("data", {}).get("name", "?"),
                    f"{m[-1]['epoch']}/{cfg.get('train', {}).get('epochs', '?')}",
                    f"{best['test_acc']:.4f}",
                    f"{m[-1]['test_acc']:.4f}",
                    f"{sum(r['seconds'] for r in m):.0f}s",
                    ck,
                ]
            )
        else:
            rows.append(
                [
                    d.name,
                    cfg.get("model", {}).get("name", "?"),
                    cfg.get("data", {}).get("name", "?"),
                    "0",
                    "-",
                    "-",
                    "-",
                    ck,
                ]
            )
    if not rows:
        print(f"no runs in {args.runs_dir}/ yet; start one with `cnnlab train`")
        return 0
    table(
        rows,
        ["run", "model", "dataset", "epochs", "best test acc", "last test acc", "time", "ckpt"],
    )
    return 0
