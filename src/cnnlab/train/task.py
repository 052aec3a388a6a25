"""What a training step computes. A Task says *what*; the one :class:`~cnnlab.train.trainer.Trainer`
says *how* (device, precision, checkpoints, exact resume, signals, NaN policy, DDP,
callbacks, progress, metrics) — for every Task alike, so a feature added to the Trainer
reaches every task at once.

The Trainer drives a Task through this life cycle::

    task.build(trainer)                 # modules, optimisers, loaders (trainer.cfg, .dataset,
                                        # .rt runtime, .dist, .generator are ready)
    for each epoch:
        task.begin_epoch(epoch)         # draws the epoch's data order from trainer.generator
        for i in range(start, task.steps_per_epoch()):
            loss, n, extra = task.step(i)   # one optimiser step; the Trainer adds loss·n and
                                            # extra to the epoch's device sums
        metrics = task.epoch_metrics(sums, steps)   # from the rank-summed sums (one host read)
        metrics |= task.evaluate(epoch)             # validation / test / samples

A mid-epoch resume restores the generator to its state at the epoch's start, calls
``begin_epoch`` (the same order again), restores the generator's state at the checkpoint,
the sums and ``load_state``, and continues at step ``start`` — bit-identical on CPU.
"""

from __future__ import annotations

import torch
from torch import nn


class Task:
    #: written into every checkpoint's meta as ``kind``; loaders of a run check it
    kind: str = "classify"
    #: the epoch metric that picks ``best`` (higher is better); None: no ``best`` checkpoint
    monitor: str | None = "val_acc"

    def build(self, trainer) -> None:
        """Create the modules, optimisers and loaders on ``trainer.rt.device``."""
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
        """Draw the epoch's data order (from ``trainer.generator`` only)."""

    def step(self, i: int) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        """Step ``i`` (0-based) of the epoch: forward, backward, optimiser step(s). Returns
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
        ``trainer.run_dir`` (rank 0 only)."""
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
