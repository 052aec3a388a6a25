"""Which epoch's weights are the best checkpoint (``train.select``).

``val``: the epoch's validation accuracy. ``smooth``: its mean over the last
:data:`WINDOW` epochs — on a small validation set one image moves a single epoch's
accuracy by whole points, so a maximum over epochs picks the luckiest epoch. The smoothed
score exists only once a full window has been seen (or all epochs, in a shorter run), and
is recorded in the epoch's metrics as ``val_acc_smooth``.
"""

from __future__ import annotations

WINDOW = 3


def selection_score(select: str, history: list[dict], epochs: int, monitor: str = "val_acc"):
    """The score the last epoch of ``history`` is ranked by (higher is better), or None
    when it has none (no validation split, or a smoothing window not yet full)."""
    if not history or history[-1].get(monitor) is None:
        return None
    if select != "smooth":
        return history[-1][monitor]
    w = min(WINDOW, max(1, epochs))
    recent = [m.get(monitor) for m in history[-w:]]
    if len(recent) < w or any(v is None for v in recent):
        return None
    return sum(recent) / w
