"""A sweep's search space: a YAML mapping of config keys to distributions (the format in
``studies.sweep``), checked against the config, sampled per trial, and the recipe's own
values when they lie inside it."""

from __future__ import annotations

import os

import yaml

from cnnlab.config import Config, find_recipe, get_value, set_value
from cnnlab.errors import ConfigError
from cnnlab.models.base import option_default

TYPES = ("float", "int", "categorical")


def load_space(path: str | os.PathLike) -> dict[str, dict]:
    """A search space by path or by a shipped name (``space-lenet5``), as recipes are found."""
    try:
        p = find_recipe(path)
    except ConfigError:
        raise ConfigError(f"search space {str(path)!r} not found") from None
    try:
        space = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({str(e).splitlines()[0]})") from None
    return check_space(space, str(p))


def check_space(space, where: str = "search space") -> dict[str, dict]:
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: expected a mapping of config keys to distributions")
    probe = Config()
    for key, spec in space.items():
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise ConfigError(
                f"{where}: {key}: needs type one of {', '.join(TYPES)} "
                "(e.g. {type: float, low: 1e-4, high: 1e-2, log: true})"
            )
        t = spec["type"]
        if t == "categorical":
            ch = spec.get("choices")
            if not isinstance(ch, list) or not ch:
                raise ConfigError(f"{where}: {key}: categorical needs a non-empty choices list")
            sample = ch[0]
        else:
            if "low" not in spec or "high" not in spec:
                raise ConfigError(f"{where}: {key}: {t} needs low and high")
            try:
                lo, hi = float(spec["low"]), float(spec["high"])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: {key}: low/high must be numbers") from None
            if not lo < hi or (spec.get("log") and lo <= 0):
                raise ConfigError(f"{where}: {key}: needs low < high (and low > 0 with log)")
            sample = int(lo) if t == "int" else lo
        set_value(probe, key, sample)  # unknown keys fail here, with the valid ones listed
    return space


def suggest(trial, space: dict[str, dict]) -> dict:
    out = {}
    for key, s in space.items():
        t = s["type"]
        if t == "float":
            out[key] = trial.suggest_float(
                key, float(s["low"]), float(s["high"]), log=bool(s.get("log", False))
            )
        elif t == "int":
            out[key] = trial.suggest_int(
                key,
                int(s["low"]),
                int(s["high"]),
                step=int(s.get("step", 1)),
                log=bool(s.get("log", False)),
            )
        else:
            out[key] = trial.suggest_categorical(key, s["choices"])
    return out


def baseline_params(base: Config, space: dict[str, dict]) -> dict | None:
    """The recipe's own values for the space's keys, when every one lies inside the space
    (then the sweep tries the recipe first, so its best is never worse than the recipe
    under the sweep's own budget); None when one lies outside."""
    out = {}
    for key, s in space.items():
        v = get_value(base, key)
        if v is None and key.startswith("model."):  # unset: the builder's default
            v = option_default(base.model.name, key.split(".")[-1])
        if s["type"] == "categorical":
            if v not in s["choices"]:
                return None
        else:
            try:
                x = float(v)
            except (TypeError, ValueError):
                return None
            if not float(s["low"]) <= x <= float(s["high"]):
                return None
            v = int(v) if s["type"] == "int" else x
        out[key] = v
    return out
