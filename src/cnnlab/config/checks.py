"""Ranges of config values that the registries do not know about (counts, rates and
fractions, optimiser constants, the seed, sizes, the run name, the sampler, class
weights): the one place a value's range is checked. ``data.pad`` and
``train.class_weights`` are checked again, by the same functions, once the data is
loaded and the image side and the classes are known."""

from __future__ import annotations

import math
import re

from cnnlab.config.bounds import short
from cnnlab.config.schema import Config
from cnnlab.errors import ConfigError, choices_msg

MAX_RUN_NAME = 100  # characters (a path component is at most 255 bytes)
MAX_SEED = 2**32 - 1  # numpy's and CUDA's seeds are 32-bit


def check_run_name(name: str) -> str:
    """A run name is a folder name inside --runs-dir: letters, digits and ``. _ - + = @``,
    with ``/`` between such parts (no ``..``, no leading ``/``, no spaces, no control
    characters, at most MAX_RUN_NAME characters)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("run.name must not be empty")
    if len(name) > MAX_RUN_NAME:
        raise ConfigError(
            f"run name {short(name, 40)} is {len(name)} characters long; use at most {MAX_RUN_NAME}"
        )
    parts = name.split("/")
    if any(p in ("", ".", "..") or not re.fullmatch(r"[\w.+=@-]+", p) for p in parts):
        raise ConfigError(
            f"run name {short(name, 60)} is not a folder name inside --runs-dir: use "
            "letters, digits and . _ - (no '..', no leading '/', no spaces or control "
            "characters)"
        )
    return name


def check_values(cfg: Config) -> Config:
    """Ranges of values the registries do not know about: counts, rates and fractions,
    the pairs of settings that exclude each other, optimiser constants, the seed, data
    sizes, the run name and the NaN policy."""
    o, d, t = cfg.optim, cfg.data, cfg.train
    checks = [
        (t.epochs >= 1, "train.epochs must be ≥ 1"),
        (t.batch_size >= 1, "train.batch_size must be ≥ 1"),
        (t.eval_batch_size >= 1, "train.eval_batch_size must be ≥ 1"),
        (o.lr == "auto" or o.lr > 0, "optim.lr must be > 0 (or auto)"),
        (o.weight_decay >= 0, "optim.weight_decay must be ≥ 0"),
        (0 <= t.label_smoothing < 1, "train.label_smoothing must be in [0, 1)"),
        (0 <= d.val_fraction < 1, "data.val_fraction must be in [0, 1)"),
        (d.train_limit is None or d.train_limit >= 1, "data.train_limit must be ≥ 1"),
        (
            d.labels_per_class is None or d.labels_per_class >= 1,
            "data.labels_per_class must be ≥ 1",
        ),
        (
            d.sampler != "balanced" or not d.labels_per_class,
            "data.sampler=balanced has nothing to balance with data.labels_per_class: the "
            "labelled images are already the same number per class",
        ),
        (t.steps_per_epoch >= 0, "train.steps_per_epoch must be ≥ 0"),
        (t.early_stop >= 0, "train.early_stop must be ≥ 0 epochs"),
        (0 < t.semi_threshold <= 1, "train.semi_threshold must be in (0, 1]"),
        (t.semi_ratio >= 1, "train.semi_ratio must be ≥ 1"),
        (0 <= t.ema < 1, "train.ema must be in [0, 1)"),
        (
            t.early_stop == 0 or d.val_fraction > 0,
            "train.early_stop needs a validation split: add --set data.val_fraction=0.1 "
            "(early stopping never looks at the test set)",
        ),
        (0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum:g}"),
        (0 <= o.beta1 < 1, f"optim.beta1 must be in [0, 1), got {o.beta1:g}"),
        (0 <= o.beta2 < 1, f"optim.beta2 must be in [0, 1), got {o.beta2:g}"),
        (o.eps > 0, f"optim.eps must be > 0, got {o.eps:g}"),
        (
            0 <= t.seed <= MAX_SEED,
            f"train.seed must be in [0, {MAX_SEED}], got {short(t.seed, 30)}",
        ),
        (d.resize is None or d.resize >= 8, "data.resize must be ≥ 8 pixels"),
        (
            d.resize is None or d.resize <= 4096,
            f"data.resize must be at most 4096 pixels, got {short(d.resize, 30)}",
        ),
    ]
    checks += imbalance_checks(cfg)
    size = d.args.get("size")
    if size is not None:
        ok = isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 4096
        checks.append(
            (ok, f"data.size must be an integer in [8, 4096] pixels, got {short(size, 30)}")
        )
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    check_pad(d.pad)
    check_class_weights(t.class_weights)
    if cfg.run.name is not None:
        check_run_name(cfg.run.name)
    if t.checkpoint_every_steps < 0:
        raise ConfigError("train.checkpoint_every_steps must be ≥ 0 (0 = every epoch only)")
    if t.nan_policy not in ("stop", "skip"):
        raise ConfigError(choices_msg("train.nan_policy", t.nan_policy, ("stop", "skip")))
    if not 0 < t.nan_lr_factor <= 1:
        raise ConfigError("train.nan_lr_factor must be in (0, 1]")
    return cfg


MAX_PAD = 1024  # pixels; 1e6 would ask for terabytes


def check_pad(pad: int, side: int | None = None) -> None:
    """data.pad pads every image on each side before a random crop: 0 to MAX_PAD pixels,
    and, once the data's image ``side`` is known, at most that (more only adds zeros)."""
    if not 0 <= pad <= MAX_PAD:
        raise ConfigError(f"data.pad must be in [0, {MAX_PAD}] pixels, got {short(pad, 30)}")
    if isinstance(side, int) and pad > side:
        raise ConfigError(
            f"data.pad={pad} is larger than the {side}-pixel images it pads; "
            f"use at most {side} (the default is 2)"
        )


SAMPLERS = ("random", "balanced")
SELECTS = ("val", "smooth")


def imbalance_checks(cfg: Config) -> list[tuple[bool, str]]:
    """data.sampler and train.select (train.class_weights: :func:`check_class_weights`)."""
    return [
        (
            cfg.data.sampler in SAMPLERS,
            choices_msg("data.sampler", cfg.data.sampler, SAMPLERS),
        ),
        (
            cfg.train.select in SELECTS,
            choices_msg("train.select", cfg.train.select, SELECTS),
        ),
    ]


def check_class_weights(spec, classes: int | None = None) -> None:
    """train.class_weights: none, auto or a list of numbers > 0 — once the data is loaded,
    one per class (``classes`` of them)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("none", "auto")):
        return
    values = list(spec) if isinstance(spec, (list, tuple)) else None
    positive = values is not None and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        for v in values
    )
    if positive and len(values) == (classes or len(values)) and len(values) > 0:
        return
    if classes is None:
        raise ConfigError(
            "train.class_weights must be none, auto or a list of numbers > 0 (one per class), "
            f"got {short(spec, 40)}"
        )
    got = f"{len(values)} values" if values is not None else repr(spec)
    raise ConfigError(
        f"train.class_weights must be none, auto or a list of {classes} numbers > 0 (one per "
        f"class), got {got[:60]}"
    )
