"""Whether a model takes images of a given size, checked on one blank image: a model too
deep for small images (a kernel or pooling window larger than what is left) is refused
in one line naming the smallest side that works, before anything trains."""

from __future__ import annotations

import warnings

import torch

from cnnlab.errors import ConfigError
from cnnlab.models import MODELS, create_model


def _fits(name: str, channels: int, classes: int, size: int, options: dict):
    """The model built for ``size``-px inputs and run on one blank image, or None when it
    cannot take images that small (a kernel or pooling window larger than what is left)."""
    try:
        with warnings.catch_warnings():  # torch warns about the empty layers of a misfit
            warnings.simplefilter("ignore")
            model = create_model(name, channels, classes, size, **options)
            was = model.training
            model.eval()
            with torch.no_grad():
                model(torch.zeros(1, channels, size, size))
        model.train(was)
        return model
    except ConfigError as e:
        if "cannot build" in str(e):
            return None
        raise
    except RuntimeError:
        return None


def smallest_input(name: str, channels: int, classes: int, options: dict, start: int) -> int:
    """The smallest image side (> ``start``, ≤ 1024 px) the model takes."""
    lo, hi = start, max(2 * start, 16)
    while _fits(name, channels, classes, hi, options) is None:
        lo, hi = hi, 2 * hi
        if hi > 1024:
            raise ConfigError(f"{name} cannot take images of any side up to 1024 px")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _fits(name, channels, classes, mid, options) else (mid, hi)
    return hi


def model_for_input(name: str, channels: int, classes: int, size: int, options: dict, hint: str):
    """``create_model`` checked on one blank image of the given size: a model that cannot
    take images that small is a ConfigError naming the smallest size that works, with
    ``hint`` (``{n}``: that size) saying how to ask for it."""
    model = _fits(name, channels, classes, size, options)
    if model is not None:
        return model
    n = smallest_input(name, channels, classes, options, size)
    entry = MODELS.get(name)
    designed = entry.default_input[1]
    raise ConfigError(
        f"{entry.name} needs images of at least {n}×{n} px, these are {size}×{size}: "
        f"use {hint.format(n=n)}"
        + (f" (or {hint.format(n=designed)}, the size it is designed for)" if designed > n else "")
    )
