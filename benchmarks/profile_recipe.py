"""Where a training epoch of a recipe goes on this machine: an interleaved A/B of layouts
(or any config variants) in one process, then torch.profiler's top operators per variant.

Every variant is built once (same seed, same data), warmed up for one epoch, then the
variants' epochs are timed in turn — A, B, A, B, ... — so a change in the machine's load
hits all of them alike; the median per variant is reported, with the load average.

    python benchmarks/profile_recipe.py --data-dir "$CNNLAB_DATA" --limit 10240 \\
        --variants "train.channels_last=true;train.channels_last=false" \\
        --out benchmarks/results/<date>-<machine>/recipe-profile.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def build(args, variant: list[str]):
    from cnnlab.train.api import build_config
    from cnnlab.train.trainer import Trainer

    over = [f"data.data_dir={args.data_dir}", "data.download=false", "train.report=false",
            "train.diagnostics=false", f"train.threads={args.threads}", "train.epochs=100",
            *([f"data.train_limit={args.limit}"] if args.limit else []), *variant]  # fmt: skip
    tr = Trainer(build_config(None, args.recipe, over), quiet=True)
    tr.setup()
    return tr


def top_ops(tr, epoch: int, rows: int) -> tuple[list[dict], float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as p:
        tr.train_epoch(epoch)
    ev = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ev)
    return [
        {"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
         "calls": e.count}
        for e in ev[:rows]
    ], total / 1e3  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--recipe", default="lenet5-fashion-mnist")
    ap.add_argument("--limit", type=int, default=10240, help="training images per epoch")
    ap.add_argument("--threads", type=int, default=0, help="0: cnnlab's default")
    ap.add_argument("--rounds", type=int, default=3, help="timed epochs per variant")
    ap.add_argument("--rows", type=int, default=12)
    ap.add_argument("--variants", default="train.channels_last=true;train.channels_last=false")
    ap.add_argument("--out")
    a = ap.parse_args(argv)

    from cnnlab.studies.records import load_avg, result_record

    variants = [v.split() for v in a.variants.split(";")]
    load0 = load_avg()
    trs = [build(a, v) for v in variants]
    names = [" ".join(v) or "(recipe)" for v in variants]
    for tr in trs:
        tr.train_epoch(1)  # warm-up
    secs: list[list[float]] = [[] for _ in trs]
    for r in range(a.rounds):
        for i, tr in enumerate(trs):
            secs[i].append(tr.train_epoch(2 + r)["seconds"])
    out = []
    for i, (tr, name) in enumerate(zip(trs, names, strict=True)):
        ops, total = top_ops(tr, 2 + a.rounds, a.rows)
        n = len(tr.task.train_loader) * tr.task.train_loader.batch_size
        med = statistics.median(secs[i])
        out.append({"variant": name, "describe": tr.describe(), "images": n,
                    "seconds": secs[i], "median_s": med,
                    "full_epoch_s": med * 60000 / n, "profiled_ms": total, "top_ops": ops})  # fmt: skip
        print(f"\n{name}: {tr.describe()}\n  epochs of {n} images: "
              + ", ".join(f"{s:.2f}" for s in secs[i])
              + f" s (median {med:.2f} s ≈ {med * 60000 / n:.2f} s per 60k-image epoch)")  # fmt: skip
        for o in ops:
            print(
                f"  {o['op']:<45} {o['self_ms']:9.1f} ms {100 * o['share']:5.1f} %  ×{o['calls']}"
            )
    if a.out:
        command = "python benchmarks/profile_recipe.py " + " ".join(
            x if x != a.data_dir else "DATA"
            for x in (argv or sys.argv[1:])
            if x not in ("--out", a.out)
        )
        rec = result_record(
            "profile", command, [0], recipe=a.recipe, load_avg=[load0, load_avg()], variants=out
        )
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
