"""The timed loops, each in its own process: the plain-PyTorch references
(``studies.references``) and cnnlab's trainer as a worker driven epoch by epoch over a
pipe (``python -m cnnlab.studies.bench --worker KIND SPEC``), ``cnnlab train`` watched
as users run it, and the tiny Fashion-MNIST-format data of ``--quick``."""

from __future__ import annotations

import contextlib
import gzip
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.errors import CnnlabError
from cnnlab.progress import progress
from cnnlab.studies import references
from cnnlab.studies.records import current_rss_mb, gpu_peak_mb, peak_rss_mb
from cnnlab.studies.timing import summarize

LOOPS = ("naive", "resident", "cnnlab")


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
    device = torch.device(spec["device"] if spec["device"] != "auto" else auto_device())
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


def auto_device() -> str:
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


def compare(spec: dict, loops=LOOPS, tmp: Path | None = None, log=print) -> dict:
    """Run the loops interleaved epoch by epoch; returns {loop: {info, epochs, summary}}."""
    with contextlib.ExitStack() as stack:
        if tmp is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cnnlab-bench-")))
        spec = dict(spec, tmp=str(tmp / "torchvision"))
        workers = {k: Worker(k, spec, tmp) for k in loops}
        total = spec["epochs"] * len(workers)
        bar = stack.enter_context(progress("bench epochs", total, enabled=log is print))
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
                    bar.advance()
        finally:
            for w in workers.values():
                w.close()
    for r in res.values():
        r["summary"] = summarize(r["epochs"])
    return res


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
