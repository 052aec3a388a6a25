"""The one-liner on a folder of photos against hand-tuned from-scratch runs.

    python benchmarks/photos.py --data-dir DATA --seeds 0 1 2
    python benchmarks/photos.py --make DATA          # first write the folder (photo_folder.py)

DATA is a folder of photos with ``train/`` and ``val/`` (``photo_folder.py`` makes one: 398
phone-camera-like JPEGs of two classes, 640 × 480 to 2592 × 1944, plus one placeholder GIF).
Arms, each trained from scratch with ``cnnlab train`` on the same folder (``val/`` is the
test set; validation is carved from ``train/``) and scored on the test images with the
checkpoint the run serves (``best`` where one was kept, else ``last``):

* ``one-liner``: ``cnnlab train --dataset imagefolder --data-dir DATA`` and nothing else
  (settings chosen from the folder, ``train/auto.py``);
* ``defaults``: the same with ``--set train.auto=false`` — the MNIST defaults the one-liner
  used to get (LeNet-5, batch 256, Adam 1e-2, the side chosen by the loader);
* ``hand-tuned``: ``--model alexnet-cifar --set data.size=64 --lr 1e-3 --batch-size 32``
  with ``--epochs`` (default 20) and ``train.auto=false``, the setting a user tuned by hand.
* with ``--hand-sizes 32 64``, one hand-tuned arm per input size.

Writes ``benchmarks/results/<date>-<machine>/photos.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _record import record, write_result


def arms(hand_epochs: int, sizes: list[int]) -> dict[str, list[str]]:
    out = {"one-liner": [], "defaults": ["--set", "train.auto=false"]}
    for s in sizes:
        out[f"hand-tuned {s} px"] = [
            "--model", "alexnet-cifar", "--set", f"data.size={s}", "--lr", "1e-3",
            "--batch-size", "32", "--epochs", str(hand_epochs), "--set", "train.auto=false",
        ]  # fmt: skip
    return out


def served(run: Path) -> dict:
    """The served checkpoint's epoch and test accuracy, and the last epoch's, from the
    run's metrics (best: by the run's own selection rule; else last)."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    have_best = (run / "checkpoints" / "best.safetensors").is_file()
    key = "val_acc_smooth" if any("val_acc_smooth" in r for r in rows) else "val_acc"
    ranked = [r for r in rows if key in r]
    best = rows[-1]
    if have_best and ranked:
        top = max(r[key] for r in ranked)
        best = next(r for r in ranked if r[key] == top)  # the first epoch reaching it
    return {
        "served": "best" if have_best else "last",
        "served_epoch": best["epoch"],
        "test_acc": best["test_acc"],
        "last_test_acc": rows[-1]["test_acc"],
        "epochs": rows[-1]["epoch"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="the photo folder (train/, val/)")
    p.add_argument("--make", metavar="DIR", help="write a photo folder there first and use it")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--hand-epochs", type=int, default=20)
    p.add_argument("--hand-sizes", type=int, nargs="+", default=[64])
    p.add_argument("--arms", nargs="+", help="only these arms (names as in the result)")
    p.add_argument("--out", help="result file (default benchmarks/results/<date>-cpu2/...)")
    a = p.parse_args(argv)
    if a.make:
        sys.path.insert(0, str(Path(__file__).parent))
        from photo_folder import make

        print(make(Path(a.make), 246, 152, 0))
        a.data_dir = a.make
    if not a.data_dir:
        p.error("give --data-dir (or --make)")
    head = record("photos", "photos.py", argv, a.seeds, a.data_dir)
    todo = arms(a.hand_epochs, a.hand_sizes)
    if a.arms:
        todo = {k: v for k, v in todo.items() if k in a.arms}
    res: dict = {**head, "arms": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in todo.items():
            rows = []
            for seed in a.seeds:
                run = Path(tmp) / f"{name.replace(' ', '-')}-{seed}"
                cmd = [sys.executable, "-m", "cnnlab", "train", "--dataset", "imagefolder", "--data-dir", a.data_dir,
                       *extra, "--seed", str(seed), "--device", "cpu",
                       "--runs-dir", tmp, "--name", run.name]  # fmt: skip
                t0 = time.time()
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                row = {"seed": seed, **served(run), "seconds": round(time.time() - t0, 1)}
                cfg = yaml.safe_load((run / "config.yaml").read_text())
                row["settings"] = {
                    "model": cfg["model"]["name"],
                    "size": cfg["data"].get("size")  # or the side the loader chose
                    or json.loads((run / "split.json").read_text())["decode"]["size"],
                    "batch": cfg["train"]["batch_size"],
                    "lr": cfg["optim"]["lr"],
                    "epochs": cfg["train"]["epochs"],
                    "val_fraction": cfg["data"]["val_fraction"],
                    "select": cfg["train"]["select"],
                }
                if seed == a.seeds[0]:
                    row["first_lines"] = [
                        ln
                        for ln in out.splitlines()
                        if ln.startswith(("folder:", "split:", "auto:"))
                    ]
                rows.append(row)
                print(name, json.dumps({k: v for k, v in row.items() if k != "first_lines"}),
                      flush=True)  # fmt: skip
            accs = [r["test_acc"] for r in rows]
            res["arms"][name] = {
                "command": "cnnlab train --dataset imagefolder --data-dir DATA " + " ".join(extra),
                "runs": rows,
                "test_acc_mean": statistics.mean(accs),
                "test_acc_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "last_test_acc_mean": statistics.mean(r["last_test_acc"] for r in rows),
            }
            write_result(res, a.out, "photos.json")  # after every arm: a partial record
    for name, r in res["arms"].items():
        print(f"{name}: {100 * r['test_acc_mean']:.1f} ± {100 * r['test_acc_sd']:.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
