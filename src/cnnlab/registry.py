"""One Registry type shared by models, datasets and named building blocks."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from cnnlab.errors import ConfigError, choices_msg, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → builder. Duplicate names raise; unknown names list the valid ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None, obj: T | None = None):
        def deco(o: T) -> T:
            key = name or getattr(o, "__name__", None)
            if not key:
                raise ValueError(f"{self.kind}: a name is required")
            key = key.replace("_", "-") if name is None else key
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = o
            return o

        if obj is not None:
            return deco(obj)
        return deco

    def get(self, name: str) -> T:
        key = str(name).strip().lower()
        if key not in self._items:
            raise ConfigError(choices_msg(self.kind, name, self._items))
        return self._items[key]

    def __contains__(self, name: str) -> bool:
        return str(name).lower() in self._items

    def names(self, pattern: str | None = None) -> list[str]:
        names = sorted(self._items)
        if pattern:
            names = [n for n in names if fnmatch.fnmatch(n, pattern)]
        return names

    def items(self) -> Iterable[tuple[str, T]]:
        return ((n, self._items[n]) for n in self.names())


def accepted_kwargs(fn: Callable[..., Any]) -> list[str]:
    """Keyword arguments a builder accepts (to validate config keys against)."""
    sig = inspect.signature(fn)
    return [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def check_kwargs(
    kind: str, name: str, fn: Callable[..., Any], kwargs: dict, skip=(), also=()
) -> None:
    """Every key of ``kwargs`` is an option of ``fn``; else a ConfigError suggesting the
    close match among the options and ``also`` (other keys the user may have meant)."""
    valid = [k for k in accepted_kwargs(fn) if k not in skip]
    for k in kwargs:
        if k not in valid:
            raise ConfigError(
                f"{kind} {name!r} has no option {k!r}; valid options: {', '.join(sorted(valid))}"
                + did_you_mean(k, [*valid, *also])
            )
