"""Test-time augmentation on Fashion-MNIST: accuracy with and without TTA, over seeds.

    python benchmarks/tta.py --data-dir DATA --seeds 0 1 2

Each seed trains LeNet-5 with the shipped recipe ``lenet5-fashion-mnist`` (crop + flip
augmentation, 10 % of the training images held out as validation) for a short budget
(``--epochs``, default 5), then scores its best checkpoint on the official 10,000 test
images once through ``cnnlab.evaluate(..., tta=True)`` — the one evaluation path
(``inference.score``): the plain accuracy and the TTA accuracy come from the same
checkpoint and images. The views: the original and its mirror image, each also shifted by
±1 pixel up, down, left and right (10 views; what crop with data.pad=2 and flip allow).

Writes ``benchmarks/results/<date>-cpu2/tta.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cnnlab
from _record import record, write_result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", help="result file (default benchmarks/results/<date>-cpu2/tta.json)")
    a = p.parse_args(argv)
    head = record("tta", "tta.py", argv, a.seeds, a.data_dir)  # at the start: the code that runs
    t0 = time.time()
    runs = Path(tempfile.mkdtemp(prefix="cnnlab-tta-"))
    overrides = [
        f"train.epochs={a.epochs}",
        f"data.data_dir={a.data_dir}",
        "train.device=cpu",
        "train.report=false",
    ]
    rows = []
    for s in a.seeds:
        t1 = time.time()
        r = cnnlab.fit(
            recipe="lenet5-fashion-mnist",
            overrides=overrides,
            seed=s,
            runs_dir=str(runs),
            name=f"seed{s}",
            quiet=True,
        )
        t2 = time.time()
        ev = cnnlab.evaluate(r.run_dir, device="cpu", save=False, tta=True)
        t = ev["tta"]
        rows.append(
            {
                "seed": s,
                "accuracy": ev["accuracy"],
                "accuracy_tta": t["accuracy"],
                "change_points": 100 * t["accuracy_change"],
                "loss": ev["loss"],
                "loss_tta": t["loss"],
                "ece": ev["ece"],
                "ece_tta": t["ece"],
                "checkpoint": ev["checkpoint"],
                "epoch": ev["epoch"],
                "train_seconds": round(t2 - t1, 1),
                "eval_seconds": round(time.time() - t2, 1),
            }
        )
        print(
            f"seed {s}: accuracy {ev['accuracy']:.4f}, with TTA {t['accuracy']:.4f} "
            f"({rows[-1]['change_points']:+.2f} points)",
            flush=True,
        )

    def ms(key):
        v = [r[key] for r in rows]
        return {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0}

    result = {
        **head,
        "recipe": "lenet5-fashion-mnist",
        "overrides": overrides[:1],
        "views": ev["tta"]["views"],
        "rows": rows,
        "accuracy": ms("accuracy"),
        "accuracy_tta": ms("accuracy_tta"),
        "change_points": ms("change_points"),
        "seconds": round(time.time() - t0, 1),
        "note": "best checkpoint (by validation accuracy) of each run, official test set; "
        "plain and TTA accuracy from one cnnlab.evaluate(..., tta=True) call",
    }
    write_result(result, a.out, "tta.json")
    print(
        f"accuracy {100 * result['accuracy']['mean']:.2f} ± {100 * result['accuracy']['sd']:.2f}"
        f" %, with TTA {100 * result['accuracy_tta']['mean']:.2f} ± "
        f"{100 * result['accuracy_tta']['sd']:.2f} %, change "
        f"{result['change_points']['mean']:+.2f} ± {result['change_points']['sd']:.2f} points"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
