"""Training on a folder of PNGs against training on the IDX files they were written from.

    python benchmarks/folder_parity.py --data-dir DATA --seeds 0 1 2

The first ``--n-train`` Fashion-MNIST training images and all 10,000 test images are
written as PNG files into ``<tmp>/fashion-png/{train,test}/<class>/<index>.png`` and read
back by the ``imagefolder`` dataset (resident: decoded once into uint8 tensors). The
decoded tensors are compared with the IDX tensors bit for bit; then LeNet-5 is trained
on each — ``--dataset fashion-mnist --set data.train_limit=N`` and ``--dataset
imagefolder`` — with the same settings and seeds, and scored on the same 10,000 test
images after the last epoch. What still differs by design: the folder computes its
normalisation statistics from its own training images (the IDX dataset has fixed ones),
its classes are numbered in folder-name order, and its training images are held in a
seeded shuffled order, so the validation split and the batches hold other images.

Writes ``benchmarks/results/<date>-cpu2/folder_parity.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import cnnlab
from _record import record, write_result
from cnnlab.data.datasets import load_dataset
from cnnlab.data.folder import class_folder_name, write_image_folder


def write_folder(fm, n_train: int, root: Path) -> float:
    t0 = time.perf_counter()
    write_image_folder(root / "train", fm.train_x[:n_train], fm.train_y[:n_train], fm.classes)
    write_image_folder(root / "test", fm.test_x, fm.test_y, fm.classes)
    return time.perf_counter() - t0


def bit_identical(folder, fm) -> dict:
    """Each decoded image against the IDX image its file name numbers."""
    renumber = torch.tensor([folder.classes.index(class_folder_name(c)) for c in fm.classes])
    out = {}
    for part, x, y, (fx, fy) in (
        ("train", folder.train_x, folder.train_y, (fm.train_x, fm.train_y)),
        ("test", folder.test_x, folder.test_y, (fm.test_x, fm.test_y)),
    ):
        idx = [int(Path(r).stem) for r, _ in folder.split.parts[part]]
        out[part] = bool(torch.equal(x, fx[idx]) and torch.equal(y, renumber[fy[idx]]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", help="result file (default benchmarks/results/<date>-cpu2/...)")
    a = p.parse_args(argv)
    head = record(
        "folder_parity", "folder_parity.py", argv, a.seeds, a.data_dir
    )  # at the start: the code that runs
    t_all = time.time()
    fm = load_dataset("fashion-mnist", a.data_dir)
    root = Path(tempfile.mkdtemp(prefix="cnnlab-folder-parity-")) / "fashion-png"
    write_s = write_folder(fm, a.n_train, root)
    t0 = time.perf_counter()
    folder = load_dataset("imagefolder", root)
    decode_s = time.perf_counter() - t0
    same = bit_identical(folder, fm)
    print(f"decoded {len(folder.train_x) + len(folder.test_x)} PNGs in {decode_s:.1f}s; "
          f"bit-identical: {same}", flush=True)  # fmt: skip
    common = ["train.device=cpu", "train.diagnostics=false", f"train.batch_size={a.batch_size}"]
    arms = {
        "idx": dict(
            dataset="fashion-mnist",
            data_dir=a.data_dir,
            overrides=[*common, f"data.train_limit={a.n_train}"],
        ),  # fmt: skip
        "folder": dict(dataset=folder, overrides=common),
    }
    runs = root.parent / "runs"
    rows = {}
    for arm, kw in arms.items():
        accs, secs = [], []
        for s in a.seeds:
            t1 = time.perf_counter()
            r = cnnlab.fit(model="lenet5", epochs=a.epochs, seed=s, runs_dir=str(runs),
                           quiet=True, **kw)  # fmt: skip
            secs.append(time.perf_counter() - t1)
            accs.append(r.final["test_acc"])
            print(f"{arm:7s} seed {s}: test acc {accs[-1]:.4f} ({secs[-1]:.0f}s)", flush=True)
        rows[arm] = {
            "test_acc": accs,
            "mean": statistics.mean(accs),
            "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "seconds": [round(t, 1) for t in secs],
        }
    result = {
        **head,
        "model": "lenet5",
        "n_train": a.n_train,
        "n_test": len(folder.test_x),
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "bit_identical": same,
        "write_seconds": round(write_s, 1),
        "decode_seconds": round(decode_s, 1),
        "rows": rows,
        "seconds": round(time.time() - t_all, 1),
        "note": "final-epoch test accuracy on the same 10,000 official test images; the "
        "folder's statistics, class numbering and training order are its own (see the "
        "script's docstring); CPU shared with other jobs",
    }
    write_result(result, a.out, "folder_parity.json")
    for arm, r in rows.items():
        print(f"{arm:7s} {100 * r['mean']:.2f} ± {100 * r['sd']:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
