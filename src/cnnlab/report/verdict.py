"""The generalisation verdict (``verdict(history)``), on the held-out curve (validation when
the run has a validation split, else test):

* **overfitting from epoch k**: the held-out loss reached its minimum at epoch k-1 < the
  last epoch and the last held-out loss is ≥ 10 % above it, while train accuracy exceeds
  held-out accuracy by ≥ 2 points at the end;
* **generalisation gap**: train − held-out accuracy ≥ 5 points, the held-out loss not
  (yet) rising;
* **still learning**: train accuracy rose by > 0.5 points in the last epoch and the gap is
  < 2 points (more epochs would help);
* **not learning**: train and held-out accuracy both < 1.5 × chance (1/classes);
* **no verdict** when there is too little to judge by: fewer than 10 training images per
  class, a held-out set under 100 images, or train or held-out accuracy < 1.5 × chance;
* **good fit** otherwise.
"""

from __future__ import annotations

import numpy as np

OVERFIT_LOSS_RISE = 1.10
OVERFIT_GAP = 0.02
LARGE_GAP = 0.05
STILL_LEARNING = 0.005
MIN_TRAIN_PER_CLASS = 10  # a verdict needs at least this many training images per class
MIN_HELD_OUT = 100  # ... and a held-out set at least this large


def verdict(
    history: list[dict],
    num_classes: int | None = None,
    n_train: int | None = None,
    n_held: int | None = None,
) -> dict:
    """Classify the learning curves (rule in the module docstring); ``n_train`` and
    ``n_held`` (images trained on / in the held-out set), where known, must be enough to
    judge by."""
    if not history:
        return {"kind": "empty", "text": "no finished epoch"}
    held = "val" if "val_acc" in history[0] else "test"
    last = history[-1]
    tr, te = last["train_acc"], last[f"{held}_acc"]
    gap = tr - te
    losses = [m[f"{held}_loss"] for m in history]
    i_min = int(np.argmin(losses))
    best_epoch = history[i_min]["epoch"]
    base = {
        "held_out": held,
        "train_acc": tr,
        "held_acc": te,
        "gap": gap,
        "best_loss_epoch": best_epoch,
    }
    nums = f"train {tr:.1%}, {held} {te:.1%}"
    if num_classes and max(tr, te) < 1.5 / num_classes:
        return {
            **base,
            "kind": "not_learning",
            "text": f"not learning: {nums}, near chance ({1 / num_classes:.0%}) — check the "
            "learning rate and the gradient flow (vanishing gradients?)",
        }
    few = []
    if n_train is not None and num_classes and n_train < MIN_TRAIN_PER_CLASS * num_classes:
        few.append(f"it trained on {n_train:,} images (fewer than {MIN_TRAIN_PER_CLASS} per class)")
    if n_held is not None and n_held < MIN_HELD_OUT:
        few.append(f"its {held} set holds {n_held:,} images (fewer than {MIN_HELD_OUT})")
    if num_classes and min(tr, te) < 1.5 / num_classes:
        few.append(f"an accuracy near chance ({1 / num_classes:.0%})")
    if few:
        return {
            **base,
            "kind": "no_verdict",
            "text": f"no verdict: {nums}, but " + " and ".join(few) + " — too little to "
            "judge the fit by; train on more images for more epochs",
        }
    if (
        i_min < len(history) - 1
        and losses[-1] >= OVERFIT_LOSS_RISE * losses[i_min]
        and gap >= OVERFIT_GAP
    ):
        start = history[i_min + 1]["epoch"]
        return {
            **base,
            "kind": "overfitting",
            "from_epoch": start,
            "text": f"overfitting from epoch {start}: {nums} ({held} loss "
            f"{losses[-1]:.3f} vs its minimum {losses[i_min]:.3f} at epoch {best_epoch})",
        }
    if gap >= LARGE_GAP:
        return {
            **base,
            "kind": "gap",
            "text": f"generalisation gap of {gap * 100:.1f} points: {nums}; the {held} loss is "
            "not rising yet — more data, augmentation or regularisation would help",
        }
    if len(history) >= 2 and tr - history[-2]["train_acc"] > STILL_LEARNING and gap < OVERFIT_GAP:
        return {
            **base,
            "kind": "still_learning",
            "text": f"still learning: {nums}; train accuracy rose "
            f"{(tr - history[-2]['train_acc']) * 100:.1f} points in the last epoch — "
            "more epochs would help",
        }
    return {**base, "kind": "good_fit", "text": f"good fit: {nums} (gap {gap * 100:.1f} points)"}
