"""Fine-tuning against training from scratch on a small folder of Fashion-MNIST images.

    python benchmarks/finetune.py --data-dir DATA --seeds 0 1 2

The target: 100 training images per class of Fashion-MNIST (chosen once, stratified,
seed 1234), written as PNG files into ``<work>/fmnist-100/<class>/`` and read back from
there; scored on the official 10,000 test images after the last epoch (no model
selection on the test set). Every arm gets the same budget (epochs, batch, optimiser,
schedule) and the same seeds; only the starting weights and the freeze schedule differ:

* ``scratch``: LeNet-5 from its default initialisation;
* ``mnist (init)`` / ``mnist (fine_tune)``: from LeNet-5 trained on mnist-sample (5,000
  real MNIST digits, 10 % held out to pick its best epoch): the weights alone, or fastai's
  recipe (features frozen for the first epochs, then trained at lr × backbone_lr_mult);
* ``fashion-rest (init)`` / ``(fine_tune)``: from LeNet-5 trained on the other 59,000
  Fashion-MNIST training images (in-domain pretraining; the folder's images are not in it).

Writes ``benchmarks/results/<date>-<machine>/finetune.json``.
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

COMMON = ["train.diagnostics=false", "train.device=cpu", "train.batch_size=32"]


def folder_of(ds: Dataset, per_class: int, root: Path) -> tuple[Path, np.ndarray]:
    """Write ``per_class`` training images of each class as PNGs; (folder, their indices)."""
    rng = np.random.default_rng(1234)
    y = ds.train_y.numpy()
    picked = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)]
    )
    for i in picked:
        d = root / ds.classes[y[i]].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.train_x[i, 0].numpy()).save(d / f"{i:05d}.png")
    return root, np.sort(picked)


def read_folder(root: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for c, name in enumerate(classes):
        for f in sorted((root / name.replace("/", "_")).glob("*.png")):
            with Image.open(f) as im:
                xs.append(np.asarray(im.convert("L")))
            ys.append(c)
    return torch.from_numpy(np.stack(xs)[:, None]), torch.tensor(ys)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--unfreeze-at", type=int, default=4)
    p.add_argument("--backbone-lr-mult", type=float, default=0.3)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--src-epochs", type=int, nargs=2, default=[10, 3], metavar=("MNIST", "REST"))
    p.add_argument("--out", help="result file (default benchmarks/results/<date>-cpu2/...)")
    p.add_argument("--tiny", action="store_true", help="a smoke run (marked tiny)")
    a = p.parse_args(argv)
    head = record(
        "finetune", "finetune.py", argv, a.seeds, a.data_dir
    )  # at the start: the code that runs
    t0 = time.time()
    fm = load_dataset("fashion-mnist", a.data_dir)
    work = Path(tempfile.mkdtemp(prefix="cnnlab-finetune-"))
    root, picked = folder_of(fm, a.per_class, work / "fmnist-100")
    x, y = read_folder(root, fm.classes)
    order = sorted(picked, key=lambda i: (int(fm.train_y[i]), i))
    assert torch.equal(x, fm.train_x[order]), "the PNG folder must hold the same pixels"
    target = Dataset(
        "fmnist-100", x, y, fm.test_x, fm.test_y, fm.classes, fm.mean, fm.std, "crop,flip"
    )
    rest = np.setdiff1d(np.arange(len(fm.train_y)), picked)
    rest_ds = Dataset(
        "fashion-rest",
        fm.train_x[rest],
        fm.train_y[rest],
        fm.test_x,
        fm.test_y,
        fm.classes,
        fm.mean,
        fm.std,
        "crop,flip",
    )
    runs = work / "runs"
    src_cfg = [*COMMON, "data.val_fraction=0.1", "train.batch_size=64"]
    sources = {}
    for name, ds, ep in (
        ("mnist", "mnist-sample", a.src_epochs[0]),
        ("fashion-rest", rest_ds, a.src_epochs[1]),
    ):
        r = cnnlab.fit(
            overrides=src_cfg, dataset=ds, epochs=ep, runs_dir=str(runs), name=f"src-{name}"
        )
        sources[name] = {"run": str(r.run_dir), "epochs": ep, "best_val_acc": r.best["val_acc"]}
    arms = {"scratch": []}
    for name in sources:
        src = sources[name]["run"]
        arms[f"{name} (init)"] = [f"model.init_from={src}"]
        arms[f"{name} (fine_tune)"] = [
            f"model.init_from={src}",
            "train.freeze=features",
            f"train.unfreeze_at={a.unfreeze_at}",
            f"optim.backbone_lr_mult={a.backbone_lr_mult}",
        ]
    rows = {}
    for arm, extra in arms.items():
        accs = []
        for s in a.seeds:
            r = cnnlab.fit(
                overrides=[*COMMON, *extra],
                dataset=target,
                epochs=a.epochs,
                seed=s,
                runs_dir=str(runs),
                quiet=True,
            )
            accs.append(r.final["test_acc"])
            print(f"{arm:24s} seed {s}: {accs[-1]:.4f}", flush=True)
        rows[arm] = {
            "test_acc": accs,
            "mean": statistics.mean(accs),
            "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "overrides": extra,
        }
    result = {
        **head,
        "model": "lenet5",
        "target": f"{a.per_class} Fashion-MNIST training images per class (PNG folder), "
        "official test set",
        "epochs": a.epochs,
        "batch_size": 32,
        "sources": {k: {kk: vv for kk, vv in v.items() if kk != "run"} for k, v in sources.items()},
        "rows": rows,
        "seconds": round(time.time() - t0, 1),
        "note": "final-epoch test accuracy (no selection on the test set); CPU shared with "
        "other jobs",
    }
    if a.tiny:
        result["tiny"] = True
    write_result(result, a.out, "finetune.json")
    for arm, r in rows.items():
        print(f"{arm:24s} {100 * r['mean']:.2f} ± {100 * r['sd']:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
