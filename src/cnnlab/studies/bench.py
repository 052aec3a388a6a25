"""`cnnlab bench`: cnnlab's trainer against the plain-PyTorch loops of ``studies.references``.

The three Fashion-MNIST loops (``naive``, ``resident``, ``cnnlab``) each run in their own
worker process (so peak RSS is per loop) and are driven epoch by epoch in turn: naive
epoch 1, resident epoch 1, cnnlab epoch 1, naive epoch 2, ... — on a shared machine a
load spike then hits all of them alike. Only one worker computes at a time. Each epoch
reports wall seconds and the process's CPU seconds (a load-robust figure for 1-thread
runs), test accuracy, RSS and peak GPU memory.

Then, cnnlab alone: epoch time against batch size and against dataset size, and AlexNet
training/inference images/s on synthetic 224×224 batches (registry models against
``torchvision.models.alexnet`` under the same precision and memory format).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import platform
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import torch

from cnnlab.errors import CnnlabError
from cnnlab.studies import references

LOOPS = ("naive", "resident", "cnnlab")
BATCH_SIZES = (128, 256, 512, 1024, 2048, 4096)
FRACTIONS = (0.25, 0.5, 1.0)
ALEXNETS = ("alexnet", "alexnet-torchvision", "torchvision.models.alexnet")
THRESHOLDS = (0.90, 0.91)
TTA_FASHION = (0.90, 0.91, 0.92, 0.925)  # time-to-accuracy thresholds, Fashion-MNIST
TTA_MNIST_SAMPLE = (0.97, 0.98, 0.99)  # and the default run (MNIST sample, 1,000 test digits)
DEFAULT_RECIPE = "lenet5-fashion-mnist"  # a shipped recipe (cnnlab/recipes/)


# -- memory ------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def gpu_peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


# -- tiny data for --quick ---------------------------------------------------------------


def _write_idx(path: Path, arr: torch.Tensor) -> None:
    a = arr.contiguous().numpy()
    kind = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, kind, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + a.tobytes())


def write_idx(ds, d: Path) -> Path:
    """A loaded 1-channel dataset's four IDX files (MNIST's file format) in folder ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    _write_idx(d / "train-images-idx3-ubyte.gz", ds.train_x[:, 0])
    _write_idx(d / "train-labels-idx1-ubyte.gz", ds.train_y.to(torch.uint8))
    _write_idx(d / "t10k-images-idx3-ubyte.gz", ds.test_x[:, 0])
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", ds.test_y.to(torch.uint8))
    return d


def write_tiny_fashion(folder: Path, num_train: int = 1024, num_test: int = 256) -> Path:
    """A small learnable set in Fashion-MNIST's own file format (for --quick and tests)."""
    from cnnlab.data.datasets import load_dataset

    ds = load_dataset("synthetic", num_train=num_train, num_test=num_test, channels=1, size=28)
    return write_idx(ds, Path(folder) / "fashion-mnist")


def locate_fashion(data_dir) -> Path:
    from cnnlab.data.datasets import DATASETS, locate, missing_files_message

    spec = DATASETS.get("fashion-mnist")
    found = locate(spec, data_dir)
    if found is None:
        raise CnnlabError(missing_files_message(spec, data_dir))
    return found


# -- the cnnlab loop as a generator (same shape as the references) ---------------------


def cnnlab_config(spec: dict):
    from cnnlab.train.api import build_config

    recipe = spec.get("recipe")
    # the references train the article's plain LeNet-5 (tanh convs, no batch norm): the
    # recipe's training method is kept, its model is pinned to the same network
    over = ["model.name=lenet5", "model.activation=tanh", "model.batch_norm=none"]
    over += list(spec.get("overrides") or [])
    over += [
        "data.name=fashion-mnist",
        f"data.data_dir={spec['data_dir']}",
        "data.download=false",
        f"train.epochs={spec['epochs']}",
        f"train.device={spec['device']}",
        f"train.seed={spec.get('seed', 0)}",
    ]
    if spec.get("threads"):
        over.append(f"train.threads={spec['threads']}")
    return build_config(recipe=recipe, overrides=over)


def cnnlab_loop(spec: dict):
    from cnnlab.train.trainer import Trainer

    cfg = cnnlab_config(spec)
    tr = Trainer(cfg, quiet=True)
    tr.setup()
    ld = tr.task.train_loader
    x = ld.x
    raw = x.numel() * x.element_size()
    held = raw + ld.y.numel() * ld.y.element_size()
    info = {
        "describe": tr.describe(),
        "batch_size": cfg.train.batch_size,
        "lr": cfg.optim.lr,
        "optimizer": cfg.optim.name,
        "schedule": cfg.sched.name,
        "augment": ",".join(tr.task.augment) or "none",
        "resident_bytes": held,
        "raw_uint8_bytes": int(x.shape[0]) * int(x[0].numel()),
    }
    yield info
    for epoch in range(1, cfg.train.epochs + 1):
        c0 = time.process_time()
        m = tr.train_epoch(epoch)
        cpu = time.process_time() - c0
        te = time.perf_counter()
        _, acc, _ = tr.task.eval_loader(tr.task.test_loader)
        tr.schedule.epoch_end(acc)
        yield {
            "epoch": epoch,
            # one-time CUDA-graph capture (before epoch 1's clock starts), reported apart
            "capture_seconds": tr.task.capture_seconds if epoch == 1 else 0.0,
            "seconds": m["seconds"],
            "cpu_seconds": cpu,
            "images": round(m["images_per_s"] * m["seconds"]),
            "test_acc": acc,
            "eval_seconds": time.perf_counter() - te,
        }


# -- worker process ---------------------------------------------------------------------


def worker_main(kind: str, spec: dict) -> None:
    """Run one loop; ``next`` on stdin runs one epoch, its JSON goes to stdout."""
    device = torch.device(spec["device"] if spec["device"] != "auto" else _auto_device())
    from cnnlab.config import TrainConfig
    from cnnlab.runtime.device import choose_threads

    # the same rule as the trainer's, so every loop gets the same thread count
    n, why = choose_threads(TrainConfig(threads=int(spec.get("threads") or 0)))
    torch.set_num_threads(n)
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not break the protocol
    t0 = time.perf_counter()
    if kind == "cnnlab":
        gen = cnnlab_loop(spec)
        info = next(gen)
    else:
        tv = spec.get("tv_dataset", "FashionMNIST")
        root = references.torchvision_root(spec["idx_dir"], spec["tmp"], tv)
        stats = {k: spec[k] for k in ("mean", "std") if k in spec}
        gen = references.LOOPS[kind](
            root, device=device, seed=spec.get("seed", 0), dataset=tv, **stats
        )
        info = {"describe": f"{kind} reference on {device}"}
    info.update(
        threads=torch.get_num_threads(), threads_why=why, setup_seconds=time.perf_counter() - t0
    )
    print(json.dumps(info), file=out, flush=True)
    for line in sys.stdin:
        if line.strip() != "next":
            break
        m = next(gen)
        m.update(
            rss_mb=current_rss_mb(), peak_rss_mb=peak_rss_mb(), gpu_peak_mb=gpu_peak_mb(device)
        )
        print(json.dumps(m), file=out, flush=True)


def _auto_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class Worker:
    def __init__(self, kind: str, spec: dict, tmp: Path):
        self.kind = kind
        self.err = open(tmp / f"{kind}.stderr", "w+")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "cnnlab.studies.bench", "--worker", kind, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
        )

    def read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            self.p.wait()
            self.err.seek(0)
            tail = [ln for ln in self.err.read().strip().splitlines() if ln.strip()]
            raise CnnlabError(
                f"bench loop {self.kind!r} failed: " + (tail[-1] if tail else "no output")
            )
        return json.loads(line)

    def next(self) -> dict:
        self.p.stdin.write("next\n")
        self.p.stdin.flush()
        return self.read()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.p.stdin.close()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.err.close()


# -- summaries --------------------------------------------------------------------------


def time_to(epochs: list[dict], threshold: float) -> float | None:
    """Training seconds (evaluation excluded) until the first epoch at ≥ threshold."""
    total = 0.0
    for m in epochs:
        total += m["seconds"]
        if m["test_acc"] >= threshold:
            return total
    return None


def summarize(epochs: list[dict]) -> dict:
    med = statistics.median(m["seconds"] for m in epochs)
    cpu = statistics.median(m["cpu_seconds"] for m in epochs)
    imgs = epochs[-1]["images"]
    rss = [m["rss_mb"] for m in epochs]
    s = {
        "epochs": len(epochs),
        "median_s_per_epoch": med,
        "min_s_per_epoch": min(m["seconds"] for m in epochs),
        "median_cpu_s_per_epoch": cpu,
        "images_per_s": imgs / med if med > 0 else None,
        "test_acc": epochs[-1]["test_acc"],
        "peak_rss_mb": max(m["peak_rss_mb"] for m in epochs),
        "rss_growth_mb": rss[-1] - rss[min(1, len(rss) - 1)],  # after the warm-up epoch
        "gpu_peak_mb": epochs[-1]["gpu_peak_mb"],
        "one_time_seconds": sum(m.get("capture_seconds", 0.0) for m in epochs),
    }
    for t in THRESHOLDS:
        s[f"time_to_{round(t * 100)}"] = time_to(epochs, t)
    return s


def compare(spec: dict, loops=LOOPS, tmp: Path | None = None, log=print) -> dict:
    """Run the loops interleaved epoch by epoch; returns {loop: {info, epochs, summary}}."""
    with contextlib.ExitStack() as stack:
        if tmp is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cnnlab-bench-")))
        spec = dict(spec, tmp=str(tmp / "torchvision"))
        workers = {k: Worker(k, spec, tmp) for k in loops}
        try:
            res = {k: {"info": w.read(), "epochs": []} for k, w in workers.items()}
            for e in range(1, spec["epochs"] + 1):
                for k, w in workers.items():
                    m = w.next()
                    res[k]["epochs"].append(m)
                    log(
                        f"  epoch {e:>2} {k:<9} {m['seconds']:7.2f} s "
                        f"(cpu {m['cpu_seconds']:6.2f} s)  test acc {m['test_acc']:.4f}"
                    )
        finally:
            for w in workers.values():
                w.close()
    for r in res.values():
        r["summary"] = summarize(r["epochs"])
    return res


def ratios(res: dict) -> dict:
    """Speed-ups of cnnlab over each reference (reference time / cnnlab time)."""
    if "cnnlab" not in res:
        return {}
    c = res["cnnlab"]["summary"]
    out = {}
    for k in res:
        if k == "cnnlab":
            continue
        r = res[k]["summary"]
        out[k] = {
            "speedup_wall": r["median_s_per_epoch"] / c["median_s_per_epoch"],
            "speedup_cpu": r["median_cpu_s_per_epoch"] / max(c["median_cpu_s_per_epoch"], 1e-9),
            "cnnlab_over_ref_time": c["median_s_per_epoch"] / r["median_s_per_epoch"],
            "acc_diff": c["test_acc"] - r["test_acc"],
        }
    return out


# -- cnnlab alone: batch size and dataset size ------------------------------------------


def epoch_seconds(spec: dict, batch_size: int, limit: int | None) -> dict:
    from cnnlab.train.trainer import Trainer

    s = dict(spec, epochs=1)
    s["overrides"] = list(spec.get("overrides") or []) + [f"train.batch_size={batch_size}"]
    if limit:
        s["overrides"].append(f"data.train_limit={limit}")
    cfg = cnnlab_config(s)
    tr = Trainer(cfg, quiet=True)
    tr.setup()
    c0 = time.process_time()
    m = tr.train_epoch(1)
    return {
        "batch_size": batch_size,
        "images": len(tr.task.train_loader) * tr.task.train_loader.batch_size,
        "seconds": m["seconds"],
        "cpu_seconds": time.process_time() - c0,
        "images_per_s": m["images_per_s"],
    }


def scaling(spec: dict, batch_sizes, fractions, n_train: int, log=print) -> dict:
    by_bs, by_n = [], []
    for bs in batch_sizes:
        r = epoch_seconds(spec, bs, None)
        by_bs.append(r)
        log(
            f"  batch {bs:>5}: {r['seconds']:6.2f} s/epoch (cpu {r['cpu_seconds']:.2f} s, "
            f"{r['images_per_s']:,.0f} img/s)"
        )
    base_bs = cnnlab_config(spec).train.batch_size
    for f in fractions:
        lim = max(base_bs, int(n_train * f))
        r = epoch_seconds(spec, base_bs, lim if f < 1 else None)
        r["fraction"] = f
        by_n.append(r)
        log(
            f"  {f:>4.2f} of the data: {r['seconds']:6.2f} s/epoch (cpu {r['cpu_seconds']:.2f} s, "
            f"{r['images']:,} images)"
        )
    return {"by_batch_size": by_bs, "by_dataset_size": by_n}


# -- AlexNet throughput -----------------------------------------------------------------


def graphed(fn, dev: torch.device, warmup: int = 3):
    """``fn`` captured in one CUDA graph (after ``warmup`` eager calls on a side stream), as
    a replay function; on the CPU ``fn`` itself. ``fn`` must use static inputs only."""
    if dev.type != "cuda":
        return fn
    from cnnlab.runtime.graphs import capture_graph

    g, _ = capture_graph(fn, dev, warmup)
    return g.replay


def _images_per_s(fn, dev: torch.device, batch: int, steps: int, rounds: int) -> float:
    """Median over ``rounds`` timings of ``steps`` calls (after one warm-up call)."""
    fn()
    _sync(dev)
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(dev)
        rates.append(batch * steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def alexnet_throughput(
    device: str,
    batch: int,
    steps: int,
    size: int = 224,
    names=ALEXNETS,
    log=print,
    threads: int = 0,
    rounds: int = 3,
) -> dict:
    """Training and inference images/s on synthetic batches, same precision for all.

    Every model runs the same eager loop (architecture against architecture). On CUDA,
    cnnlab's models also run as cnnlab runs them (``graph_*`` keys): the training step
    (forward, backward, fused optimiser) replayed from one CUDA graph, as the trainer's
    whole-step graph does, and inference through :class:`GraphedForward`, as the trainer's
    evaluation and ``predict_logits`` do; torchvision's model stays in the eager loop."""
    import torchvision

    from cnnlab.config import TrainConfig
    from cnnlab.models import MODELS, create_model
    from cnnlab.runtime.device import make_runtime
    from cnnlab.runtime.graphs import GraphedForward

    rt = make_runtime(TrainConfig(device=device, threads=threads))
    dev = rt.device
    out = {
        "device": rt.describe(),
        "batch": batch,
        "size": size,
        "steps": steps,
        "rounds": rounds,
        "models": {},
    }
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    if rt.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for name in names:
        reference = name.startswith("torchvision.")
        if reference:
            model = torchvision.models.alexnet(num_classes=1000)
        elif name not in MODELS.names():
            out["models"][name] = {"skipped": f"model {name!r} is not registered in this build"}
            log(f"  {name}: skipped (not registered)")
            continue
        else:
            try:
                model = create_model(name, in_channels=3, num_classes=1000, input_size=size)
            except (CnnlabError, ValueError, RuntimeError) as e:
                out["models"][name] = {"skipped": f"cannot build at {size} px: {e}"}
                log(f"  {name}: skipped ({e})")
                continue
        model.to(dev)
        if rt.channels_last:
            model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, **_opt_kw(dev))

        def train_step(model=model, opt=opt):
            # grads set to None inside a capture: backward allocates them in the graph's
            # pool, so each replay overwrites them rather than adding to them
            opt.zero_grad(set_to_none=True)
            with rt.autocast():
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()

        def infer_step(model=model):
            with torch.inference_mode(), rt.autocast():
                return model(x)

        r = {}
        variants = [("", train_step, infer_step)]
        if dev.type == "cuda" and not reference:
            variants.append(("graph_", None, None))
        for prefix, train_fn, infer_fn in variants:
            if prefix:  # captured after the eager timings: warm kernels, same weights
                model.train(True)
                train_fn = graphed(train_step, dev)
                model.train(False)
                # what cnnlab's evaluation runs; the input sits in the graph's buffer, as
                # the eager loops reuse their x (no per-call copy on either side)
                fwd = GraphedForward(model, rt.autocast)
                infer_fn = partial(fwd, fwd.buffer(x))
            for label, fn in (("train", train_fn), ("infer", infer_fn)):
                model.train(label == "train")
                r[f"{prefix}{label}_images_per_s"] = _images_per_s(fn, dev, batch, steps, rounds)
        out["models"][name] = r
        log(
            f"  {name}: train {r['train_images_per_s']:,.1f} img/s, "
            f"infer {r['infer_images_per_s']:,.1f} img/s"
            + (
                f"; CUDA graph: train {r['graph_train_images_per_s']:,.1f}, "
                f"infer {r['graph_infer_images_per_s']:,.1f}"
                if "graph_train_images_per_s" in r
                else ""
            )
        )
        del model, opt
    tv = out["models"].get("torchvision.models.alexnet", {})
    for name, r in out["models"].items():
        if "train_images_per_s" in r and tv and name != "torchvision.models.alexnet":
            for prefix in ("", "graph_"):
                if f"{prefix}train_images_per_s" in r:
                    for label in ("train", "infer"):
                        r[f"{prefix}{label}_vs_torchvision"] = (
                            r[f"{prefix}{label}_images_per_s"] / tv[f"{label}_images_per_s"]
                        )
    return out


def _opt_kw(dev: torch.device) -> dict:
    return {"fused": True} if dev.type == "cuda" else {"foreach": True}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


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


def watch_train(
    argv: list[str], runs_dir: Path, log: Path, poll: float = 0.05, on_epoch=None
) -> dict:
    """Run ``cnnlab train ARGV`` as its own process; each line of its metrics.jsonl is
    stamped with the wall seconds since the launch at which it appeared (start-up, data
    loading, training and each epoch's evaluation all count)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cnnlab", "train", *argv, "--runs-dir", str(runs_dir)]
    epochs: list[dict] = []
    metrics, offset = None, 0
    t0 = time.perf_counter()
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while True:
            done = p.poll() is not None
            if metrics is None:
                metrics = next(iter(runs_dir.glob("*/metrics.jsonl")), None)
            if metrics is not None:
                with open(metrics, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                end = chunk.rfind(b"\n") + 1  # whole lines only
                offset += end
                now = time.perf_counter() - t0
                for line in chunk[:end].decode().splitlines():
                    if line.strip():
                        epochs.append(dict(json.loads(line), wall=now))
                        if on_epoch is not None:
                            on_epoch("cnnlab", epochs[-1])
            if done:
                break
            time.sleep(poll)
    wall = time.perf_counter() - t0
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    # the run's first line: "run DIR  |  model ... — cpu (N threads: why), precision"
    describe = next((ln.split("|", 1)[1].strip() for ln in lines if ln.startswith("run ")), "")
    if p.returncode != 0:
        tail = lines
        raise CnnlabError(
            f"cnnlab train {' '.join(argv)} failed (exit {p.returncode}): "
            + (tail[-1] if tail else "no output")
        )
    return {"epochs": epochs, "wall_seconds": wall, "describe": describe}


def watch_reference(kind: str, spec: dict, tmp: Path, stop_at: float, max_epochs: int,
                    on_epoch=None) -> dict:  # fmt: skip
    """A reference loop in its own process, epoch by epoch, until its test accuracy
    reaches ``stop_at`` or ``max_epochs`` ran; stamped like :func:`watch_train`."""
    t0 = time.perf_counter()
    w = Worker(kind, spec, tmp)
    epochs: list[dict] = []
    try:
        info = w.read()
        for _ in range(max_epochs):
            m = w.next()
            epochs.append(dict(m, wall=time.perf_counter() - t0))
            if on_epoch is not None:
                on_epoch(kind, epochs[-1])
            if m["test_acc"] >= stop_at:
                break
    finally:
        w.close()
    return {"info": info, "epochs": epochs, "wall_seconds": time.perf_counter() - t0}


def epoch_line(loop: str, m: dict) -> str:
    return (
        f"    {loop:<9} epoch {m['epoch']:>2}: {m['seconds']:6.2f} s, test acc "
        f"{m['test_acc']:.4f} ({m['wall']:.0f} s since launch)"
    )


class RunProgress:
    """The bench's progress: one bar over every epoch it may run (a reference loop that
    reaches its accuracy early skips the rest of its share), with an ETA, on a terminal;
    plain lines otherwise."""

    def __init__(self, total: int, log=print):
        self.log = log
        self.bar = None
        if log is print and sys.stdout.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self.task = self.bar.add_task("bench epochs", total=total)
            self.bar.start()
            self.log = self.bar.console.print

    def epoch(self, loop: str, m: dict) -> None:
        self.log(epoch_line(loop, m))
        if self.bar is not None:
            self.bar.update(self.task, advance=1)

    def skip(self, n: int) -> None:
        if self.bar is not None and n > 0:
            self.bar.update(self.task, advance=n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def planned_epochs(target: Target, epochs: int | None) -> int:
    """The epochs ``cnnlab train`` will run for ``target`` (its recipe's, or --epochs)."""
    if epochs:
        return int(epochs)
    from cnnlab.train.api import build_config

    return int(build_config(recipe=target.recipe).train.epochs)


def wall_to(epochs: list[dict], threshold: float) -> float | None:
    """Wall seconds from the launch until the first epoch at ≥ threshold was evaluated."""
    return next((m["wall"] for m in epochs if m["test_acc"] >= threshold), None)


def tta_summary(epochs: list[dict], thresholds) -> dict:
    """One run's figures: median training seconds per epoch, accuracy, and for each
    threshold the wall seconds (start-up included) and the training seconds to reach it."""
    return {
        "epochs": len(epochs),
        "median_s_per_epoch": statistics.median(m["seconds"] for m in epochs) if epochs else None,
        "final_acc": epochs[-1]["test_acc"] if epochs else None,
        "to": {
            f"{t:g}": {"wall": wall_to(epochs, t), "train": time_to(epochs, t)} for t in thresholds
        },
    }


def aggregate(runs: list[dict], thresholds) -> dict:
    """Over seeds: the median epoch time, mean accuracies, and per threshold the median
    wall/training seconds of the runs that reached it and how many did."""
    sums = [r["summary"] for r in runs]
    out = {
        "seeds": len(runs),
        "median_s_per_epoch": statistics.median(s["median_s_per_epoch"] for s in sums),
        "final_acc": statistics.mean(s["final_acc"] for s in sums),
        "epochs": max(s["epochs"] for s in sums),
        "to": {},
    }
    for t in thresholds:
        k = f"{t:g}"
        got = [s["to"][k] for s in sums if s["to"][k]["wall"] is not None]
        out["to"][k] = {
            "reached": len(got),
            "wall": statistics.median(g["wall"] for g in got) if got else None,
            "train": statistics.median(g["train"] for g in got) if got else None,
        }
    return out


def prepare_target(target: Target, data_dir, tmp: Path, quick: bool) -> tuple[Path, dict]:
    """(IDX folder the reference loops read, the pixel statistics they normalise with)."""
    if target.dataset == "mnist-sample":
        from cnnlab.data.datasets import load_dataset

        ds = load_dataset("mnist-sample")
        d = write_idx(ds, tmp / "mnist-sample-idx")
        return d, {"mean": float(ds.mean[0]), "std": float(ds.std[0])}
    d = Path(data_dir) / "fashion-mnist" if quick else locate_fashion(data_dir)
    return d, {"mean": references.MEAN, "std": references.STD}


def load_avg() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


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
    dev = device if device != "auto" else _auto_device()
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
    progress = RunProgress(total, log)
    log = progress.log
    with contextlib.ExitStack() as stack:
        stack.callback(progress.close)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cnnlab-bench-")))
        if quick:
            write_tiny_fashion(tmp / "data", 512, 256)
            data_dir = tmp / "data"
            overrides = [*overrides, "train.batch_size=128"]
        for key in targets:
            target = TARGETS[key]
            idx_dir, stats = prepare_target(target, data_dir, tmp, quick)
            entry = {"recipe": target.recipe, "dataset": target.dataset,
                     "thresholds": list(target.thresholds), "loops": {}}  # fmt: skip
            log(f"{target.name}: time to {', '.join(f'{t:.1%}' for t in target.thresholds)}")
            for seed in seeds:
                for loop in loops:
                    load0 = load_avg()
                    if loop == "cnnlab":
                        argv = train_argv(
                            target, seed, epochs, device, threads, overrides, data_dir
                        )
                        shown = "cnnlab train " + " ".join(
                            a if a != str(data_dir) else "DATA" for a in argv
                        )
                        log(f"  $ {shown}")
                        run_dir = tmp / "runs" / f"{key}-{seed}"
                        log_file = tmp / f"{key}-{seed}.log"
                        r = watch_train(argv, run_dir, log_file, on_epoch=progress.epoch)
                        r["command"] = shown
                        progress.skip(planned_epochs(target, epochs) - len(r["epochs"]))
                    else:
                        spec = {"idx_dir": str(idx_dir), "tmp": str(tmp / f"tv-{key}"),
                                "tv_dataset": target.tv_dataset, "device": device,
                                "threads": threads, "seed": seed, **stats}  # fmt: skip
                        top = max(target.thresholds)
                        r = watch_reference(
                            loop, spec, tmp, top, ref_epochs, on_epoch=progress.epoch
                        )
                        progress.skip(ref_epochs - len(r["epochs"]))
                        r["command"] = f"{loop} reference loop (cnnlab.studies.references)"
                    r.update(seed=seed, load_before=load0, load_after=load_avg())
                    r["summary"] = tta_summary(r["epochs"], target.thresholds)
                    entry["loops"].setdefault(loop, {"runs": []})["runs"].append(r)
            for v in entry["loops"].values():
                v["summary"] = aggregate(v["runs"], target.thresholds)
            entry["epoch_ratios"] = epoch_ratios(entry["loops"])
            result["targets"][key] = entry
    result["machine_info"]["load_avg_end"] = load_avg()
    result["wall_seconds"] = time.perf_counter() - t_start
    return result


def epoch_ratios(loops: dict) -> dict:
    """Each reference loop's median training seconds per epoch over cnnlab's."""
    if "cnnlab" not in loops:
        return {}
    ours = loops["cnnlab"]["summary"]["median_s_per_epoch"]
    return {
        k: v["summary"]["median_s_per_epoch"] / ours
        for k, v in loops.items()
        if k != "cnnlab" and ours
    }


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


# -- the whole benchmark ----------------------------------------------------------------


def commit() -> str:
    """The git commit of the source tree cnnlab runs from, else the package version
    (:func:`dirty` says whether that tree has uncommitted changes)."""
    sha = _git("rev-parse", "HEAD")
    if not sha:
        from cnnlab._version import __version__

        return f"cnnlab {__version__}"
    return sha


def dirty() -> bool | None:
    """Whether the source tree has uncommitted changes to tracked files (None: no git)."""
    if not _git("rev-parse", "HEAD"):
        return None
    return bool(_git("status", "--porcelain", "--untracked-files=no"))


def _git(*args: str) -> str:
    here = Path(__file__).resolve().parent
    try:
        return subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def result_record(kind: str, command: str, seeds, device: str = "cpu", **fields) -> dict:
    """The head every result file under benchmarks/results/ carries (kind, command, commit,
    date, machine, device, torch, seeds), then ``fields``."""
    return {
        "kind": kind,
        "command": command,
        "commit": commit(),
        "dirty": dirty(),
        "date": datetime.now().strftime("%Y-%m-%d"),
        "machine": machine_name(),
        "device": device,
        "torch": torch.__version__.split("+")[0],
        "seeds": list(seeds),
        **fields,
    }


def machine_name() -> str:
    """``<n>-core <CPU model>, <RAM> GiB`` (Linux), else the platform string."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        ram = f", {kb / 2**20:.0f} GiB"
    from cnnlab.runtime.device import available_cores

    return f"{available_cores()}-core {model}{ram}"


def machine() -> dict:
    d = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_avg": load_avg(),
    }
    if torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name(0)
    return d


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
        dev = device if device != "auto" else _auto_device()
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
