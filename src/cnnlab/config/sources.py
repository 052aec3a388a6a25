"""Where a config's values come from, after the defaults: a recipe (a YAML file found by
path or a shipped recipe found by name), then ``--set section.key=value`` overrides."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from cnnlab.config.bounds import parse_scalar, safe_yaml, short
from cnnlab.config.schema import Config, from_dict, set_value
from cnnlab.errors import ConfigError


def apply_overrides(cfg: Config, overrides: list[str] | dict | None) -> Config:
    if not overrides:
        return cfg
    items = overrides.items() if isinstance(overrides, dict) else None
    if items is None:
        parsed = []
        for o in overrides:
            if "=" not in o:
                raise ConfigError(
                    f"--set needs key=value, got {short(o)} (e.g. --set optim.lr=0.01)"
                )
            k, v = o.split("=", 1)
            parsed.append((k, parse_scalar(v)))
        items = parsed
    for k, v in items:
        set_value(cfg, k, v)
    return cfg


def shipped_recipes() -> list[str]:
    """Names of the recipes that ship inside the package (``cnnlab/recipes/*.yaml``)."""
    root = resources.files("cnnlab") / "recipes"
    return sorted(e.name[:-5] for e in root.iterdir() if e.name.endswith(".yaml"))


def find_recipe(path: str | os.PathLike):
    """A recipe file by path (``my.yaml``, ``recipes/lenet5-mnist.yaml``) or by the name of
    a shipped recipe (``lenet5-mnist``, with or without ``.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.suffix and p.with_name(p.name + ".yaml").is_file():
        return p.with_name(p.name + ".yaml")
    name = p.name if p.suffix else p.name + ".yaml"
    shipped = resources.files("cnnlab") / "recipes" / name
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"recipe {str(path)!r} not found: give a YAML file's path or a shipped recipe's name "
        f"({', '.join(shipped_recipes())})"
    )


def load_recipe(path: str | os.PathLike) -> Config:
    """A config from a recipe (see :func:`find_recipe`) on top of the defaults."""
    p = find_recipe(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {p}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"recipe {p}: cannot read it ({e.strerror})") from None
    return from_dict(safe_yaml(text, f"recipe {p}"))
