"""Losses by name. Models output logits; each loss maps (logits, labels) → scalar."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnnlab.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[Callable[..., LossFn]] = Registry("loss")


def _targets(y: torch.Tensor, num_classes: int, smoothing: float, dtype) -> torch.Tensor:
    t = F.one_hot(y, num_classes).to(dtype)
    if smoothing:
        t = t * (1 - smoothing) + smoothing / num_classes
    return t


@LOSSES.register("cross_entropy")
def cross_entropy(num_classes: int, label_smoothing: float = 0.0) -> LossFn:
    return lambda logits, y: F.cross_entropy(logits, y, label_smoothing=label_smoothing)


@LOSSES.register("nll")
def nll(num_classes: int, label_smoothing: float = 0.0) -> LossFn:
    """Negative log-likelihood of log-softmax outputs (the classic two-step CE)."""
    return lambda logits, y: F.nll_loss(F.log_softmax(logits.float(), 1), y)


@LOSSES.register("mse")
def mse(num_classes: int, label_smoothing: float = 0.0) -> LossFn:
    """Mean squared error between softmax probabilities and one-hot targets."""

    def fn(logits, y):
        p = F.softmax(logits.float(), 1)
        return F.mse_loss(
            p, _targets(y, num_classes, label_smoothing, p.dtype), reduction="sum"
        ) / len(y)

    return fn


@LOSSES.register("kl_div")
def kl_div(num_classes: int, label_smoothing: float = 0.0) -> LossFn:
    """KL(target ‖ softmax) against one-hot or smoothed targets."""

    def fn(logits, y):
        logp = F.log_softmax(logits.float(), 1)
        return F.kl_div(
            logp, _targets(y, num_classes, label_smoothing, logp.dtype), reduction="batchmean"
        )

    return fn


def build_loss(name: str, num_classes: int, label_smoothing: float = 0.0) -> LossFn:
    return LOSSES.get(name)(num_classes, label_smoothing)
