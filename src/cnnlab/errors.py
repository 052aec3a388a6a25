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


def close_matches(word: object, candidates) -> list[str]:
    """The candidate (a list of at most one) a mistyped ``word`` most likely meant: similar spelling (difflib), else
    a shared ``_``/``-``/``.`` separated part (``num_train`` → ``train_limit``)."""
    import difflib
    import re

    word, cands = str(word).strip().lower(), [str(c) for c in candidates]
    found = difflib.get_close_matches(word, cands, n=1, cutoff=0.6)
    if found:
        return found
    parts = {p for p in re.split(r"[._-]", word) if len(p) > 2}
    shared = [c for c in cands if parts & set(re.split(r"[._-]", c.lower()))]
    return sorted(shared, key=lambda c: -difflib.SequenceMatcher(None, word, c).ratio())[:1]


def did_you_mean(word: object, candidates) -> str:
    """``"; did you mean 'relu'?"`` (or nothing when no candidate is close)."""
    m = close_matches(word, candidates)
    return f"; did you mean {m[0]!r}?" if m else ""


def choices_msg(kind: str, name: object, valid) -> str:
    """`unknown activation 'rellu'; choose one of: elu, gelu, relu; did you mean 'relu'?`"""
    valid = sorted(valid)
    return f"unknown {kind} {name!r}; choose one of: {', '.join(valid)}" + did_you_mean(name, valid)
