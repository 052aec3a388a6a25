"""Class imbalance: plain training against class weights and a class-balanced sampler.

    python benchmarks/imbalance.py --data-dir DATA --seeds 0 1 2 3 4

The training set: a Fashion-MNIST folder where four classes keep 5 % of their images —
``--majority`` (1,000) training images of each of the six other classes and ``--minority``
(50) of each of ``--minority-classes`` (T-shirt/top, Pullover, Coat, Shirt: the
upper-body garments, which the model confuses with each other, so a bias towards the
common ones has something to act on). The images are chosen once (seed 1234), written as
PNG files into ``<work>/fmnist-imbalanced/<class>/`` and read back from there (the pixels
are checked to be the official ones), and kept on the device as any small dataset is.

Every arm trains LeNet-5 with the same budget (epochs, batch, optimiser, schedule, the
dataset's crop + flip) and the same seeds, without a validation split; the last epoch is
scored with :func:`cnnlab.inference.score` (what ``cnnlab eval`` runs):

* on the official test set (10,000 images, 1,000 per class: accuracy there *is* balanced
  accuracy), and
* on an imbalanced test set with the training mix (the first 50 test images of each
  minority class, all 1,000 of the others: 6,200), from the same logits.

Arms: ``plain``; ``class_weights=auto``; ``sampler=balanced``; both.

Writes ``benchmarks/results/<date>-cpu2/imbalance.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import cnnlab
from _record import record, write_result
from cnnlab.data.datasets import Dataset, load_dataset
from cnnlab.inference import score
from cnnlab.metrics import metrics_from_logits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune import read_folder  # noqa: E402  (PNG folder → tensors, as there)

COMMON = [
    "train.diagnostics=false",
    "train.device=cpu",
    "train.batch_size=64",
    "data.val_fraction=0",  # the last epoch is scored: nothing is chosen on any split
]
ARMS = {
    "plain": [],
    "class_weights=auto": ["train.class_weights=auto"],
    "sampler=balanced": ["data.sampler=balanced"],
    "both": ["train.class_weights=auto", "data.sampler=balanced"],
}


def pick(y: np.ndarray, counts: dict[int, int], seed: int = 1234) -> np.ndarray:
    """``counts[c]`` random indices of each class c (sorted by class, then index)."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [np.sort(rng.choice(np.flatnonzero(y == c), n, replace=False)) for c, n in counts.items()]
    )


def write_folder(ds: Dataset, idx: np.ndarray, root: Path) -> None:
    y = ds.train_y.numpy()
    for i in idx:
        d = root / ds.classes[y[i]].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.train_x[i, 0].numpy()).save(d / f"{i:05d}.png")


def summary(m: dict, minority: list[int]) -> dict:
    rec = [v["recall"] for v in m["per_class_metrics"].values()]
    major = [r for c, r in enumerate(rec) if c not in minority]
    return {
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "macro_f1": m["macro_f1"],
        "minority_recall": statistics.mean(rec[c] for c in minority),
        "majority_recall": statistics.mean(major),
        "recall": rec,
    }


def mean_sd(xs: list[float]) -> dict:
    return {"mean": statistics.mean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--majority", type=int, default=1000)
    p.add_argument("--minority", type=int, default=50)
    p.add_argument("--minority-classes", type=int, nargs="+", default=[0, 2, 4, 6])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--out", help="result file (default benchmarks/results/<date>-cpu2/...)")
    p.add_argument("--tiny", action="store_true", help="a smoke run (marked tiny)")
    a = p.parse_args(argv)
    head = record(
        "imbalance", "imbalance.py", argv, a.seeds, a.data_dir
    )  # at the start: the code that runs
    t0 = time.time()
    fm = load_dataset("fashion-mnist", a.data_dir)
    minority = sorted(a.minority_classes)
    counts = {c: a.minority if c in minority else a.majority for c in range(10)}
    idx = pick(fm.train_y.numpy(), counts)
    work = Path(tempfile.mkdtemp(prefix="cnnlab-imbalance-"))
    root = work / "fmnist-imbalanced"
    write_folder(fm, idx, root)
    x, y = read_folder(root, fm.classes)
    assert torch.equal(x, fm.train_x[idx]), "the PNG folder must hold the same pixels"
    assert torch.equal(y, fm.train_y[idx])
    target = Dataset(
        "fmnist-imbalanced", x, y, fm.test_x, fm.test_y, fm.classes, fm.mean, fm.std, "crop,flip"
    )
    # the imbalanced test set: the training mix, from the official test images
    ty = fm.test_y
    keep = torch.ones(len(ty), dtype=torch.bool)
    for c in minority:
        keep[(ty == c).nonzero().flatten()[a.minority :]] = False
    runs = work / "runs"
    rows: dict[str, dict] = {}
    for arm in a.arms:
        per_seed = []
        for s in a.seeds:
            ts = time.time()
            r = cnnlab.fit(
                overrides=[*COMMON, *ARMS[arm]],
                dataset=target,
                epochs=a.epochs,
                seed=s,
                runs_dir=str(runs),
                quiet=True,
            )
            train_s = time.time() - ts
            sc = score(r.run_dir, "fashion-mnist", a.data_dir, device="cpu", which="last")
            full = summary(sc.metrics, minority)
            imb = summary(
                metrics_from_logits(sc.logits[keep], sc.labels[keep], fm.classes), minority
            )
            per_seed.append({"seed": s, "official": full, "imbalanced": imb, "train_s": train_s})
            print(
                f"{arm:20s} seed {s}: acc {full['accuracy']:.4f} macro-F1 "
                f"{full['macro_f1']:.4f} minority recall {full['minority_recall']:.4f} | "
                f"imbalanced test acc {imb['accuracy']:.4f} bal {imb['balanced_accuracy']:.4f} "
                f"macro-F1 {imb['macro_f1']:.4f}  ({train_s:.0f} s)",
                flush=True,
            )
        keys = ("accuracy", "balanced_accuracy", "macro_f1", "minority_recall", "majority_recall")
        rows[arm] = {
            "overrides": ARMS[arm],
            **{
                split: {k: mean_sd([d[split][k] for d in per_seed]) for k in keys}
                for split in ("official", "imbalanced")
            },
            "per_seed": per_seed,
        }
    result = {
        **head,
        "model": "lenet5",
        "epochs": a.epochs,
        "batch_size": 64,
        "train_counts": {fm.classes[c]: n for c, n in counts.items()},
        "minority_classes": [fm.classes[c] for c in minority],
        "test_sets": {
            "official": int(len(ty)),
            "imbalanced": int(keep.sum()),
        },
        "rows": rows,
        "seconds": round(time.time() - t0, 1),
        "note": "final-epoch metrics (no selection on any split); the imbalanced test set is "
        "a subset of the official one with the training mix; CPU shared with other jobs",
    }
    if a.tiny:
        result["tiny"] = True
    write_result(result, a.out, "imbalance.json")
    for arm, r in rows.items():
        o, i = r["official"], r["imbalanced"]
        print(
            f"{arm:20s} balanced acc {100 * o['accuracy']['mean']:.2f} ± "
            f"{100 * o['accuracy']['sd']:.2f}  minority recall "
            f"{100 * o['minority_recall']['mean']:.2f} ± {100 * o['minority_recall']['sd']:.2f}"
            f"  imbalanced-test acc {100 * i['accuracy']['mean']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
