"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's
``lr_find``): train for a few hundred steps while the learning rate grows exponentially
from ``start_lr`` to ``end_lr``, and read a good rate off the loss curve.

The sweep drives the task's own training step (the one loop: same loaders, augmentation,
precision, optimiser and parameter groups — fine-tuning's backbone group keeps its ratio
to the head). The loss is smoothed with a bias-corrected exponential moving average and
the sweep stops early once it diverges (smoothed loss > ``diverge`` × its minimum).

Suggested rate (``method``):

* ``steepest`` (default): where the smoothed loss falls fastest against log(LR), looked
  for between the first 10 % of the sweep and the loss minimum;
* ``min10``: the LR at the smoothed-loss minimum, divided by 10 (the older rule of thumb).

Both are always computed and recorded. A suggestion is refused — a warning, and the
optimiser's usual rate (:func:`fallback_lr`) instead — when the smoothed loss never fell
clearly below where it started (:data:`MIN_DROP`: the sweep saw no learning, so its
"steepest" point is noise) or when it lies outside :data:`PLAUSIBLE` (a rate of 5.8e-7
trains nothing in a few hundred steps). :func:`lr_range_test` puts every weight, buffer,
optimiser state, learning rate and random-number state back afterwards, so the run that
follows is exactly the run it would have been; :func:`find_lr` sweeps a throwaway copy
built from a config (``cnnlab lr-find``, and ``optim.lr=auto`` before training).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import ConfigError
from cnnlab.figures import png_bytes
from cnnlab.progress import Phases
from cnnlab.runs.files import atomic_write_bytes, atomic_write_text
from cnnlab.train.callbacks import Callback
from cnnlab.train.optim import set_lr

METHODS = ("steepest", "min10")
PLAUSIBLE = (1e-5, 1.0)  # the rates a suggestion may land in; outside: fall back
MIN_DROP = 0.1  # the smoothed loss must fall at least 10 % below its starting level
FALLBACK = {"sgd": 1e-2}  # the optimiser's usual rate when a suggestion is refused (else 1e-3)


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float  # the rate ``method`` picks
    method: str
    steepest: float
    min10: float
    stopped_early: bool  # diverged before the last step
    settings: dict = field(default_factory=dict)
    warning: str | None = None  # why the sweep's own suggestion was refused
    refused: float | None = None  # that suggestion (``suggestion`` is then the fallback)

    def to_dict(self) -> dict:
        return asdict(self)


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(steepest, min10) for a sweep (see the module's docstring)."""
    if len(lrs) < 3:
        raise ConfigError("the LR sweep stopped after fewer than 3 steps: raise --steps")
    sm = np.asarray(smoothed, dtype=np.float64)
    lo = np.log(np.asarray(lrs, dtype=np.float64))
    imin = int(np.argmin(sm))
    min10 = float(lrs[imin]) / 10
    start = max(1, len(sm) // 10)
    if imin - start < 2:
        return min10, min10  # no falling stretch to read a slope from
    grad = np.gradient(sm, lo)
    i = start + int(np.argmin(grad[start : imin + 1]))
    return float(lrs[i]), min10


def fallback_lr(optimizer: str) -> float:
    """The usual starting rate of an optimiser: 1e-2 for SGD, 1e-3 for the adaptive ones."""
    return FALLBACK.get(str(optimizer).lower(), 1e-3)


def sanity(losses: list[float], smoothed: list[float], suggestion: float) -> str | None:
    """Why a sweep's suggestion is nonsense, or None when it is usable."""
    lo, hi = PLAUSIBLE
    start = float(np.mean(losses[: max(1, len(losses) // 10)]))
    fell = start - min(smoothed)
    if not (math.isfinite(start) and fell > MIN_DROP * abs(start)):
        return (
            f"the loss never fell clearly during the sweep (from {start:.3g} to at best "
            f"{min(smoothed):.3g}), so no rate can be read off it"
        )
    if not lo <= suggestion <= hi:
        return f"the suggestion {suggestion:.2g} is outside the plausible range {lo:g} to {hi:g}"
    return None


def check_settings(start_lr, end_lr, steps, method="steepest", beta=0.98, diverge=4.0) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown lr-find method {method!r}; choose one of: steepest, min10")
    if not (0 < start_lr < end_lr) or steps < 3 or not (0 <= beta < 1) or diverge <= 1:
        raise ConfigError(
            "lr-find needs 0 < start_lr < end_lr, steps ≥ 3, 0 ≤ beta < 1 and diverge > 1"
        )


def lr_range_test(
    trainer,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 200,
    beta: float = 0.98,
    diverge: float = 4.0,
    method: str = "steepest",
    quiet: bool = False,
) -> LRFindResult:
    """Sweep the learning rate on a trainer that is set up (``trainer.setup()``), then
    restore its modules, optimisers, learning rates and RNG states exactly."""
    check_settings(start_lr, end_lr, steps, method, beta, diverge)
    saved = snapshot(trainer)
    ratios = lr_ratios(trainer)
    try:
        lrs, losses, smoothed, stopped = sweep(
            trainer, ratios, start_lr, end_lr, steps, beta, diverge, quiet
        )
    finally:
        restore(trainer, saved)
    steepest, min10 = suggest(lrs, smoothed)
    res = LRFindResult(
        lrs,
        losses,
        smoothed,
        steepest if method == "steepest" else min10,
        method,
        steepest,
        min10,
        stopped,
        dict(start_lr=start_lr, end_lr=end_lr, steps=steps, beta=beta, diverge=diverge),
    )
    return refuse_nonsense(res, fallback_lr(trainer.cfg.optim.name))


def snapshot(trainer) -> dict:
    """Everything the sweep changes: the modules' weights and train/eval modes, the
    optimisers' states, the learning rates and the random-number states, and the task's
    own state (the trained weights behind a moving average, its update count)."""
    modules = trainer.task.modules()
    return {
        "modules": {k: copy.deepcopy(m.state_dict()) for k, m in modules.items()},
        "task": copy.deepcopy(trainer.task.state()),
        "modes": {k: m.training for k, m in modules.items()},
        "optims": [copy.deepcopy(o.state_dict()) for o in trainer.optimizers],
        "lrs": [float(g["lr"]) for g in trainer.schedule.groups],
        "gen": trainer.generator.get_state(),
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore(trainer, saved: dict) -> None:
    """Put back what :func:`snapshot` saved."""
    for k, m in trainer.task.modules().items():
        m.load_state_dict(saved["modules"][k])
        m.train(saved["modes"][k])
    trainer.task.load_state(*saved["task"])
    for o, st in zip(trainer.optimizers, saved["optims"]):
        o.load_state_dict(st)
    for g, lr in zip(trainer.schedule.groups, saved["lrs"]):
        set_lr(g, lr)
    trainer.generator.set_state(saved["gen"])
    torch.set_rng_state(saved["cpu"])
    if saved["cuda"] is not None:
        torch.cuda.set_rng_state_all(saved["cuda"])


def lr_ratios(trainer) -> list[float]:
    """Each parameter group's rate over the first group's (fine-tuning's backbone keeps
    its ratio to the head; a backbone frozen in epoch 1 gets 0: the sweep trains what
    epoch 1 trains)."""
    from cnnlab.train.finetune import frozen_at

    groups, base = trainer.schedule.groups, list(trainer.schedule.base)
    if frozen_at(trainer.cfg, 1):
        base = [0.0 if g.get("name") == "backbone" else b for g, b in zip(groups, base)]
    return [b / base[0] if base[0] else 1.0 for b in base]


def sweep(trainer, ratios, start_lr, end_lr, steps, beta, diverge, quiet):
    """The sweep itself, through the task's own steps: (rates, losses, smoothed losses,
    whether it stopped early on a diverging or non-finite loss)."""
    task, groups, spe = trainer.task, trainer.schedule.groups, trainer.steps_per_epoch
    mult = (end_lr / start_lr) ** (1 / (steps - 1))
    lrs, losses, smoothed = [], [], []
    avg, best, stopped = 0.0, math.inf, False
    for m in task.modules().values():
        m.train()
    epoch, i = 1, 0
    task.begin_epoch(epoch)
    with Phases(quiet) as bar:
        for s in range(steps):
            lr = start_lr * mult**s
            for g, r in zip(groups, ratios):
                set_lr(g, lr * r)
            if i == spe:
                epoch, i = epoch + 1, 0
                task.begin_epoch(epoch)
            loss, _, _ = task.step(i)
            i += 1
            value = float(loss)
            bar("lr-find", s + 1, steps, f"loss {value:.4f}")
            if not math.isfinite(value):
                stopped = s < steps - 1
                break
            avg = beta * avg + (1 - beta) * value
            sm = avg / (1 - beta ** (s + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(sm)
            best = min(best, sm)
            if s > 5 and sm > diverge * best:
                stopped = s < steps - 1
                break
    return lrs, losses, smoothed, stopped


def refuse_nonsense(res: LRFindResult, fallback: float) -> LRFindResult:
    """``res`` with ``suggestion`` replaced by ``fallback`` (and ``warning`` saying why)
    when :func:`sanity` finds it unusable."""
    why = sanity(res.losses, res.smoothed, res.suggestion)
    if why is not None:
        res.refused, res.suggestion = res.suggestion, fallback
        res.warning = f"warning: lr-find: {why}; using {fallback:g}, the optimiser's usual rate"
    return res


def find_lr(
    config=None,
    *,
    overrides=None,
    dataset=None,
    quiet: bool = False,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 200,
    method: str = "steepest",
) -> LRFindResult:
    """The range test on a fresh model built from a config (a Config, a dict of sections
    or a recipe's name or path) with ``--set``-style overrides; nothing is written.

    >>> cnnlab.find_lr(overrides=["data.name=fashion-mnist"]).suggestion  # doctest: +SKIP
    """
    from cnnlab.config import Config, apply_overrides, from_dict, load_recipe
    from cnnlab.data.datasets import Dataset

    if isinstance(config, Config):
        cfg = config.copy()
    elif isinstance(config, dict) or config is None:
        cfg = from_dict(config)
    else:
        cfg = load_recipe(config)
    apply_overrides(cfg, overrides)
    ds_obj = dataset if isinstance(dataset, Dataset) else None
    if isinstance(dataset, str):
        cfg.data.name = dataset
    return sweep_config(cfg, ds_obj, quiet, start_lr, end_lr, steps, method)


def sweep_config(cfg, ds_obj, quiet, start_lr, end_lr, steps, method) -> LRFindResult:
    from cnnlab.config import resolve_task
    from cnnlab.train.trainer import Trainer

    check_settings(start_lr, end_lr, steps, method)
    if resolve_task(cfg) == "gan":
        raise ConfigError("lr-find trains classifiers; a GAN has two losses to balance")
    probe = cfg.copy()
    probe.optim.lr = start_lr  # a number for the optimiser; the sweep sets every step's LR
    probe.run.name, probe.train.report, probe.train.diagnostics = None, False, False
    probe.train.early_stop = 0
    if ds_obj is not None and not probe.data.name:
        probe.data.name = ds_obj.name
    tr = Trainer(probe, dataset=ds_obj, quiet=True)
    tr.setup()
    return lr_range_test(
        tr, start_lr=start_lr, end_lr=end_lr, steps=steps, method=method, quiet=quiet
    )


def plot_png(res: LRFindResult) -> bytes:
    """The loss against the LR (log axis), the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot(res.lrs, res.losses, color="0.75", lw=0.8, label="loss")
    ax.plot(res.lrs, res.smoothed, color="C0", lw=1.6, label="smoothed")
    other = res.min10 if res.method == "steepest" else res.steepest
    ax.axvline(res.suggestion, color="C3", lw=1.4, label=f"{res.method}: {res.suggestion:.2e}")
    other_name = "min10" if res.method == "steepest" else "steepest"
    ax.axvline(other, color="C2", lw=1, ls=":", label=f"{other_name}: {other:.2e}")
    ax.set_xscale("log")
    lo = min(min(res.smoothed), min(res.losses))
    hi = max(res.smoothed[: max(3, len(res.smoothed) // 3)])
    ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.3 * (hi - lo + 1e-9))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("LR range test")
    ax.legend(fontsize=8)
    return png_bytes(fig, tight_layout=True)


def write_result(res: LRFindResult, out_dir: str | os.PathLike, stem: str = "lr_find") -> Path:
    """``<out_dir>/<stem>.json`` (the curve and both suggestions) and ``<stem>.png``."""
    d = Path(out_dir)
    png = plot_png(res)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / f"{stem}.png", png)
    atomic_write_text(d / f"{stem}.json", json.dumps(res.to_dict(), indent=1) + "\n")
    return d / f"{stem}.json"


class SaveLRFind(Callback):
    """Writes the sweep that chose ``optim.lr=auto`` into the run directory."""

    def __init__(self, res: LRFindResult):
        self.res = res

    def on_fit_start(self, trainer) -> None:
        if trainer.dist.main:
            write_result(self.res, trainer.run_dir)


def resolve_auto_lr(
    cfg, ds_obj=None, quiet: bool = False, resume=None
) -> tuple[object, Callback, object]:
    """``optim.lr=auto``: run the range test, put its suggestion into the config (the run's
    config.yaml records the number) and say so. Returns (config, a callback that saves the
    sweep into the run, the dataset): the dataset is loaded once, here, when not given,
    and the run trains on the same one."""
    from cnnlab.train.trainer import load_data

    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise ConfigError(
            "optim.lr=auto does not run under torchrun: run `cnnlab lr-find` first and pass "
            "its rate with --lr"
        )
    ds = ds_obj if ds_obj is not None else load_data(cfg, resume)
    res = sweep_config(cfg, ds, quiet, 1e-7, 10.0, 200, "steepest")
    cfg.optim.lr = float(f"{res.suggestion:.3g}")
    if res.warning:
        print(res.warning, file=sys.stderr, flush=True)
    elif not quiet:
        print(
            f"optim.lr=auto: {cfg.optim.lr:g} (lr-find, steepest descent of the smoothed loss; "
            f"min/10 would be {res.min10:.2g})",
            flush=True,
        )
    return cfg, SaveLRFind(res), ds
