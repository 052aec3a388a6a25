"""The training loop. The model and config say *what*; the trainer says *how*.

Small datasets live on the device (ResidentLoader); per-step metrics accumulate in
device tensors and are read once per epoch, so the step loop never syncs with the host.
Every epoch appends to ``metrics.jsonl`` and writes ``checkpoints/last`` (and ``best``)
atomically, with optimiser, schedule and RNG state for an exact resume.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from .. import __version__
from ..config import Config, validate
from ..data.augment import parse_augment
from ..data.datasets import Dataset, load_dataset
from ..data.loader import ResidentLoader
from ..errors import CheckpointError, CnnlabError, ConfigError
from ..models import count_params, create_model
from ..runs import read_metrics
from .callbacks import Callback, NaNGuard, Progress
from .checkpoint import atomic_write_text, load_checkpoint, restore_rng, rng_state, save_checkpoint
from .device import make_runtime
from .losses import build_loss
from .optim import Schedule, build_optimizer


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    model: torch.nn.Module | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    @property
    def best(self) -> dict:
        key = "val_acc" if self.history and "val_acc" in self.history[0] else "test_acc"
        return max(self.history, key=lambda m: m[key]) if self.history else {}


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
        self.callbacks = [Progress(quiet=quiet), NaNGuard(), *(callbacks or [])]
        self.resume_from = Path(resume) if resume else None
        self.should_stop = False
        self.stop_reason = ""

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
        self.test_loader = ResidentLoader(ds.test_x, ds.test_y, t.eval_batch_size, **common)
        if cfg.data.val_fraction > 0:
            self.val = ResidentLoader(xva, yva, t.eval_batch_size, **common)

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
        self.model.to(dev)
        if self.rt.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, cfg.optim, dev)
        self.steps_per_epoch = len(self.train_loader)
        self.schedule = Schedule(self.optimizer, cfg.sched, t.epochs, self.steps_per_epoch)
        self.loss_fn = build_loss(t.loss, ds.num_classes, t.label_smoothing)
        self.step_fn = self._make_step()
        self.run_dir = self._run_dir()
        self.start_epoch = 1
        self.best_metric = -math.inf
        self.history: list[dict] = []
        if self.resume_from is not None:
            self._resume()

    def _make_step(self):
        model, opt, loss_fn, rt = self.model, self.optimizer, self.loss_fn, self.rt
        clip = self.cfg.train.grad_clip

        def step(x, y):
            with rt.autocast():
                out = model(x)
                loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            return loss.detach(), (out.detach().argmax(1) == y).sum()

        if self.rt.compile:
            return torch.compile(step)
        return step

    def describe(self) -> str:
        ds = self.dataset
        return (
            f"{self.cfg.model.name} ({count_params(self.model):,} params) on {ds.name} "
            f"[{_n_images(self.train_loader):,} train / {_n_images(self.test_loader):,} test] — "
            f"{self.rt.describe()}"
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
            "rng": plain_rng,
        }

    def save(self, name: str, epoch: int, metrics: dict) -> Path:
        tensors, _ = rng_state(self.generator)
        return save_checkpoint(
            self.run_dir / "checkpoints" / f"{name}.safetensors",
            self.model,
            self.meta(epoch, metrics),
            self.optimizer,
            tensors,
        )

    def _resume(self) -> None:
        path = self.run_dir / "checkpoints" / "last.safetensors"
        try:
            ck = load_checkpoint(path)
        except CheckpointError as first:
            prev = self.run_dir / "checkpoints" / "prev.safetensors"
            if not prev.is_file():
                raise
            print(f"warning: {first}; resuming from the previous checkpoint")
            ck = load_checkpoint(prev)
        self.model.load_state_dict(ck.model_state)
        st = ck.optimizer_state()
        if st is not None:
            self.optimizer.load_state_dict(st)
        self.schedule.load_state_dict(ck.meta["schedule"])
        restore_rng(ck.tensors, ck.meta.get("rng", {}), self.generator)
        self.start_epoch = int(ck.meta["epoch"]) + 1
        self.best_metric = float(ck.meta.get("best_metric", -math.inf))
        # Lines written after the checkpoint (a crash between the two) are dropped.
        self.history = [
            m for m in read_metrics(self.run_dir) if m.get("epoch", 0) < self.start_epoch
        ]
        self._rewrite_metrics()

    def _rewrite_metrics(self) -> None:
        atomic_write_text(
            self.run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.history)
        )

    # -- the loop ------------------------------------------------------------------------

    @torch.no_grad()
    def _evaluate(self, loader: ResidentLoader) -> tuple[float, float]:
        self.model.eval()
        loss_sum = torch.zeros((), device=self.rt.device)
        correct = torch.zeros((), device=self.rt.device, dtype=torch.long)
        n = 0
        for x, y in loader:
            with self.rt.autocast():
                out = self.model(x)
            loss_sum += torch.nn.functional.cross_entropy(out.float(), y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            n += len(y)
        self.model.train()
        return loss_sum.item() / max(n, 1), correct.item() / max(n, 1)

    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        dev = self.rt.device
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        n = 0
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(self.train_loader, 1):
            loss, corr = self.step_fn(x, y)
            self.schedule.step()
            loss_sum += loss * len(y)
            correct += corr
            n += len(y)
            for cb in self.callbacks:
                cb.on_step(self, i, loss)
        train_loss, train_acc = loss_sum.item() / n, correct.item() / n  # the epoch's one sync
        seconds = time.perf_counter() - t0
        return {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "seconds": seconds,
            "images_per_s": n / seconds,
        }

    def fit(self) -> TrainResult:
        self.setup()
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", cfg.to_yaml())
        for cb in self.callbacks:
            cb.on_fit_start(self)
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs + 1):
                for cb in self.callbacks:
                    cb.on_epoch_start(self, epoch)
                lr = self.schedule.lr
                m = self.train_epoch(epoch)
                if self.val is not None:
                    m["val_loss"], m["val_acc"] = self._evaluate(self.val)
                te = time.perf_counter()
                m["test_loss"], m["test_acc"] = self._evaluate(self.test_loader)
                m["eval_seconds"] = time.perf_counter() - te
                m["lr"] = lr
                self.schedule.epoch_end(m.get("val_acc", m["test_acc"]))
                for cb in self.callbacks:
                    cb.on_epoch_end(self, epoch, m)
                self.history.append(m)
                with open(self.run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(m) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                # best: by validation accuracy when there is a validation split, else test
                score = m.get("val_acc", m["test_acc"])
                if cfg.run.save_best and score > self.best_metric:
                    self.best_metric = score
                    self.save("best", epoch, m)
                self.save("last", epoch, m)
                if self.should_stop:
                    if self.stop_reason:
                        for cb in self.callbacks:
                            if isinstance(cb, Progress):
                                cb.print(self.stop_reason)
                    break
        finally:
            for cb in self.callbacks:
                cb.on_fit_end(self)
        return TrainResult(self.run_dir, self.history, self.model)
