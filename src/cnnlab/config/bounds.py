"""Bounded YAML: a recipe or a ``--set`` value is refused before it is used when it is
larger than ``MAX_RECIPE_BYTES``, nested deeper than ``MAX_DEPTH`` or expands (through
YAML aliases, a "billion laughs") to more than ``MAX_NODES`` values; and an error message
shows at most a short excerpt of a value (:func:`short`)."""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

from cnnlab.errors import ConfigError

MAX_RECIPE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000


def short(value: Any, limit: int = 80) -> str:
    """A value for an error message: its repr, cut to ``limit`` characters — never the
    full expansion of a huge or alias-bombed value."""
    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxset = 2, 4, 4, 4, 4
    r.maxstring, r.maxlong, r.maxother = limit, limit, limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_bounded(value: Any, where: str) -> Any:
    """Refuse a parsed YAML value nested deeper than MAX_DEPTH or holding more than
    MAX_NODES values once its aliases are expanded. Counted without expanding anything:
    a shared node is sized once and its size reused."""
    sizes: dict[int, int] = {}

    def size(v: Any, depth: int) -> int:
        if not isinstance(v, (dict, list, tuple)):
            return 1
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if id(v) in sizes:
            return sizes[id(v)]
        items = [*v.keys(), *v.values()] if isinstance(v, dict) else v
        n = 1
        for item in items:
            n += size(item, depth + 1)
            if n > MAX_NODES:
                raise ConfigError(
                    f"{where}: expands to more than {MAX_NODES:,} values (YAML aliases?); "
                    "a config is far smaller"
                )
        sizes[id(v)] = n
        return n

    size(value, 0)
    return value


def _flow_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside quotes (a cheap look before parsing)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0
    depth = deepest = 0
    quote = None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def safe_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with the bounds above; any failure is one ConfigError line."""
    if len(text) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters; a recipe is at most 1 MiB")
    if _flow_depth(text) > MAX_DEPTH:  # the YAML scanner is quadratic in this depth
        raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML ({short(str(e).splitlines()[0], 160)})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{where}: invalid value ({short(str(e), 120)})") from None
    return check_bounded(value, where)


def parse_scalar(text: str) -> Any:
    """A ``--set`` value parsed as YAML (``0.01``, ``true``, ``[1, 2]``); text that is not
    YAML stays text."""
    if _flow_depth(text) > MAX_DEPTH:
        raise ConfigError(f"--set value {short(text, 40)} is nested too deeply")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise ConfigError(f"--set value {short(text, 40)} is nested too deeply") from None
    except (ValueError, OverflowError):  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"--set value {short(text, 40)} is not a usable value") from None
    return check_bounded(value, f"--set value {short(text, 40)}")
