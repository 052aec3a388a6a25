"""What every table says about a run, from its ``metrics.jsonl`` lines, defined once.

* **The validation-selected epoch** (``best``): the first epoch with the highest validation
  accuracy — the rule by which the trainer keeps its ``best`` checkpoint. A run without a
  validation split has none (its ``last`` checkpoint is used); nothing is ever chosen on
  the test set.
* **The last epoch** (``last``): the last line.
* **Time**, two figures: *training seconds* — the sum of the epochs' ``seconds``, the
  forward/backward/optimiser steps that ``images/s`` is measured over; *wall seconds* —
  the epochs' wall-clock time: training plus each epoch's validation and test passes
  (``eval_seconds``). Start-up, checkpoint writes and the end-of-run report are in
  neither.
"""

from __future__ import annotations


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def best_epoch(history: list[dict]) -> dict | None:
    """The line of the validation-selected epoch (first highest ``val_acc``), or None."""
    best = None
    for m in history:
        v = m.get("val_acc")
        if _num(v) and (best is None or v > best["val_acc"]):
            best = m
    return best


def run_seconds(history: list[dict]) -> tuple[float, float]:
    """(training seconds, wall seconds) of the epochs in ``history``."""
    train = sum(m["seconds"] for m in history if _num(m.get("seconds")))
    evals = sum(m["eval_seconds"] for m in history if _num(m.get("eval_seconds")))
    return train, train + evals


def time_text(history: list[dict]) -> str:
    """``"8.3 s training, 9.1 s wall"``: the wording of the training line and the report."""
    train, wall = run_seconds(history)
    return f"{train:.1f} s training, {wall:.1f} s wall"


__all__ = ["best_epoch", "run_seconds", "time_text"]
