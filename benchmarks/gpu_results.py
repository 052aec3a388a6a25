"""Measure the figures that need a GPU and write them as result files.

Runs the recipes ``alexnet-cifar10`` and ``alexnet-fashion-mnist-224``, the speed bench
(``cnnlab bench --plain``) and its AlexNet throughput comparison, the shipped LeNet-5
Fashion-MNIST recipe's time to accuracy (``cnnlab bench``: epoch time, seconds to 93 %), and writes one JSON file per
figure into ``benchmarks/results/<date>-<machine>/`` (``benchmarks/render_results.py``
turns them into ``docs/results.md``). Called by ``benchmarks/gpu_results.sh``.

``GPU_RESULTS_TINY=1`` shrinks every part to seconds on a CPU (a smoke run): results are
then marked ``"tiny": true``, written under ``runs/gpu-results-tiny/`` unless ``--out``
says otherwise, and never rendered.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

import cnnlab
from cnnlab.data.datasets import dataset_status, load_dataset

TINY = os.environ.get("GPU_RESULTS_TINY", "") not in ("", "0")
ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


def machine_tag() -> str:
    """A short folder name for this machine: the GPU model (h100, h200) or cpu<cores>."""
    if torch.cuda.is_available():
        m = re.search(r"\b([A-Z]\d{2,4})\b", torch.cuda.get_device_name())
        return m.group(1).lower() if m else "gpu"
    return f"cpu{os.cpu_count()}"


def common(command: str, seeds: list[int]) -> dict:
    gpu = f" with one {device_name()}" if torch.cuda.is_available() else ""
    return {
        "command": command,
        "commit": commit(),
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core {platform.machine()} host{gpu}",
        "device": device_name(),
        "torch": torch.__version__,
        "seeds": seeds,
        **({"tiny": True} if TINY else {}),
    }


def write(out: Path, name: str, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{name}.json.tmp"
    tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(out / f"{name}.json")
    print(f"wrote {out / f'{name}.json'}")


def shrink(ds, n_test: int):
    """The first ``n_test`` test images (tiny runs: AlexNet at 224 px is slow on a CPU)."""
    return dataclasses.replace(ds, test_x=ds.test_x[:n_test], test_y=ds.test_y[:n_test])


def cifar_source(data_dir: str | None) -> tuple[list[str], str] | None:
    """Overrides that point the recipe at CIFAR-10, or None when it is not on disk.

    The official python batches are found by cnnlab's usual look-up; a class folder
    (``cifar10/train/<class>/``, ``cifar10/test/<class>/`` or ``val/``) is read as
    ``imagefolder`` at 32 px.
    """
    if dataset_status("cifar10", data_dir)[0] == "yes":
        return [], "cifar10 (official python batches)"
    for base in [data_dir, os.environ.get("CNNLAB_DATA")]:
        if not base:
            continue
        for folder in (Path(base) / "cifar10", Path(base) / "cifar-10", Path(base)):
            if (folder / "train").is_dir() and any((folder / s).is_dir() for s in ("val", "test")):
                return [
                    "data.name=imagefolder",
                    f"data.data_dir={folder}",
                    "data.size=32",
                    "data.mean=[0.4914,0.4822,0.4465]",
                    "data.std=[0.2470,0.2435,0.2616]",
                ], f"cifar10 (class folders in {folder})"
    return None


def run_recipe(recipe, dataset, overrides, runs_dir, command, out, name, label) -> None:
    t0 = time.perf_counter()
    res = cnnlab.fit(
        recipe=recipe,
        dataset=dataset,
        overrides=overrides,
        runs_dir=str(runs_dir),
        name=f"{name}-{int(time.time())}",
        quiet=True,
    )
    hist = res.history
    record = common(command, [0]) | {
        "kind": "accuracy",
        "recipe": recipe,
        "model": cnnlab.load_recipe(recipe).model.name,
        "dataset": label,
        "epochs": len(hist),
        "test_acc": [round(float(res.final["test_acc"]), 4)],
        "train_seconds": round(sum(float(m.get("seconds", 0)) for m in hist), 2),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "curve": [round(float(m["test_acc"]), 4) for m in hist],
    }
    write(out, name, record)


def bench(data_dir, out: Path, runs_dir: Path) -> None:
    raw = runs_dir / "bench.json"
    if TINY:
        args = [
            "--plain",
            "--quick",
            "--device",
            "cpu",
            "--alexnet-steps",
            "1",
            "--alexnet-batch",
            "2",
        ]
    else:
        args = ["--plain", "--device", "cuda", "--epochs", "5", "--loops", "resident,cnnlab"]
        args += ["--data-dir", data_dir] if data_dir else []
    cmd = [sys.executable, "-m", "cnnlab", "bench", *args, "--out", str(raw)]
    print("$ cnnlab bench " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stdout, stderr=sys.stderr)
    d = json.loads(raw.read_text())
    loops = {
        k: {
            "seconds_per_epoch": round(v["summary"]["median_s_per_epoch"], 4),
            "test_acc": v["summary"]["test_acc"],
            "seconds_to_90": v["summary"].get("time_to_90"),
        }
        for k, v in d["loops"].items()
    }
    shown = " ".join(a for a in args if a != str(data_dir))
    write(
        out,
        "bench",
        common(f"cnnlab bench {shown}", [0])
        | {
            "kind": "speed",
            "epochs": next(iter(d["loops"].values()))["summary"]["epochs"],
            "loops": loops,
        },
    )
    alex = d.get("alexnet") or {}
    models = alex.get("models") or {}
    ref = models.get("torchvision.models.alexnet")
    if not ref:
        print("AlexNet throughput: not in the bench output (torchvision missing?); skipped")
        return
    graphed = "graph_train_images_per_s" in next(
        (v for k, v in models.items() if k != "torchvision.models.alexnet"), {}
    )
    prefix = "graph_" if graphed else ""
    write(
        out,
        "alexnet",
        common(f"cnnlab bench {shown} (AlexNet part)", [0])
        | {
            "kind": "alexnet",
            "batch": alex.get("batch"),
            "reference": {"train": ref["train_images_per_s"], "infer": ref["infer_images_per_s"]},
            "models": {
                k: {
                    "train": v[f"{prefix}train_images_per_s"],
                    "infer": v[f"{prefix}infer_images_per_s"],
                    "how": "cnnlab's CUDA graphs" if graphed else "eager",
                }
                for k, v in models.items()
                if k != "torchvision.models.alexnet"
            },
        },
    )


def time_to_accuracy(data_dir, out: Path) -> None:
    """The shipped Fashion-MNIST recipe as a whole `cnnlab train` process on the GPU: its
    epoch time and the seconds from launch to each threshold (93 % included), written by
    `cnnlab bench` itself as ``bench-tta.json`` (kind speed-tta)."""
    if TINY:
        args = ["--quick", "--device", "cpu", "--loops", "cnnlab"]
    else:
        args = ["--device", "cuda", "--targets", "fashion-mnist", "--loops", "cnnlab"]
        args += ["--data-dir", data_dir] if data_dir else []
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cnnlab", "bench", *args, "--out", str(out / "bench-tta.json")]
    print("$ cnnlab bench " + " ".join(a for a in args if a != str(data_dir)), flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stdout, stderr=sys.stderr)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding fashion-mnist/, cifar10/")
    p.add_argument("--out", default=None, help="result folder (default: see the docstring)")
    p.add_argument("--parts", default="cifar,fmnist224,bench,tta", help="comma list of parts")
    a = p.parse_args(argv)
    day = datetime.date.today().isoformat()
    if a.out:
        out = Path(a.out)
    elif TINY:
        out = ROOT / "runs" / "gpu-results-tiny" / f"{day}-{machine_tag()}"
    else:
        out = ROOT / "benchmarks" / "results" / f"{day}-{machine_tag()}"
    runs_dir = Path(os.environ.get("GPU_RESULTS_RUNS", ROOT / "runs" / "gpu-results"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    parts = a.parts.split(",")
    tiny = ["train.epochs=1", "data.train_limit=64", "train.batch_size=32", "train.device=cpu"]

    if "cifar" in parts:
        src = cifar_source(a.data_dir)
        if src is None and not TINY:
            print(
                "alexnet-cifar10: CIFAR-10 not found (no cifar10/ under --data-dir or "
                "CNNLAB_DATA, in the python layout or as class folders); row skipped"
            )
        else:
            over, label = (
                src
                if src
                else (
                    ["data.name=synthetic", "data.size=32", "data.channels=3", "data.num_test=64"],
                    "synthetic (tiny run)",
                )
            )
            run_recipe(
                "alexnet-cifar10",
                None,
                over + (tiny if TINY else []),
                runs_dir,
                "cnnlab train --recipe alexnet-cifar10 --data-dir DATA",
                out,
                "alexnet-cifar10",
                "cifar10" if src else label,
            )
    if "fmnist224" in parts:
        present = dataset_status("fashion-mnist", a.data_dir)[0] == "yes"
        if not present and not TINY:
            print("alexnet-fashion-mnist-224: Fashion-MNIST not found; row skipped")
        else:
            ds = load_dataset(
                "fashion-mnist" if present else "mnist-sample", a.data_dir, download=False
            )
            if TINY:
                ds = shrink(ds, 32)
            over = tiny + ["train.eval_batch_size=32"] if TINY else []
            run_recipe(
                "alexnet-fashion-mnist-224",
                ds,
                over,
                runs_dir,
                "cnnlab train --recipe alexnet-fashion-mnist-224 --data-dir DATA",
                out,
                "alexnet-fashion-mnist-224",
                "fashion-mnist" if present else ds.name,
            )
    if "bench" in parts:
        bench(a.data_dir, out, runs_dir)
    if "tta" in parts:
        time_to_accuracy(a.data_dir, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
