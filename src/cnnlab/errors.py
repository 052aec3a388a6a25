"""User-facing errors: one line saying what was wrong and what to do (CLI exit code 2)."""

from __future__ import annotations


class CnnlabError(Exception):
    """A mistake in the user's input (name, option, file). The CLI prints it in one line
    and exits with code 2; the Python API lets it propagate."""


class DataError(CnnlabError):
    """A dataset file is missing, truncated, corrupt or fails its checksum."""


class ConfigError(CnnlabError):
    """An unknown config key or an invalid value."""


class CheckpointError(CnnlabError):
    """A run directory or checkpoint is missing or unreadable."""


def choices_msg(kind: str, name: object, valid) -> str:
    """`unknown activation 'rellu'; choose one of: elu, gelu, relu`"""
    return f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(valid))}"
