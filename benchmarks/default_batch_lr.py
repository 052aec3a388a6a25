"""The batch size and learning rate of a run without a recipe: which reach accuracy fastest.

``cnnlab train`` with no recipe trains LeNet-5 on the embedded MNIST sample (4,000 train /
1,000 test digits) with one-cycle Adam for ``train.epochs``. This trains that default at
several (batch size, peak LR) points, everything else as the defaults have it, and
prints per point the process CPU seconds and wall seconds of training until the test
accuracy first reached 97 / 98 / 99 %, and the accuracy at the end. CPU seconds are the
load-robust figure on a shared machine with one thread.

    python benchmarks/default_batch_lr.py --points 64:3e-3,128:3e-3,128:6e-3 --threads 1 \\
        --out benchmarks/results/<date>-<machine>/default-batch-lr.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

THRESHOLDS = (0.97, 0.98, 0.99)


def run_point(bs: int, lr: float, seed: int, threads: int, extra: list[str]) -> dict:
    from cnnlab.train.api import build_config
    from cnnlab.train.trainer import Trainer

    over = [f"train.batch_size={bs}", f"optim.lr={lr}", f"train.seed={seed}",
            "train.diagnostics=false", f"train.threads={threads}", *extra]  # fmt: skip
    cfg = build_config(None, None, over)
    tr = Trainer(cfg, quiet=True)
    tr.setup()
    rows, cpu, wall = [], 0.0, 0.0
    for e in range(1, cfg.train.epochs + 1):
        c0 = time.process_time()
        m = tr.train_epoch(e)
        cpu += time.process_time() - c0
        wall += m["seconds"]
        _, acc, _ = tr.task.eval_loader(tr.task.test_loader)
        tr.schedule.epoch_end(acc)
        rows.append({"epoch": e, "cpu": cpu, "wall": wall, "test_acc": acc})
    out = {"batch_size": bs, "lr": lr, "seed": seed, "epochs": rows,
           "final_acc": rows[-1]["test_acc"],
           "cpu_s_per_epoch": statistics.median(
               b["cpu"] - a["cpu"] for a, b in zip([{"cpu": 0.0}, *rows], rows))}  # fmt: skip
    for t in THRESHOLDS:
        hit = next((r for r in rows if r["test_acc"] >= t), None)
        out[f"to_{t:g}"] = (
            {"cpu": hit["cpu"], "wall": hit["wall"], "epoch": hit["epoch"]} if hit else None
        )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", default="32:2e-3,64:3e-3,128:3e-3,128:6e-3,256:6e-3,256:1e-2")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out")
    a = ap.parse_args(argv)

    from cnnlab.studies.records import load_avg, result_record

    load0 = load_avg()
    res = []
    for seed in (int(s) for s in a.seeds.split(",")):
        for pt in a.points.split(","):
            bs, lr = pt.split(":")
            r = run_point(int(bs), float(lr), seed, a.threads, a.set)
            res.append(r)
            cells = [f"{t:.0%}: " + (f"{r[f'to_{t:g}']['cpu']:.1f} cpu-s (ep {r[f'to_{t:g}']['epoch']})"
                                     if r[f"to_{t:g}"] else "no") for t in THRESHOLDS]  # fmt: skip
            print(f"batch {bs:>4} lr {float(lr):.0e} seed {seed}: {r['cpu_s_per_epoch']:.2f} cpu-s/epoch, "
                  f"final {r['final_acc']:.4f}; " + ", ".join(cells), flush=True)  # fmt: skip
    if a.out:
        record = result_record(
            "default-batch-lr",
            "python benchmarks/default_batch_lr.py " + " ".join(argv or sys.argv[1:]),
            sorted({r["seed"] for r in res}),
            threads=a.threads,
            load_avg=[load0, load_avg()],
            note=f"{os.cpu_count()} cores shared with other jobs; CPU seconds are the figure",
            points=res,
        )
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
