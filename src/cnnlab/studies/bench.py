"""`cnnlab bench`: what users run, timed against the plain-PyTorch loops of
``studies.references``.

By default (:func:`run_tta`), time to accuracy: each target's ``cnnlab train`` as a whole
process (a shipped recipe, or the defaults), and the reference loops on the same data
until they reach the target's top accuracy; one run at a time, the load average recorded
around each.

With ``--plain`` (:func:`run_bench`), the three Fashion-MNIST loops (``naive``,
``resident``, ``cnnlab``) each run in their own worker process (so peak RSS is per loop)
and are driven epoch by epoch in turn: naive epoch 1, resident epoch 1, cnnlab epoch 1,
naive epoch 2, ... — on a shared machine a load spike then hits all of them alike. Only
one worker computes at a time. Each epoch reports wall seconds and the process's CPU
seconds (a load-robust figure for 1-thread runs), test accuracy, RSS and peak GPU memory.
Then, cnnlab alone: epoch time against batch size and against dataset size, and AlexNet
training/inference images/s (``studies.throughput``).

The pieces: ``studies.loops`` runs the loops in their processes, ``studies.timing`` turns
their epochs into figures, ``studies.records`` writes the result file's head; this module
plans the runs and makes the tables.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cnnlab.progress import Bar, progress
from cnnlab.studies import references
from cnnlab.studies.loops import (
    LOOPS,
    auto_device,
    compare,
    locate_fashion,
    watch_reference,
    watch_train,
    worker_main,
    write_idx,
    write_tiny_fashion,
)
from cnnlab.studies.records import load_avg, machine, result_record
from cnnlab.studies.throughput import alexnet_throughput, scaling
from cnnlab.studies.timing import aggregate, epoch_ratios, ratios, tta_summary

BATCH_SIZES = (128, 256, 512, 1024, 2048, 4096)
FRACTIONS = (0.25, 0.5, 1.0)
TTA_FASHION = (0.90, 0.91, 0.92, 0.925, 0.93)  # time-to-accuracy thresholds, Fashion-MNIST
TTA_MNIST_SAMPLE = (0.97, 0.98, 0.99)  # and the default run (MNIST sample, 1,000 test digits)
DEFAULT_RECIPE = "lenet5-fashion-mnist"  # a shipped recipe (cnnlab/recipes/)


# -- time to accuracy: the shipped recipes as users run them ----------------------------


@dataclass(frozen=True)
class Target:
    """One thing users run: a shipped recipe (or ``cnnlab train``'s defaults) on a dataset,
    the accuracies to time, and torchvision's class for the reference loops' copy of it."""

    name: str
    dataset: str
    recipe: str | None  # None: `cnnlab train` with no recipe (the defaults)
    thresholds: tuple[float, ...]
    tv_dataset: str


TARGETS = {
    "fashion-mnist": Target(
        "lenet5-fashion-mnist", "fashion-mnist", DEFAULT_RECIPE, TTA_FASHION, "FashionMNIST"
    ),
    "fashion-mnist-fast": Target(
        "lenet5-fashion-mnist-fast",
        "fashion-mnist",
        "lenet5-fashion-mnist-fast",
        TTA_FASHION,
        "FashionMNIST",
    ),
    "mnist-sample": Target(
        "defaults (mnist-sample)", "mnist-sample", None, TTA_MNIST_SAMPLE, "MNIST"
    ),
}
REFERENCE_LOOPS = ("naive", "resident")


def train_argv(target: Target, seed: int, epochs: int | None, device: str, threads: int,
               overrides=(), data_dir=None) -> list[str]:  # fmt: skip
    """``cnnlab train`` arguments for ``target`` (without the run directory)."""
    argv = ["--recipe", target.recipe] if target.recipe else []
    if target.dataset != "mnist-sample":
        argv += ["--dataset", target.dataset] if not target.recipe else []
        argv += ["--data-dir", str(data_dir)] if data_dir else []
    argv += ["--seed", str(seed)]
    argv += ["--epochs", str(epochs)] if epochs else []
    argv += ["--device", device] if device != "auto" else []
    argv += ["--set", f"train.threads={threads}"] if threads else []
    for o in overrides or ():
        argv += ["--set", str(o)]
    return argv


def epoch_line(loop: str, m: dict) -> str:
    return (
        f"    {loop:<9} epoch {m['epoch']:>2}: {m['seconds']:6.2f} s, test acc "
        f"{m['test_acc']:.4f} ({m['wall']:.0f} s since launch)"
    )


def planned_epochs(target: Target, epochs: int | None) -> int:
    """The epochs ``cnnlab train`` will run for ``target`` (its recipe's, or --epochs)."""
    if epochs:
        return int(epochs)
    from cnnlab.train.api import build_config

    return int(build_config(recipe=target.recipe).train.epochs)


def prepare_target(target: Target, data_dir, tmp: Path, quick: bool) -> tuple[Path, dict]:
    """(IDX folder the reference loops read, the pixel statistics they normalise with)."""
    if target.dataset == "mnist-sample":
        from cnnlab.data.datasets import load_dataset

        ds = load_dataset("mnist-sample")
        d = write_idx(ds, tmp / "mnist-sample-idx")
        return d, {"mean": float(ds.mean[0]), "std": float(ds.std[0])}
    d = Path(data_dir) / "fashion-mnist" if quick else locate_fashion(data_dir)
    return d, {"mean": references.MEAN, "std": references.STD}


def run_tta(
    data_dir=None,
    targets=("fashion-mnist", "mnist-sample"),
    seeds=(0,),
    epochs: int | None = None,
    ref_epochs: int = 20,
    loops=("cnnlab", *REFERENCE_LOOPS),
    device: str = "auto",
    threads: int = 0,
    overrides=(),
    quick: bool = False,
    log=print,
) -> dict:
    """Time to accuracy of what users run: each target's ``cnnlab train`` as a whole
    process, and the reference loops on the same data until they reach the target's top
    accuracy (or ``ref_epochs``). Runs go one at a time (cnnlab, naive, resident per
    seed), the load average is recorded around each."""
    t_start = time.perf_counter()
    info = machine()
    dev = device if device != "auto" else auto_device()
    result = result_record(
        "speed-tta",
        "",  # filled in by the caller (the command line that ran this)
        seeds,
        "cpu" if dev == "cpu" else info.get("gpu", dev),
        tiny=quick,  # a smoke run on synthetic data: never rendered as a result
        started=datetime.now().isoformat(timespec="seconds"),
        threads=threads or None,
        machine_info=info,
        targets={},
    )
    if quick:
        epochs, ref_epochs = epochs or 1, min(ref_epochs, 1)
    refs = sum(1 for loop in loops if loop != "cnnlab")
    total = sum(
        len(seeds) * (planned_epochs(TARGETS[k], epochs) * ("cnnlab" in loops) + refs * ref_epochs)
        for k in targets
    )
    # one bar over every epoch the bench may run (a reference loop that reaches its
    # accuracy early skips the rest of its share)
    with (
        progress("bench epochs", total, enabled=log is print) as bar,
        tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmpd,
    ):
        tmp = Path(tmpd)
        if quick:
            write_tiny_fashion(tmp / "data", 512, 256)
            data_dir = tmp / "data"
            overrides = [*overrides, "train.batch_size=128"]
        bench = TimeToAccuracy(data_dir, tmp, quick, epochs, ref_epochs, device, threads,
                               tuple(overrides), bar, log)  # fmt: skip
        for key in targets:
            result["targets"][key] = bench.target(key, seeds, loops)
    result["machine_info"]["load_avg_end"] = load_avg()
    result["wall_seconds"] = time.perf_counter() - t_start
    return result


@dataclass
class TimeToAccuracy:
    """One time-to-accuracy bench under way (:func:`run_tta`'s settings, its scratch
    folder, bar and log): times a target's runs one at a time."""

    data_dir: str | Path | None
    tmp: Path
    quick: bool
    epochs: int | None
    ref_epochs: int
    device: str
    threads: int
    overrides: tuple[str, ...]
    bar: Bar
    log: object = print

    def target(self, key: str, seeds, loops) -> dict:
        """Every loop on ``TARGETS[key]``, per seed; the loops' runs, their aggregates over
        seeds and the epoch-time ratios."""
        target = TARGETS[key]
        idx_dir, stats = prepare_target(target, self.data_dir, self.tmp, self.quick)
        entry = {"recipe": target.recipe, "dataset": target.dataset,
                 "thresholds": list(target.thresholds), "loops": {}}  # fmt: skip
        self.log(f"{target.name}: time to {', '.join(f'{t:.1%}' for t in target.thresholds)}")
        for seed in seeds:
            for loop in loops:
                load0 = load_avg()
                if loop == "cnnlab":
                    r = self.train(key, target, seed)
                else:
                    r = self.reference(loop, key, target, seed, idx_dir, stats)
                r.update(seed=seed, load_before=load0, load_after=load_avg())
                r["summary"] = tta_summary(r["epochs"], target.thresholds)
                entry["loops"].setdefault(loop, {"runs": []})["runs"].append(r)
        for v in entry["loops"].values():
            v["summary"] = aggregate(v["runs"], target.thresholds)
        entry["epoch_ratios"] = epoch_ratios(entry["loops"])
        return entry

    def train(self, key: str, target: Target, seed: int) -> dict:
        """``cnnlab train`` for ``target`` as its own process (:func:`loops.watch_train`)."""
        argv = train_argv(target, seed, self.epochs, self.device, self.threads, self.overrides,
                          self.data_dir)  # fmt: skip
        shown = "cnnlab train " + " ".join(a if a != str(self.data_dir) else "DATA" for a in argv)
        self.log(f"  $ {shown}")
        run_dir = self.tmp / "runs" / f"{key}-{seed}"
        log_file = self.tmp / f"{key}-{seed}.log"
        r = watch_train(argv, run_dir, log_file, on_epoch=self.epoch)
        r["command"] = shown
        self.skip(planned_epochs(target, self.epochs) - len(r["epochs"]))
        return r

    def reference(self, loop: str, key: str, target: Target, seed: int, idx_dir: Path,
                  stats: dict) -> dict:  # fmt: skip
        """A reference loop until the target's top accuracy or ``ref_epochs``."""
        spec = {"idx_dir": str(idx_dir), "tmp": str(self.tmp / f"tv-{key}"),
                "tv_dataset": target.tv_dataset, "device": self.device,
                "threads": self.threads, "seed": seed, **stats}  # fmt: skip
        top = max(target.thresholds)
        r = watch_reference(loop, spec, self.tmp, top, self.ref_epochs, on_epoch=self.epoch)
        self.skip(self.ref_epochs - len(r["epochs"]))
        r["command"] = f"{loop} reference loop (cnnlab.studies.references)"
        return r

    def epoch(self, loop: str, m: dict) -> None:
        self.log(epoch_line(loop, m))
        self.bar.advance()

    def skip(self, n: int) -> None:
        if n > 0:
            self.bar.advance(n)


def tta_rows(entry: dict) -> tuple[list[list], list[str]]:
    """The time-to-accuracy table of one target: a row per loop; a cell is the wall
    seconds from launch (start-up included) with the training seconds in brackets."""
    ths = entry["thresholds"]
    header = ["loop", "s/epoch", *[f"→ {100 * t:g} %" for t in ths], "final test acc", "epochs"]
    rows = []
    for loop, v in entry["loops"].items():
        s = v["summary"]
        cells = []
        for t in ths:
            c = s["to"][f"{t:g}"]
            if c["wall"] is None:
                cells.append(f"not in {s['epochs']} ep")
                continue
            cell = f"{c['wall']:.0f} s ({c['train']:.0f} s)"
            if c["reached"] < s["seeds"]:
                cell += f" {c['reached']}/{s['seeds']} seeds"
            cells.append(cell)
        rows.append(
            [loop, fmt(s["median_s_per_epoch"]), *cells, fmt(s["final_acc"], "{:.4f}"), s["epochs"]]
        )
    return rows, header


# -- the plain bench: the loops interleaved, then cnnlab alone ----------------------------


def run_bench(
    data_dir=None,
    epochs: int = 15,
    device: str = "auto",
    threads: int = 0,
    overrides=None,
    recipe=None,
    quick: bool = False,
    batch_sizes=BATCH_SIZES,
    fractions=FRACTIONS,
    alexnet: bool = True,
    alexnet_batch: int | None = None,
    alexnet_steps: int | None = None,
    loops=LOOPS,
    log=print,
) -> dict:
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmpd:
        tmp = Path(tmpd)
        if quick:
            idx_dir = write_tiny_fashion(tmp / "data", 512, 256)
            data_dir = str(tmp / "data")
            epochs = min(epochs, 2)
            batch_sizes, fractions = (64, 128), (0.5, 1.0)
            # 512 tiny images: the recipe's batch would be one step per epoch
            if not any(str(o).startswith("train.batch_size=") for o in overrides or []):
                overrides = list(overrides or []) + ["train.batch_size=128"]
        else:
            idx_dir = locate_fashion(data_dir)
            data_dir = str(idx_dir.parent) if data_dir is None else data_dir
        recipe = recipe or DEFAULT_RECIPE
        spec = {
            "data_dir": str(data_dir),
            "idx_dir": str(idx_dir),
            "epochs": int(epochs),
            "device": device,
            "threads": int(threads),
            "recipe": str(recipe) if recipe else None,
            "overrides": list(overrides or []),
            "seed": 0,
        }
        result = {
            "kind": "quick" if quick else "full",
            "started": datetime.now().isoformat(timespec="seconds"),
            "machine": machine(),
            "spec": {k: v for k, v in spec.items() if k != "idx_dir"},
        }
        log(f"Fashion-MNIST, {epochs} epochs, loops interleaved epoch by epoch:")
        res = compare(spec, loops, tmp, log=log)
        result["loops"] = res
        result["ratios"] = ratios(res)
        if "cnnlab" in res:
            info = res["cnnlab"]["info"]
            result["resident_memory_ratio"] = info["resident_bytes"] / info["raw_uint8_bytes"]
        n_train = res.get("cnnlab", next(iter(res.values())))["epochs"][0]["images"]
        if batch_sizes or fractions:
            log("cnnlab epoch time against batch size and dataset size:")
            result["scaling"] = scaling(spec, batch_sizes, fractions, n_train, log=log)
    if alexnet:
        dev = device if device != "auto" else auto_device()
        cuda = dev.startswith("cuda")
        batch = alexnet_batch or (2 if quick else 256 if cuda else 16)
        steps = alexnet_steps or (1 if quick else 30 if cuda else 3)
        size = 64 if quick else 224  # quick: a smoke test of the code path, not a figure
        log(f"AlexNet on synthetic {size}×{size} batches of {batch}:")
        result["alexnet"] = alexnet_throughput(dev, batch, steps, size, log=log, threads=threads)
    result["machine"]["load_avg_end"] = load_avg()
    result["wall_seconds"] = time.perf_counter() - t_start
    return result


def fmt(v, spec="{:.2f}", none="—") -> str:
    return none if v is None else spec.format(v)


def summary_rows(result: dict) -> tuple[list[list], list[str]]:
    header = [
        "loop",
        "s/ep",
        "cpu s/ep",
        "img/s",
        f"acc@{result['spec']['epochs']}",
        "t→90%",
        "t→91%",
        "RSS MB",
        "GPU MB",
        "× wall",
        "× cpu",
    ]
    rows = []
    for k, r in result["loops"].items():
        s = r["summary"]
        sp = result["ratios"].get(k)
        rows.append(
            [
                k,
                fmt(s["median_s_per_epoch"]),
                fmt(s["median_cpu_s_per_epoch"]),
                fmt(s["images_per_s"], "{:,.0f}"),
                fmt(s["test_acc"], "{:.4f}"),
                fmt(s["time_to_90"], "{:.0f} s", "no"),
                fmt(s["time_to_91"], "{:.0f} s", "no"),
                fmt(s["peak_rss_mb"], "{:.0f}"),
                fmt(s["gpu_peak_mb"], "{:.0f}"),
                f"{sp['speedup_wall']:.2f}×" if sp else "",
                f"{sp['speedup_cpu']:.2f}×" if sp else "",
            ]
        )
    return rows, header


def save(result: dict, out: str | os.PathLike) -> Path:
    from cnnlab.runs.files import atomic_write_text

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1))
    return out


if __name__ == "__main__":  # worker entry: python -m cnnlab.studies.bench --worker KIND SPEC
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], json.loads(sys.argv[3]))
    else:
        print(
            "usage: python -m cnnlab.studies.bench --worker KIND SPEC_JSON (use `cnnlab bench`)",
            file=sys.stderr,
        )
        sys.exit(2)
