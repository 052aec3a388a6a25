"""The training loop. The model and config say *what*; the trainer says *how*.

Small datasets live on the device (ResidentLoader); per-step metrics accumulate in
device tensors and are read once per epoch, so the step loop never syncs with the host.
Every epoch appends to ``metrics.jsonl`` and writes ``checkpoints/last`` (and ``best``)
atomically, with optimiser, schedule and RNG state for an exact resume; the replaced
``last`` is kept as ``prev``. With ``train.checkpoint_every_steps`` a checkpoint is also
written mid-epoch, holding the data-order position (the generator state the epoch's
permutation was drawn from, the step, the epoch's metric accumulators), so a resumed run
replays the same batches and ends bit-identical on CPU in deterministic mode.

SIGINT/SIGTERM finish the current step, write a checkpoint and return (CLI exit 0).
A non-finite loss stops the run naming epoch and step (policy ``stop``: no per-step host
sync, the check runs where the metrics are read anyway) or skips that step and lowers the
LR (policy ``skip``: one host sync per step to decide before the optimiser moves).
Under torchrun the model is wrapped in DDP, the data sharded, metrics summed across
ranks, and only rank 0 writes.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from cnnlab._version import __version__
from cnnlab.config import Config
from cnnlab.data.augment import parse_augment
from cnnlab.data.datasets import Dataset, load_dataset
from cnnlab.data.loader import ResidentLoader
from cnnlab.errors import CheckpointError, CnnlabError, ConfigError
from cnnlab.models import count_params, create_model
from cnnlab.runs.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from cnnlab.runs.files import atomic_write_text, fault, io_error
from cnnlab.runs.layout import read_metrics
from cnnlab.runtime import distributed
from cnnlab.runtime.device import make_runtime, pool_before_activation, settle_precision
from cnnlab.runtime.graphs import GraphedForward
from cnnlab.train import whole_step
from cnnlab.train.adversarial import make_adversary
from cnnlab.train.callbacks import (
    Callback,
    EarlyStopping,
    NaNGuard,
    NonFiniteLoss,
    Progress,
    ReportOnEnd,
)
from cnnlab.train.diagnostics import GradientFlow
from cnnlab.train.losses import build_loss
from cnnlab.train.optim import Schedule, build_optimizer
from cnnlab.train.validate import validate


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    model: torch.nn.Module | None = None
    interrupted: bool = False  # stopped by SIGINT/SIGTERM after writing a checkpoint

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    @property
    def best(self) -> dict:
        key = "val_acc" if self.history and "val_acc" in self.history[0] else "test_acc"
        return max(self.history, key=lambda m: m[key]) if self.history else {}


def config_callbacks(cfg) -> list[Callback]:
    """The callbacks the config asks for: early stopping, gradient-flow diagnostics, report."""
    cbs: list[Callback] = []
    t = cfg.train
    if t.early_stop > 0:
        cbs.append(EarlyStopping("val_acc", patience=t.early_stop))
    if t.diagnostics:
        cbs.append(GradientFlow())
    if t.report:
        cbs.append(ReportOnEnd())
    return cbs


def split_train_val(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (train, val) index sets carved from the training set, fixed by ``seed``."""
    g = torch.Generator().manual_seed(10_000 + seed)
    perm = torch.randperm(n, generator=g)
    nv = int(round(n * fraction))
    return perm[nv:].sort().values, perm[:nv].sort().values


def _n_images(loader) -> int:
    return len(loader.x) if hasattr(loader, "x") else loader.num_samples


class Trainer:
    def __init__(
        self,
        cfg: Config,
        dataset: Dataset | None = None,
        callbacks: list[Callback] | None = None,
        quiet: bool = False,
        resume: str | os.PathLike | None = None,
    ):
        self.cfg = validate(cfg)
        self.dataset = dataset
        self.callbacks = [
            Progress(quiet=quiet),
            NaNGuard(),
            *config_callbacks(self.cfg),
            *(callbacks or []),
        ]
        self.resume_from = Path(resume) if resume else None
        self.should_stop = False
        self.stop_reason = ""
        self.interrupted = False
        self._signal: int | None = None
        self._pending: dict | None = None  # a mid-epoch position restored by _resume
        self.whole: whole_step.WholeStep | None = None  # the whole-step graph, when it runs
        self.capture_seconds = 0.0  # its one-time capture (not in any epoch's time)
        self._forwards: dict[int, GraphedForward] = {}  # evaluation's, per model

    # -- set-up -------------------------------------------------------------------------

    def _run_dir(self) -> Path:
        if self.resume_from is not None:
            return self.resume_from
        r = self.cfg.run
        name = (
            r.name or f"{self.cfg.model.name}-{self.cfg.data.name}-{datetime.now():%Y%m%d-%H%M%S}"
        )
        d = Path(r.runs_dir) / name
        if d.exists() and any(d.iterdir()):
            if r.name:
                raise CnnlabError(
                    f"run {d} already exists; continue it with --resume {d} "
                    "or choose another --name"
                )
            i = 2
            while (Path(r.runs_dir) / f"{name}-{i}").exists():
                i += 1
            d = Path(r.runs_dir) / f"{name}-{i}"
        return d

    def setup(self) -> None:
        cfg = self.cfg
        t = cfg.train
        torch.manual_seed(t.seed)
        self.rt = make_runtime(t)
        self.dist, self.rt.device = distributed.from_env(self.rt.device)
        if not self.dist.main:
            for cb in self.callbacks:
                if isinstance(cb, Progress):
                    cb.quiet = True
        if self.dataset is None:
            self.dataset = load_dataset(
                cfg.data.name, cfg.data.data_dir, cfg.data.download, **cfg.data.args
            )
        if getattr(self.dataset, "streaming", False):  # files streamed by workers (imagefolder)
            self.dataset.attach_loaders(self)
        else:
            self._resident_loaders()
        self._setup_model()

    def _resident_loaders(self) -> None:
        cfg, t, dev = self.cfg, self.cfg.train, self.rt.device
        ds = self.dataset
        xtr, ytr = ds.train_x, ds.train_y
        if cfg.data.train_limit:
            xtr, ytr = xtr[: cfg.data.train_limit], ytr[: cfg.data.train_limit]
        self.val = None
        if cfg.data.val_fraction > 0:
            tr_idx, va_idx = split_train_val(len(xtr), cfg.data.val_fraction, t.seed)
            xva, yva = xtr[va_idx], ytr[va_idx]
            xtr, ytr = xtr[tr_idx], ytr[tr_idx]
        xtr, ytr = self.select_train(xtr, ytr)
        if len(xtr) < 1:
            raise ConfigError("no training images left after train_limit/val_fraction")
        self.generator = torch.Generator(device=dev).manual_seed(t.seed)
        self.augment = parse_augment(cfg.data.augment, ds.augment)
        common = dict(
            mean=ds.mean,
            std=ds.std,
            resize=cfg.data.resize,
            grayscale=cfg.data.grayscale,
            device=dev,
            channels_last=self.rt.channels_last,
        )
        bs = min(t.batch_size, len(xtr))
        self.train_loader = ResidentLoader(
            xtr,
            ytr,
            bs,
            shuffle=True,
            drop_last=True,
            augment=self.augment,
            pad=cfg.data.pad,
            generator=self.generator,
            **common,
        )
        if self.dist.enabled:
            try:
                self.train_loader.shard(self.dist.rank, self.dist.world)
            except ValueError:
                raise ConfigError(
                    f"train.batch_size {bs} (the global batch) must be divisible by the "
                    f"{self.dist.world} ranks"
                ) from None
        r, w = self.dist.rank, self.dist.world  # evaluation: each rank scores a 1/w share
        self.test_loader = ResidentLoader(
            ds.test_x[r::w], ds.test_y[r::w], t.eval_batch_size, **common
        )
        if cfg.data.val_fraction > 0:
            self.val = ResidentLoader(xva[r::w], yva[r::w], t.eval_batch_size, **common)

    def _setup_model(self) -> None:
        cfg, t, dev = self.cfg, self.cfg.train, self.rt.device
        ds = self.dataset
        in_ch = 1 if cfg.data.grayscale else ds.channels
        size = cfg.data.resize or ds.size
        self.model = create_model(
            cfg.model.name,
            in_channels=in_ch,
            num_classes=ds.num_classes,
            input_size=size,
            **cfg.model.args,
        )
        self.model_args = self.model.cnnlab_args
        pool_before_activation(self.model)  # exact; the activation then sees 4× fewer values
        settle_precision(self.rt, t, self.model)
        self.model.to(dev)
        if self.rt.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, cfg.optim, dev)
        self.steps_per_epoch = self.epoch_steps()
        self.schedule = Schedule(self.optimizer, cfg.sched, t.epochs, self.steps_per_epoch)
        self.loss_fn = build_loss(t.loss, ds.num_classes, t.label_smoothing)
        self.base_lrs = list(self.schedule.base)
        self.lr_scale, self.skipped_steps, self._skip_now = 1.0, 0, False
        if t.nan_policy == "skip":
            self._guard_optimizer()
        raw = self.model
        # DDP: the step runs the wrapped model (gradient all-reduce in backward) while
        # self.model stays the plain module for checkpoints and evaluation.
        self.model = self.dist.wrap(raw)
        try:
            self.step_fn = self._make_step()
        finally:
            self.model = raw
        self.run_dir = Path(self.dist.broadcast(str(self._run_dir())))
        self.start_epoch = 1
        self.best_metric = -math.inf
        self.history: list[dict] = []
        # per-step losses of the current epoch on the device: written without a sync, read
        # only to name the first bad step once a non-finite epoch sum has been seen
        self._losses = torch.zeros(max(1, self.steps_per_epoch), device=dev)
        if self.resume_from is not None:
            self._resume()

    def select_train(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook: the images to train on, after train_limit and the validation split
        (the semi-supervised trainer keeps the labelled ones here)."""
        return x, y

    def epoch_steps(self) -> int:
        return len(self.train_loader)

    def _make_step(self):
        model, opt, loss_fn, rt = self.model, self.optimizer, self.loss_fn, self.rt
        clip = self.cfg.train.grad_clip
        # robust training (train.adversarial): the batch is replaced by its attack
        adversary = make_adversary(
            self.cfg.train,
            self.train_loader.mean,
            self.train_loader.std,
            self.generator,
            rt.autocast,
        )

        # the whole step in one CUDA graph where it can be (train/whole_step.py); on CPU
        # cuda_graph=step runs the same device-state step eagerly
        mode = self.cfg.train.cuda_graph.lower()
        if (rt.cuda_graph and mode in ("auto", "true", "step")) or mode == "step":
            why = whole_step.unsupported_reason(self)
            if why is None:
                self.whole = whole_step.WholeStep(self)
            elif mode == "step":
                self._warn(f"warning: whole-step CUDA graph off ({why})")

        fwd = model
        # graphs are captured for plain inputs of one module: not for attacked batches
        # (input gradients) nor through DDP's hooks
        if rt.cuda_graph and self.whole is None and adversary is None and not self.dist.enabled:
            fwd = self._graph_model()

        def step(x, y):
            if adversary is not None:
                x = adversary(model, x, y)
            with rt.autocast():
                out = fwd(x)
                loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            return loss.detach(), (out.detach().argmax(1) == y).sum()

        if self.rt.compile:
            # on CUDA "reduce-overhead" replays CUDA graphs; on CPU plain inductor
            mode = "reduce-overhead" if rt.device.type == "cuda" else None
            return torch.compile(step, mode=mode)
        return step

    def _graph_model(self):
        """The model's forward and backward captured once in CUDA graphs and replayed
        every step (training batches all have one shape: drop_last). The loss, the
        optimiser (fused, no host sync) and the schedule stay eager, so the learning rate
        can change per step. Evaluation runs in eval mode, which takes the ordinary
        forward. Falls back to eager, with a warning, when capture fails."""
        model, rt = self.model, self.rt
        tl = self.train_loader
        x = tl.prepare(tl.x[: tl.batch_size], train=False)  # a sample; no RNG consumed
        try:
            with rt.autocast():
                return torch.cuda.make_graphed_callables(
                    model, (x.detach().requires_grad_(False),), num_warmup_iters=3
                )
        except Exception as e:  # capture is an optimisation, never a reason to fail
            print(f"warning: CUDA graph capture failed ({e}); training eagerly")
            rt.cuda_graph = False
            model.zero_grad(set_to_none=True)
            return model

    def describe(self) -> str:
        ds = self.dataset
        par = f", {self.dist.describe()}" if self.dist.enabled else ""
        return (
            f"{self.cfg.model.name} ({count_params(self.model):,} params) on {ds.name} "
            f"[{_n_images(self.train_loader):,} train / {_n_images(self.test_loader):,} test] — "
            f"{self.rt.describe()}{par}"
        ) + (" (whole step)" if self.rt.cuda_graph and self.whole is not None else "")

    # -- NaN/inf --------------------------------------------------------------------------

    def _guard_optimizer(self) -> None:
        """nan_policy=skip: before the optimiser moves, check the gradients (one host sync
        per step); a non-finite one skips the update and scales the LR down."""
        opt, step = self.optimizer, self.optimizer.step

        def guarded_step(*args, **kwargs):
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
                opt.zero_grad(set_to_none=True)
                self._skip_now = True
                return None
            return step(*args, **kwargs)

        opt.step = guarded_step

    def _apply_lr_scale(self) -> None:
        self.schedule.base = [b * self.lr_scale for b in self.base_lrs]
        self.schedule._apply()

    def _check_finite(self, epoch: int, step: int, loss_sum: torch.Tensor) -> None:
        """nan_policy=stop: called wherever the accumulators are read (checkpoints, epoch
        end) — a non-finite step poisons the running sum, so this costs no extra sync."""
        if self.cfg.train.nan_policy != "stop" or bool(torch.isfinite(loss_sum)):
            return
        seen = self._losses[:step]
        bad = (~torch.isfinite(seen)).nonzero()
        first = int(bad[0]) + 1 if len(bad) else step
        value = float(seen[first - 1]) if len(bad) else float(loss_sum)
        last = self.run_dir / "checkpoints" / "last.safetensors"
        kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint yet"
        raise NonFiniteLoss(
            f"training loss became {value} at epoch {epoch}, step {first} "
            f"(global step {(epoch - 1) * self.steps_per_epoch + first}); stopped, {kept}. "
            f"Resume with a lower LR (cnnlab train --resume {self.run_dir} --lr ...), "
            "or set train.nan_policy=skip or train.grad_clip=1.0"
        )

    # -- checkpoints ---------------------------------------------------------------------

    def meta(self, epoch: int, metrics: dict) -> dict:
        ds = self.dataset
        c = 1 if self.cfg.data.grayscale else ds.channels
        mean, std = (
            self.train_loader.mean.flatten().tolist(),
            self.train_loader.std.flatten().tolist(),
        )
        _, plain_rng = rng_state()
        return {
            "cnnlab_version": __version__,
            "model": self.model_args,
            "classes": ds.classes,
            "dataset": ds.name,
            "input": {
                "channels": c,
                "size": self.cfg.data.resize or ds.size,
                "mean": mean,
                "std": std,
                "grayscale": self.cfg.data.grayscale,
            },
            "epoch": epoch,
            "step": self.schedule.step_num,
            "metrics": metrics,
            "best_metric": self.best_metric,
            "config": self.cfg.to_dict(),
            "schedule": self.schedule.state_dict(),
            "lr_scale": self.lr_scale,
            # an AMP GradScaler, when the step uses one (fp16): its scale and growth tracker
            "scaler": self.scaler.state_dict() if getattr(self, "scaler", None) else None,
            "skipped_steps": self.skipped_steps,
            "rng": plain_rng,
        }

    def save(self, name: str, epoch: int, metrics: dict, position: dict | None = None) -> Path:
        """Write ``checkpoints/<name>`` (rank 0 only). ``position`` marks a mid-epoch
        checkpoint: ``epoch`` is then the last completed epoch."""
        path = self.run_dir / "checkpoints" / f"{name}.safetensors"
        if not self.dist.main:
            return path
        tensors, _ = rng_state(self.generator)
        meta = self.meta(epoch, metrics)
        if position is not None:
            tensors["rng.epoch_start"] = position.pop("epoch_rng")
            tensors["acc.loss_sum"] = position.pop("loss_sum")
            tensors["acc.correct"] = position.pop("correct")
            meta["position"] = position
        try:
            return save_checkpoint(
                path,
                self.model,
                meta,
                self.optimizer,
                tensors,
                keep_prev=path.with_name("prev.safetensors") if name == "last" else None,
            )
        except CheckpointError as e:
            raise CheckpointError(
                f"{e}; fix that and continue with: cnnlab train --resume {self.run_dir}"
            ) from None

    def _load_for_resume(self):
        ck_dir = self.run_dir / "checkpoints"
        last, prev = ck_dir / "last.safetensors", ck_dir / "prev.safetensors"
        # temp files of a write that was killed: ours (.<name>.XXXX.tmp) and the one
        # safetensors' save_file writes through (.tmpXXXXXX, Rust's tempfile crate)
        for junk in [*ck_dir.glob(".*.tmp"), *ck_dir.glob(".tmp*")]:
            junk.unlink(missing_ok=True)
        (ck_dir / ".prev.safetensors.link").unlink(missing_ok=True)
        try:
            return load_checkpoint(last)
        except CheckpointError as first:
            if prev.is_file():
                self._warn(f"warning: {first}; resuming from the previous checkpoint {prev}")
                return load_checkpoint(prev)
            if not last.exists() and not read_metrics(self.run_dir):
                self._warn(
                    f"warning: {self.run_dir} has no checkpoint yet (stopped before its first "
                    "one); starting it from the beginning"
                )
                return None
            raise

    def _warn(self, text: str) -> None:
        if self.dist.main:
            print(text, file=sys.stderr, flush=True)

    def _resume(self) -> None:
        ck = self._load_for_resume()
        if ck is None:
            self.history = []
            if self.dist.main and (self.run_dir / "metrics.jsonl").exists():
                self._rewrite_metrics()
            return
        self.model.load_state_dict(ck.model_state)
        st = ck.optimizer_state()
        if st is not None:
            self.optimizer.load_state_dict(st)
        self.schedule.load_state_dict(ck.meta["schedule"])
        if ck.meta.get("scaler") and getattr(self, "scaler", None) is not None:
            self.scaler.load_state_dict(ck.meta["scaler"])
        self.lr_scale = float(ck.meta.get("lr_scale", 1.0))
        self.skipped_steps = int(ck.meta.get("skipped_steps", 0))
        self._apply_lr_scale()
        restore_rng(ck.tensors, ck.meta.get("rng", {}), self.generator)
        self.start_epoch = int(ck.meta["epoch"]) + 1
        pos = ck.meta.get("position")
        if pos is not None:
            self.start_epoch = int(pos["epoch"])
            keep = self.dist.main  # the saved sums are global: one rank carries them on
            self._pending = dict(
                pos,
                epoch_rng=ck.tensors["rng.epoch_start"],
                loss_sum=ck.tensors["acc.loss_sum"] * keep,
                correct=ck.tensors["acc.correct"] * keep,
            )
        self.best_metric = float(ck.meta.get("best_metric", -math.inf))
        # Lines written after the checkpoint (a crash between the two) are dropped.
        self.history = [
            m for m in read_metrics(self.run_dir) if m.get("epoch", 0) < self.start_epoch
        ]
        if self.dist.main:
            self._rewrite_metrics()

    def _rewrite_metrics(self) -> None:
        atomic_write_text(
            self.run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.history)
        )

    def _append_metrics(self, m: dict) -> None:
        """One fsynced line; a failed write is cut back so no torn line is left."""
        p = self.run_dir / "metrics.jsonl"
        try:
            with open(p, "ab", buffering=0) as f:
                size = f.seek(0, os.SEEK_END)
                try:
                    f.write((json.dumps(m) + "\n").encode())
                    os.fsync(f.fileno())
                except OSError:
                    os.ftruncate(f.fileno(), size)
                    raise
        except OSError as e:
            raise CheckpointError(
                io_error(p, e, "append to")
                + f"; fix that and continue with: cnnlab train --resume {self.run_dir}"
            ) from None

    # -- signals -------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None:  # a second Ctrl-C: stop now (the files stay consistent)
            raise KeyboardInterrupt
        self._signal = signum
        self._warn(
            f"received {signal.Signals(signum).name}: finishing the current step and writing "
            "a checkpoint (send it again to stop at once)"
        )

    def _stop_requested(self) -> bool:
        """Whether any rank got SIGINT/SIGTERM (all ranks must stop at the same step)."""
        if not self.dist.enabled:
            return self._signal is not None
        flag = torch.tensor([float(self._signal is not None)], device=self.rt.device)
        return bool(self.dist.all_reduce(flag, "max").item())

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, self._on_signal)
        return old

    # -- the loop ------------------------------------------------------------------------

    @torch.inference_mode()
    def _evaluate(self, loader: ResidentLoader) -> tuple[float, float]:
        self.model.eval()
        loss_sum = torch.zeros((), device=self.rt.device)
        correct = torch.zeros((), device=self.rt.device, dtype=torch.long)
        n = 0
        fwd = self._forward_for(self.model)
        for x, y in loader:
            out = fwd(x)
            loss_sum += torch.nn.functional.cross_entropy(out.float(), y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            n += len(y)
        self.model.train()
        return loss_sum.item() / max(n, 1), correct.item() / max(n, 1)

    def _forward_for(self, model: torch.nn.Module) -> GraphedForward:
        """Evaluation's forward (no grad): replayed from CUDA graphs where the trainer
        graphs its steps, eager elsewhere. One per model: semi-supervised runs swap an EMA
        teacher in."""
        if id(model) not in self._forwards:
            graphs = self.rt.cuda_graph or self.whole is not None
            self._forwards[id(model)] = GraphedForward(model, self.rt.autocast, enabled=graphs)
        return self._forwards[id(model)]

    def _epoch_state(self, epoch: int) -> dict:
        """Where epoch ``epoch`` starts: fresh, or the position a mid-epoch checkpoint holds."""
        dev = self.rt.device
        p, self._pending = self._pending, None
        if hasattr(self.train_loader, "set_epoch"):  # a streaming loader's DistributedSampler
            self.train_loader.set_epoch(epoch)
        if p is not None and int(p["epoch"]) == epoch:
            now = self.generator.get_state()
            self.generator.set_state(p["epoch_rng"])
            ld = self.train_loader  # the same permutation as before the stop:
            order = ld.order() if hasattr(ld, "order") else None
            self.generator.set_state(now)  # augmentation continues where it was
            return dict(
                epoch_rng=p["epoch_rng"],
                order=order,
                step=int(p["step"]),
                loss_sum=p["loss_sum"].to(dev),
                correct=p["correct"].to(dev),
                n=int(p["n"]) if self.dist.main else 0,
                seconds=float(p["seconds"]),
                lr=float(p["lr"]),
            )
        epoch_rng = self.generator.get_state()
        ld = self.train_loader
        return dict(
            epoch_rng=epoch_rng,
            order=ld.order() if hasattr(ld, "order") else None,
            step=0,
            loss_sum=torch.zeros((), device=dev),
            correct=torch.zeros((), device=dev, dtype=torch.long),
            n=0,
            seconds=0.0,
            lr=self.schedule.lr,  # the epoch's LR as logged: the one it started with
        )

    def _sums(self, loss_sum, correct, n) -> torch.Tensor:
        """(loss sum, correct, n) summed over ranks, float64 on the host."""
        dev = loss_sum.device
        sums = torch.stack(
            [loss_sum.double(), correct.double(), torch.tensor(n, device=dev).double()]
        )
        return self.dist.all_reduce(sums).cpu()

    def _position(self, epoch: int, step: int, st: dict, loss_sum, correct, n, seconds) -> dict:
        pos = {"epoch": epoch, "step": step, "seconds": seconds, "lr": st["lr"]}
        pos["epoch_rng"] = st["epoch_rng"]
        if not self.dist.enabled:
            return dict(pos, n=n, loss_sum=loss_sum, correct=correct)
        sums = self._sums(loss_sum, correct, n)  # global sums: one rank carries them on
        return dict(pos, n=int(sums[2]), loss_sum=sums[0].float(), correct=sums[1].long())

    def train_epoch(self, epoch: int) -> dict | None:
        """One epoch (or its rest, after a mid-epoch resume). Returns the epoch's metrics,
        or None when a signal stopped it (a checkpoint of the position is then written)."""
        if self.whole is not None:
            return self._train_epoch_whole(epoch)
        self.model.train()
        st = self._epoch_state(epoch)
        loss_sum, correct, n = st["loss_sum"], st["correct"], st["n"]
        skip_policy = self.cfg.train.nan_policy == "skip"
        step = st["step"]
        if step == 0:
            self._losses.zero_()
        t0 = time.perf_counter() - st["seconds"]
        ld = self.train_loader
        if hasattr(ld, "iterate"):
            batches = ld.iterate(step, st["order"])
        else:  # a streaming loader: replay its epoch and skip the batches already done
            batches = itertools.islice(iter(ld), step, None)
        for i, (x, y) in enumerate(batches, step + 1):
            loss, corr = self.step_fn(x, y)
            self.schedule.step()
            step = i
            if skip_policy and self._skip_now:
                self._skip_now = False
                self.skipped_steps += 1
                self.lr_scale *= self.cfg.train.nan_lr_factor
                self._apply_lr_scale()
                self._warn(
                    f"warning: non-finite loss at epoch {epoch}, step {i}: step skipped, "
                    f"LR scaled to {self.lr_scale:g}× ({self.schedule.lr:.2e})"
                )
            else:
                self._losses[i - 1] = loss.detach()
                loss_sum += loss * len(y)
                correct += corr
                n += len(y)
            if self._step_end(epoch, i, st, loss, loss_sum, correct, n, t0):
                return None
        return self._epoch_end(epoch, step, st, loss_sum, correct, n, t0)

    def _step_end(self, epoch, i, st, loss, loss_sum, correct, n, t0) -> bool:
        """After step ``i``: callbacks, then a position checkpoint when one is due or a
        signal asked to stop. True when the epoch must stop here."""
        for cb in self.callbacks:
            cb.on_step(self, i, loss)
        fault("step")
        stop = self._stop_requested()
        every = self.cfg.train.checkpoint_every_steps
        if stop or (every and self.schedule.step_num % every == 0 and i < self.steps_per_epoch):
            self._check_finite(epoch, i, loss_sum)
            pos = self._position(epoch, i, st, loss_sum, correct, n, time.perf_counter() - t0)
            self.save("last", epoch - 1, self._last_metrics(), pos)
            if stop:
                self._stopped_at(epoch, i)
        return stop

    def _epoch_end(self, epoch, step, st, loss_sum, correct, n, t0) -> dict:
        """The epoch's metrics from its device sums (the epoch's one sync)."""
        self._check_finite(epoch, step, loss_sum)
        sums = self._sums(loss_sum, correct, n)
        n_all = int(sums[2])
        seconds = time.perf_counter() - t0
        return {
            "epoch": epoch,
            "train_loss": float(sums[0]) / max(n_all, 1),
            "train_acc": float(sums[1]) / max(n_all, 1),
            "seconds": seconds,
            "images_per_s": n_all / seconds,
            "lr": st["lr"],
        }

    def _capture_whole(self) -> None:
        """Capture the whole-step graph once (CUDA only); on failure, step eagerly."""
        ws = self.whole
        if ws.graph is not None or not self.rt.cuda_graph:
            return
        try:
            ws.capture()
            if self.generator is not None:  # resumable epochs read its state: must still work
                self.generator.set_state(self.generator.get_state())
            self.capture_seconds = ws.capture_seconds
        except Exception as e:
            ws.graph = None  # an optimisation, never a reason to fail: run it eagerly
            self._warn(f"warning: whole-step CUDA graph capture failed ({e}); stepping eagerly")
            self.rt.cuda_graph = False

    def _train_epoch_whole(self, epoch: int) -> dict | None:
        """train_epoch for the whole-step graph: one replay per step, the schedule's
        learning rate written to the device between replays, no other host work."""
        ws = self.whole
        self._capture_whole()  # one-time, before the epoch's clock starts
        self.model.train()
        st = self._epoch_state(epoch)
        step, n = st["step"], st["n"]
        if step == 0:
            self._losses.zero_()
        ws.start_epoch(st["order"], step, st["loss_sum"], st["correct"])
        t0 = time.perf_counter() - st["seconds"]
        for i in range(step + 1, self.steps_per_epoch + 1):
            loss, _ = ws()
            self.schedule.step()
            step = i
            n += ws.bs
            if self._step_end(epoch, i, st, loss, ws.loss_sum, ws.correct, n, t0):
                return None
        return self._epoch_end(epoch, step, st, ws.loss_sum, ws.correct, n, t0)

    def _last_metrics(self) -> dict:
        return self.history[-1] if self.history else {}

    def _stopped_at(self, epoch: int, step: int) -> None:
        self.interrupted = True
        name = signal.Signals(self._signal).name if self._signal else "a signal"
        where = f"epoch {epoch}, step {step}" if step else f"the end of epoch {epoch}"
        if self.dist.main:
            print(
                f"stopped by {name} at {where}; checkpoint saved. "
                f"Resume with: cnnlab train --resume {self.run_dir}",
                flush=True,
            )

    def _eval(self, loader: ResidentLoader) -> tuple[float, float]:
        loss, acc = self._evaluate(loader)
        if not self.dist.enabled:
            return loss, acc
        n = _n_images(loader)  # every rank scores its share (resident) or all (streaming)
        t = torch.tensor([loss * n, round(acc * n), n], dtype=torch.float64, device=self.rt.device)
        self.dist.all_reduce(t)
        return float(t[0] / t[2]), float(t[1] / t[2])

    def fit(self) -> TrainResult:
        self.setup()
        cfg = self.cfg
        if self.dist.main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CheckpointError(io_error(self.run_dir, e, "create run directory")) from None
            atomic_write_text(self.run_dir / "config.yaml", cfg.to_yaml())
        old_handlers = self._install_signals()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs + 1):
                for cb in self.callbacks:
                    cb.on_epoch_start(self, epoch)
                m = self.train_epoch(epoch)
                if m is None:
                    break
                if self.val is not None:
                    m["val_loss"], m["val_acc"] = self._eval(self.val)
                te = time.perf_counter()
                m["test_loss"], m["test_acc"] = self._eval(self.test_loader)
                m["eval_seconds"] = time.perf_counter() - te
                m["lr"] = m.pop("lr")  # last, as before
                if self.skipped_steps:
                    m["skipped_steps"] = self.skipped_steps
                self.schedule.epoch_end(m.get("val_acc", m["test_acc"]))
                for cb in self.callbacks:
                    cb.on_epoch_end(self, epoch, m)
                self.history.append(m)
                if self.dist.main:
                    self._append_metrics(m)
                # best: by validation accuracy when there is a validation split, else test
                score = m.get("val_acc", m["test_acc"])
                if cfg.run.save_best and score > self.best_metric:
                    self.best_metric = score
                    self.save("best", epoch, m)
                self.save("last", epoch, m)
                if self._stop_requested():
                    self._stopped_at(epoch, 0)
                    break
                if self.should_stop:
                    if self.stop_reason:
                        for cb in self.callbacks:
                            if isinstance(cb, Progress):
                                cb.print(self.stop_reason)
                    break
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            for cb in self.callbacks:
                cb.on_fit_end(self)
        return TrainResult(self.run_dir, self.history, self.model, self.interrupted)
