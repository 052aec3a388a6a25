"""Losses by name. Models output logits; each loss maps (logits, labels) → scalar."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnnlab.config import check_class_weights
from cnnlab.errors import ConfigError
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


def build_loss(
    name: str,
    num_classes: int,
    label_smoothing: float = 0.0,
    class_weights: torch.Tensor | None = None,
) -> LossFn:
    """The loss ``name``; with ``class_weights`` (one per class) each image's loss is
    multiplied by its class's weight and the batch mean taken over images (Keras'
    ``class_weight``), so weights whose mean over the training images is 1 keep the loss's
    scale and the learning rate's meaning. Label smoothing applies as without weights."""
    if class_weights is None:
        return LOSSES.get(name)(num_classes, label_smoothing)
    entry = LOSSES.get(name)
    if entry not in (cross_entropy, nll):
        raise ConfigError(
            f"train.class_weights works with the losses cross_entropy and nll, not {name!r}"
        )
    w = class_weights

    def weighted(logits, y):
        if entry is nll:
            per = F.nll_loss(F.log_softmax(logits.float(), 1), y, reduction="none")
        else:
            per = F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="none")
        return (per * w.to(per.dtype).index_select(0, y)).mean()

    return weighted


def class_counts(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Training images per class (int64, on the CPU)."""
    return torch.bincount(torch.as_tensor(y).long().flatten().cpu(), minlength=num_classes)


def class_weights(spec, counts: torch.Tensor) -> torch.Tensor | None:
    """The per-class loss weights ``train.class_weights`` asks for, from the training
    images per class: ``none`` → None; ``auto`` → inverse frequency n / (k · n_c) over the k
    classes that have images (so the mean weight over the training images is 1; a class
    without images gets 0, it never weighs anything); a list → as given (checked: one
    number > 0 per class). Derived from the data alone: a resumed run gets the same."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "none"):
        return None
    counts = counts.double()
    k = len(counts)
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        present = counts > 0
        w = torch.zeros(k, dtype=torch.float64)
        w[present] = counts.sum() / (int(present.sum()) * counts[present])
        return w.float()
    check_class_weights(spec, k)
    return torch.tensor([float(v) for v in spec], dtype=torch.float32)
