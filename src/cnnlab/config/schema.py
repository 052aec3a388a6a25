"""The Config: its sections, ``section.key`` access by name with type coercion (what a
recipe and ``--set`` go through), a Config from a dict, and the task a config trains.

Keys under ``model`` and ``data`` that are not fields of those sections are options of
the chosen model builder / dataset loader, validated against its signature later. An
unknown key or a bad value raises ConfigError listing the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from cnnlab.config.bounds import short
from cnnlab.config.sections import (
    GAN_MODELS,
    DataConfig,
    GanConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SchedConfig,
    TrainConfig,
)
from cnnlab.errors import ConfigError, choices_msg, did_you_mean


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    gan: GanConfig = field(default_factory=GanConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        for sec in ("model", "data"):  # builder options flattened into the section
            extra = d[sec].pop("args")
            d[sec].update(extra)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def copy(self) -> Config:
        return from_dict(self.to_dict())


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def _section_cls(name: str):
    return {
        "model": ModelConfig,
        "data": DataConfig,
        "optim": OptimConfig,
        "sched": SchedConfig,
        "train": TrainConfig,
        "run": RunConfig,
        "gan": GanConfig,
    }[name]


def resolve_task(cfg: Config) -> str:
    """The task a config trains: ``train.task``, or for ``auto`` gan when the model is a
    GAN, semi with ``data.labels_per_class``, adversarial with ``train.adversarial``,
    else classify."""
    task = cfg.train.task.strip().lower()
    if task != "auto":
        return task
    if cfg.model.name.strip().lower() in GAN_MODELS:
        return "gan"
    if cfg.data.labels_per_class:
        return "semi"
    if cfg.train.adversarial.strip().lower() != "none":
        return "adversarial"
    return "classify"


def gan_model_name(cfg: Config) -> str:
    """The GAN variant the ``gan`` section asks for; a conditional model.name
    (dcgan-conditional, dcgan-ac) also makes it conditional."""
    conditional = cfg.gan.conditional or cfg.model.name.strip().lower() in GAN_MODELS[1:]
    if cfg.gan.aux_weight > 0:
        return "dcgan-ac"
    return "dcgan-conditional" if conditional else "dcgan"


def coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        for a in args:  # a named value a field also takes (optim.lr: auto)
            if typing.get_origin(a) is typing.Literal and str(value).lower() in a.__args__:
                return str(value).lower()
        return coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "yes",
            "on",
            "1",
            "false",
            "no",
            "off",
            "0",
        ):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{where} must be true or false, got {short(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where} must be an integer, got {short(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and len(value) > 100:
            raise ConfigError(f"{where} must be an integer, got {short(value)}")
        try:
            f = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{where} must be an integer, got {short(value)}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"{where} must be an integer, got {short(value)}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {short(value)}")
        try:
            f = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} must be a number, got {short(value)}") from None
        if not math.isfinite(f):
            raise ConfigError(f"{where} must be a finite number, got {short(value)}")
        return f
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, got {short(value)}")
        return str(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {short(value)}")
        return dict(value)
    return value


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def set_value(cfg: Config, dotted: str, value: Any) -> None:
    """Set ``section.key`` (``model.activation``, ``optim.lr``) with type coercion."""
    parts = dotted.strip().split(".")
    if len(parts) < 2 or parts[0] not in SECTIONS:
        raise ConfigError(
            f"unknown config key {dotted!r}; keys look like section.key with section one of: "
            + ", ".join(SECTIONS)
            + did_you_mean(dotted, all_keys())
        )
    sec_name, key = parts[0], ".".join(parts[1:])
    sec = getattr(cfg, sec_name)
    hints = _hints(type(sec))
    if key in hints and key != "args":
        value = coerce(value, hints[key], dotted)
        if dotted.strip() == "model.name":
            value = normalise_model_name(value)
        elif dotted.strip() == "data.data_dir" and value:
            value = os.path.abspath(os.path.expanduser(value))  # a run read from elsewhere
        setattr(sec, key, value)
    elif key.startswith("args."):
        sec.args[key[5:]] = value
    elif sec_name in ("model", "data"):
        sec.args[key] = value  # a builder/loader option, checked in validate()
    else:
        valid = [k for k in hints if k != "args"]
        raise ConfigError(
            f"unknown config key {dotted!r}; {sec_name} keys: {', '.join(valid)}"
            + did_you_mean(dotted, all_keys())
        )


def all_keys() -> list[str]:
    """Every ``section.key`` of the schema (builder and loader options aside)."""
    return [f"{s}.{k}" for s in SECTIONS for k in _hints(_section_cls(s)) if k != "args"]


def normalise_model_name(name: object) -> str:
    """Model names are lower case (``LeNet5`` → ``lenet5``), as the run's name is made of it."""
    return str(name).strip().lower()


def get_value(cfg: Config, dotted: str, default: Any = None) -> Any:
    """Read ``section.key`` (the inverse of set_value); an option the config leaves unset
    reads as ``default``."""
    parts = dotted.strip().split(".")
    if len(parts) < 2 or parts[0] not in SECTIONS:
        raise ConfigError(f"unknown config key {dotted!r}")
    sec_name, key = parts[0], ".".join(parts[1:])
    sec = getattr(cfg, sec_name)
    if key in _hints(type(sec)) and key != "args":
        return getattr(sec, key)
    key = key[5:] if key.startswith("args.") else key
    return sec.args.get(key, default)


def from_dict(d: dict | None) -> Config:
    cfg = Config()
    if not d:
        return cfg
    if not isinstance(d, dict):
        raise ConfigError("a recipe must be a YAML mapping of sections (model, data, optim, ...)")
    for sec, body in d.items():
        if sec not in SECTIONS:
            raise ConfigError(choices_msg("config section", sec, SECTIONS))
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"config section {sec!r} must be a mapping, got {short(body)}")
        for k, v in body.items():
            set_value(cfg, f"{sec}.{k}", v)
    return cfg
