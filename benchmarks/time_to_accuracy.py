"""Time to 90 % / 91 % Fashion-MNIST test accuracy for cnnlab's trainer, per batch size.

The issue asks for the default recipe's batch size and LR to be picked for the best
time-to-accuracy, not for a pretty epoch time. This trains LeNet-5 with the recipe's
method at several (batch size, LR) points and prints, for each: median seconds per epoch,
test accuracy per epoch, and the training seconds (evaluation and the one-time CUDA-graph
capture excluded; the capture is printed apart) until 90 % and 91 %.

    python benchmarks/time_to_accuracy.py --data-dir "$CNNLAB_DATA" --device cuda \\
        --epochs 15 --points 128:3e-3,512:6e-3,1024:8e-3 --out tta.json

``--model plain`` pins the article's plain LeNet-5 (tanh, no batch norm), as ``cnnlab bench``
does; ``--model recipe`` keeps the recipe's (ReLU + batch norm).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PLAIN = ["model.name=lenet5", "model.activation=tanh", "model.batch_norm=none"]


def memory(dev) -> dict:
    """RSS now (MB) and, on CUDA, allocated and peak-allocated device memory (MB)."""
    import torch

    from cnnlab.studies.records import current_rss_mb, gpu_peak_mb

    out = {"rss_mb": current_rss_mb()}
    if dev.type == "cuda":
        out["gpu_mb"] = torch.cuda.memory_allocated(dev) / 2**20
        out["gpu_peak_mb"] = gpu_peak_mb(dev)
    return out


def run_point(args, bs: int, lr: float, variant: list[str] = ()) -> dict:
    from cnnlab.train.api import build_config
    from cnnlab.train.trainer import Trainer

    over = (
        (PLAIN if args.model == "plain" else [])
        + [
            "data.name=fashion-mnist",
            f"data.data_dir={args.data_dir}",
            "data.download=false",
            f"train.epochs={args.epochs}",
            f"train.device={args.device}",
            f"train.batch_size={bs}",
            f"optim.lr={lr}",
            "train.diagnostics=false",
            "train.report=false",
        ]
        + list(args.set)
        + list(variant)
    )
    cfg = build_config(None, args.recipe, over)
    t0 = time.perf_counter()
    tr = Trainer(cfg, quiet=True)
    tr.setup()
    setup = time.perf_counter() - t0
    rows = []
    for e in range(1, args.epochs + 1):
        m = tr.train_epoch(e)
        te = time.perf_counter()
        _, acc, _ = tr.task.eval_loader(tr.task.test_loader)
        tr.schedule.epoch_end(acc)
        rows.append({"epoch": e, "seconds": m["seconds"], "test_acc": acc,
                     "eval_seconds": time.perf_counter() - te, **memory(tr.rt.device)})  # fmt: skip
    out = {
        "variant": " ".join(variant),
        "batch_size": bs,
        "lr": lr,
        "describe": tr.describe(),
        "setup_seconds": setup,
        "capture_seconds": tr.task.capture_seconds,
        "median_s_per_epoch": statistics.median(r["seconds"] for r in rows),
        "final_acc": rows[-1]["test_acc"],
        # growth after the first epoch (allocator warm-up) to the last
        "rss_growth_mb": rows[-1]["rss_mb"] - rows[0]["rss_mb"],
        "gpu_growth_mb": (rows[-1].get("gpu_mb", 0) - rows[0].get("gpu_mb", 0)),
        "epochs": rows,
    }
    for t in (0.90, 0.91, 0.92):
        total, hit = 0.0, None
        for r in rows:
            total += r["seconds"]
            if r["test_acc"] >= t:
                hit = {"seconds": total, "epoch": r["epoch"]}
                break
        out[f"time_to_{round(t * 100)}"] = hit
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "lenet5-fashion-mnist.yaml"))
    ap.add_argument("--model", choices=("plain", "recipe"), default="recipe")
    ap.add_argument("--points", default="128:3e-3,256:4e-3,512:6e-3,1024:8e-3",
                    help="comma list of batch:lr")  # fmt: skip
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--variants",
        default="",
        help="';'-separated sets of space-separated KEY=VALUE overrides, each run at every "
        "point (e.g. 'train.precision=bf16;train.precision=fp32 train.channels_last=false')",
    )
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    res = []
    variants = [v.split() for v in args.variants.split(";")] if args.variants else [[]]
    for variant, pt in ((v, p) for v in variants for p in args.points.split(",")):
        bs, lr = pt.split(":")
        r = run_point(args, int(bs), float(lr), variant)
        res.append(r)
        if variant:
            print(f"[{r['variant']}] ", end="")

        def fmt(h):
            return f"{h['seconds']:.2f} s (ep {h['epoch']})" if h else "no"

        print(
            f"batch {r['batch_size']:>5} lr {r['lr']:.0e}: {r['median_s_per_epoch']:.3f} s/epoch, "
            f"capture {r['capture_seconds']:.2f} s, acc@{args.epochs} {r['final_acc']:.4f}, "
            f"t→90 {fmt(r['time_to_90'])}, t→91 {fmt(r['time_to_91'])}, "
            f"t→92 {fmt(r['time_to_92'])}; RSS {r['rss_growth_mb']:+.1f} MB, "
            f"GPU {r['gpu_growth_mb']:+.1f} MB after epoch 1",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "points": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
