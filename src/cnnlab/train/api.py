"""``fit(...)`` builds a config from defaults → recipe → overrides and fits."""

from __future__ import annotations

import os
from pathlib import Path

from cnnlab.config import Config, apply_overrides, from_dict, load_recipe
from cnnlab.data.datasets import Dataset
from cnnlab.errors import CheckpointError
from cnnlab.train.trainer import Trainer, TrainResult

SHORTCUTS = {
    "model": "model.name",
    "dataset": "data.name",
    "data_dir": "data.data_dir",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "optimizer": "optim.name",
    "device": "train.device",
    "seed": "train.seed",
    "name": "run.name",
    "runs_dir": "run.runs_dir",
    "report_to": "run.report_to",
}


def build_config(
    config: Config | dict | None = None,
    recipe: str | os.PathLike | None = None,
    overrides: list[str] | dict | None = None,
    **shortcuts,
) -> Config:
    if isinstance(config, Config):
        cfg = config.copy()
    elif isinstance(config, dict):
        cfg = from_dict(config)
    elif recipe:
        cfg = load_recipe(recipe)
    else:
        cfg = Config()
    apply_overrides(cfg, overrides)
    extra = {}
    for k, v in shortcuts.items():
        if k not in SHORTCUTS:
            raise TypeError(f"fit() got an unexpected keyword argument {k!r}")
        if v is not None:
            extra[SHORTCUTS[k]] = v
    return apply_overrides(cfg, extra)


def flag_keys(shortcuts: dict) -> list[str]:
    """The config keys the given shortcut arguments (``epochs=5`` …) set."""
    return [SHORTCUTS[k] for k, v in shortcuts.items() if v is not None and k in SHORTCUTS]


def fit(
    config: Config | dict | None = None,
    *,
    recipe=None,
    overrides=None,
    dataset: str | Dataset | None = None,
    resume: str | os.PathLike | None = None,
    quiet: bool = False,
    callbacks=None,
    **shortcuts,
) -> TrainResult:
    """Train a model and return its run (directory, per-epoch history, model).

    >>> cnnlab.fit(model="lenet5", dataset="fashion-mnist", epochs=3)  # doctest: +SKIP
    """
    ds_obj = dataset if isinstance(dataset, Dataset) else None
    if isinstance(dataset, str):
        shortcuts["dataset"] = dataset
    if resume is not None:
        run = Path(resume)
        if not (run / "config.yaml").is_file():
            raise CheckpointError(
                f"cannot resume {str(resume)!r}: not a run directory (no config.yaml)"
            )
        config = load_recipe(run / "config.yaml")
    cfg = build_config(config, recipe, overrides, **shortcuts)
    if ds_obj is None and resume is None:  # an image folder: settings chosen from the data
        from cnnlab.train.auto import apply

        apply(cfg, config, recipe, overrides, flag_keys(shortcuts), quiet)
    if ds_obj is not None:
        cfg.data.name = cfg.data.name if cfg.data.name else ds_obj.name
    if cfg.optim.lr == "auto":  # an LR range test first; config.yaml records its choice
        from cnnlab.train.lr_find import resolve_auto_lr

        cfg, saver, ds_obj = resolve_auto_lr(cfg, ds_obj, quiet, resume)
        callbacks = [*(callbacks or []), saver]
    return Trainer(cfg, dataset=ds_obj, callbacks=callbacks, quiet=quiet, resume=resume).fit()


__all__ = ["SHORTCUTS", "build_config", "fit", "flag_keys"]
