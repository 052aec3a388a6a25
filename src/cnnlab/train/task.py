"""What a training step computes. A Task says *what*; the one :class:`~cnnlab.train.trainer.Trainer`
says *how* (device, precision, checkpoints, exact resume, signals, NaN policy, DDP,
callbacks, progress, metrics) — for every Task alike, so a feature added to the Trainer
reaches every task at once.

A Task sees a small :class:`TaskContext`, not the Trainer: the config, the data, the
runtime, the generator, and ``ctx.step_optimizer(loss, optimizer, params)`` — the
Trainer's one update (backward, clipping, fp16 loss scaling, the NaN skip, the step).

The Trainer drives a Task through this life cycle::

    task.build(ctx)                     # modules, optimisers, loaders (ctx.cfg, .dataset,
                                        # .rt runtime, .dist, .generator are ready)
    for each epoch:
        task.begin_epoch(epoch)         # draws the epoch's data order from ctx.generator
        for i in range(start, task.steps_per_epoch()):
            loss, n, extra = task.step(i)   # one step (ctx.step_optimizer); the Trainer adds
                                            # loss·n and extra to the epoch's device sums
        metrics = task.epoch_metrics(sums, steps)   # from the rank-summed sums (one host read)
        metrics |= task.evaluate(epoch)             # validation / test / samples

A mid-epoch resume restores the generator to its state at the epoch's start, calls
``begin_epoch`` (the same order again), restores the generator's state at the checkpoint,
the sums and ``load_state``, and continues at step ``start`` — bit-identical on CPU.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.config import Config
from cnnlab.train.optim import OptimizerStep


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _one_rank_eval(loss: float, acc: float, n: int) -> tuple[float, float]:
    return loss, acc


class _OneProcess:
    enabled, main, rank, world = False, True, 0, 1

    def wrap(self, model):
        return model


@dataclass(eq=False)
class TaskContext:
    """What a Task may use of the Trainer. ``run_dir``, ``schedule`` and ``history`` are
    filled in by the Trainer once they exist (after ``build``); ``generator`` may be
    replaced by ``build`` (a streaming data set draws its order on the CPU)."""

    cfg: Config
    dataset: Any
    rt: Any  # runtime.device.Runtime
    generator: torch.Generator
    step_optimizer: Callable[..., None] = field(default_factory=OptimizerStep)
    dist: Any = field(default_factory=_OneProcess)
    warn: Callable[[str], None] = _warn
    # (mean loss, accuracy, n) of this rank's share → (mean loss, accuracy) over every rank
    reduce_eval: Callable[[float, float, int], tuple[float, float]] = _one_rank_eval
    quiet: bool = True
    resume_from: Path | None = None
    callbacks: list = field(default_factory=list)  # the Trainer's: a Task may add one
    run_dir: Path | None = None
    schedule: Any = None  # train.optim.Schedule
    history: list[dict] = field(default_factory=list)


class Task:
    #: written into every checkpoint's meta as ``kind``; loaders of a run check it
    kind: str = "classify"
    #: the epoch metric that picks ``best`` (higher is better); None: no ``best`` checkpoint
    monitor: str | None = "val_acc"
    #: config keys a resume must not change (their saved state would not fit):
    #: (section, keys), keys None for the whole section
    resume_keys: tuple[tuple[str, tuple[str, ...] | None], ...] = (
        ("model", None),
        ("optim", ("name",)),
    )

    def build(self, ctx: TaskContext) -> None:
        """Create the modules, optimisers and loaders on ``ctx.rt.device``."""
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        """Every module a checkpoint holds; the first one is the model a run is evaluated,
        exported and served with (classifiers: ``{"model": ...}``; the GAN: ``G`` and ``D``)."""
        raise NotImplementedError

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers, in a fixed order: checkpointed, and the learning-rate schedule
        drives every one of them."""
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def begin_epoch(self, epoch: int) -> None:
        """Draw the epoch's data order (from ``ctx.generator`` only)."""

    def step(self, i: int) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        """Step ``i`` (0-based) of the epoch: forward, then ``ctx.step_optimizer`` for each
        optimiser (backward, clipping, loss scaling and the step are the Trainer's). Returns
        the step's mean loss (a 0-dim device tensor, never read on the host here), the
        number of images and the step's other sums (device tensors, e.g. ``correct``)."""
        raise NotImplementedError

    def epoch_metrics(self, sums: dict[str, float], steps: int) -> dict:
        """The epoch's training metrics from its (rank-summed, host) sums: ``loss_sum``,
        ``n`` and the keys ``step`` returned."""
        n = max(sums.get("n", 0.0), 1.0)
        return {"train_loss": sums["loss_sum"] / n}

    def evaluate(self, epoch: int) -> dict:
        """Metrics at the epoch's end (validation, test, samples); may write files into
        ``ctx.run_dir`` (rank 0 only)."""
        return {}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Extra state for an exact resume (an EMA teacher, a running class prior, the
        position in an endless batch cycle): (tensors, JSON-able meta)."""
        return {}, {}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        pass

    def meta(self) -> dict:
        """What a reader of a checkpoint needs to rebuild the model without the config:
        model arguments, classes, dataset, input size and normalisation."""
        return {}

    def describe(self) -> str:
        """One line for the start of training."""
        return self.kind
