"""Data-parallel training with PyTorch DDP under ``torchrun``.

- ``cnnlab train --nproc N ...`` runs
  ``python -m torch.distributed.run --standalone --nproc-per-node N -m cnnlab train ...``
  (one machine, N processes: one per GPU, or N CPU processes with gloo).
- Clusters: run ``torchrun --nnodes M --nproc-per-node G --rdzv-backend c10d
  --rdzv-endpoint HOST:PORT -m cnnlab train ...`` on every node; the run directory must
  be on a shared file system for ``--resume``.

The trainer reads the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)
through :func:`from_env`. Conventions: ``train.batch_size`` is the GLOBAL batch; each
rank takes ``batch_size / world`` images of every global batch (the same global
permutation on every rank, drawn from the same seed), so a DDP step averages the same
gradient as a 1-process step. Metrics are summed across ranks; only rank 0 writes files.
Backend: nccl on CUDA, gloo on CPU.

Nothing outlives its launcher: torchrun started by ``--nproc`` and each rank under any
torchrun ask Linux to send them SIGTERM when their parent dies (``PR_SET_PDEATHSIG``), so a
``kill -9`` of ``cnnlab train --nproc N`` (or of a node's torchrun) stops the ranks the
same way Ctrl-C does: they finish the step, rank 0 writes the checkpoint. A rank that
loses its peers (another node died) stops with one ``cnnlab: error:`` line saying how to
resume, not a traceback.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data.distributed import DistributedSampler

from cnnlab.errors import CnnlabError, ConfigError


@dataclass
class Dist:
    enabled: bool = False
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    def finish(self) -> None:
        """An orderly end of a run: wait for every rank, then leave the process group.
        Without it a rank that exits first can close a connection another rank's gloo
        thread still reads, which aborts that rank (SIGABRT) after a good run."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In-place sum/max across ranks (a no-op on one process)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return model
        dev = next(model.parameters()).device
        ids = [dev.index] if dev.type == "cuda" else None
        # grads as views of the all-reduce buckets: no copy, and no stride-mismatch warning
        # for (C, 1, k, k) conv weights
        return DDP(model, device_ids=ids, gradient_as_bucket_view=True)

    def sampler(self, dataset, shuffle: bool, seed: int, drop_last: bool = False):
        """For streaming (DataLoader) loaders: a DistributedSampler giving this rank its
        1/world of each epoch (pass it as ``sampler=`` instead of ``shuffle=``, with the
        per-rank batch ``batch_size // world``; the trainer calls ``set_epoch`` on a
        loader that has it). None on one process."""
        if not self.enabled:
            return None
        return DistributedSampler(
            dataset,
            num_replicas=self.world,
            rank=self.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )

    def describe(self) -> str:
        return f"DDP {self.world} ranks ({self.backend})" if self.enabled else ""


def from_env(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when launched by torchrun; else a 1-process Dist.

    Returns the device this rank uses (``cuda:LOCAL_RANK`` on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Dist(), device
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {rank} wants cuda:{local} but this node has "
                f"{torch.cuda.device_count()} GPUs; lower --nproc-per-node"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    die_with_parent()  # torchrun killed outright: stop as on SIGTERM, do not linger
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=10))
    sys.excepthook = _lost_peer_hook(sys.excepthook, rank)
    return Dist(True, rank, world, local, backend), device


PR_SET_PDEATHSIG = 1  # linux/prctl.h
try:  # looked up here, not in a forked child (preexec_fn) where dlopen may not be safe
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _PRCTL = None


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent exits (``prctl``); if the
    parent (``parent``, else the current one) is already gone, send it now. False where
    prctl is not available (not Linux)."""
    parent = os.getppid() if parent is None else parent
    if _PRCTL is None or _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
    return True


def lost_peer(e: BaseException) -> bool:
    """Whether ``e`` is a collective failing because another rank went away."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and any(w in msg for w in PEER_GONE)


# what gloo/NCCL/the store say when the other end of a connection went away
PEER_GONE = ("connection closed by peer", "connection reset by peer", "broken pipe",
             "connection refused", "communicator was aborted")  # fmt: skip


def _lost_peer_hook(previous, rank: int):
    def hook(kind, e, tb):
        if not lost_peer(e):
            return previous(kind, e, tb)
        first = (str(e).strip().splitlines() or [kind.__name__])[0].split(". ")[0][:160]
        print(
            f"cnnlab: error: rank {rank} lost contact with the other ranks (a node or process "
            f"stopped: {first}); the run directory keeps its last checkpoint: start every "
            "node again with the same command plus --resume RUN_DIR",
            file=sys.stderr,
            flush=True,
        )

    return hook


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc); empty where that is not available."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def launch(nproc: int, train_argv: list[str]) -> int:
    """Run ``cnnlab train`` on ``nproc`` local ranks under torchrun; return its exit code.

    torchrun runs in its own session, and Ctrl-C / SIGTERM sent to this process are
    forwarded to the ranks themselves: each finishes its step, rank 0 writes the
    checkpoint, they exit 0 and torchrun with them. (Signalled directly, torchrun would
    tear the workers down and exit 1 with a traceback of its own.)"""
    if nproc < 1:
        raise ConfigError(f"--nproc must be ≥ 1, got {nproc}")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "cnnlab",
        "train",
        *train_argv,
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    me = os.getpid()
    try:
        # torchrun dies with this launcher (even on kill -9): SIGTERM, its ranks stop cleanly
        proc = subprocess.Popen(
            cmd, start_new_session=True, preexec_fn=lambda: die_with_parent(parent=me)
        )
    except OSError as e:
        raise CnnlabError(f"cannot start torchrun ({e.strerror})") from None

    def forward(signum, frame):
        targets = _children(proc.pid) or [proc.pid]  # no ranks yet: torchrun itself
        for pid in targets:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
