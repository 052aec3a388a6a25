"""The weights' exponential moving average (``train.ema``; the teacher of Mean Teacher and
FixMatch).

:class:`WeightAverage` keeps an averaged copy of a model, updated after each optimiser
step: ``average ← d · average + (1 − d) · weights``, buffers (batch-norm statistics)
copied as they are. With ``warmup`` the decay ramps up as ``min(decay, (1 + n) / (10 + n))``
over the first updates ``n``, so that a short run's average does not hold on to the random
initialisation. The average is the model a task evaluates and saves; the trained weights
(the student) go into the task's state, so that a resumed run continues exactly:
:meth:`WeightAverage.state` / :meth:`WeightAverage.load_state`.
"""

from __future__ import annotations

import copy

import torch

STUDENT = "student."  # the prefix of the student's tensors in a task's state


def warmup_decay(decay: float, updates: int) -> float:
    """The decay of update number ``updates`` (from 0) under the warm-up ramp."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """An exponential moving average of ``model``'s weights at ``decay`` per update."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup = decay, warmup
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step of the average towards ``model``'s current weights."""
        d = warmup_decay(self.decay, self.updates) if self.warmup else self.decay
        self.updates += 1
        for pe, p in zip(self.model.parameters(), model.parameters(), strict=True):
            pe.lerp_(p.detach(), 1 - d)
        for be, b in zip(self.model.buffers(), model.buffers(), strict=True):
            be.copy_(b)

    def state(self, student: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, meta) for a checkpoint: the student's weights and the update count."""
        tensors = {f"{STUDENT}{k}": v for k, v in student.state_dict().items()}
        return tensors, {"ema_updates": self.updates}

    def load_state(self, student: torch.nn.Module, tensors: dict, meta: dict) -> None:
        """The student's weights and the update count back from :meth:`state`'s output."""
        n = len(STUDENT)
        student.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(STUDENT)})
        self.updates = int(meta.get("ema_updates", 0))

    def note(self) -> str:
        """The run line's note on what is evaluated."""
        return f", evaluated on the weights' moving average (decay {self.decay:g})"


def weight_average(model: torch.nn.Module, decay: float, warmup: bool) -> WeightAverage | None:
    """A :class:`WeightAverage` of ``model``, or None when ``decay`` is 0 (no average)."""
    return WeightAverage(model, decay, warmup) if decay > 0 else None
