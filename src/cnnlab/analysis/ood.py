"""Out-of-distribution scores from a classifier's logits, and the run's stored threshold.

Scores are "higher = more in-distribution":
- ``msp``: maximum softmax probability (Hendrycks & Gimpel 2017);
- ``energy``: ``T·logsumexp(logits/T)`` (Liu et al. 2020), the negative free energy.

The threshold is chosen so that 95% of the in-distribution test images pass (TPR 0.95)
and stored in ``<run>/ood.json``; ``predict`` and the server flag inputs scoring below it.
A score that separates the sets no better than chance (AUROC ≤ :data:`MIN_AUROC` on an
evaluated set: the out-of-distribution images score *higher*) is not stored — its
threshold would flag in-distribution inputs and pass the others — and the run says so.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError, choices_msg
from cnnlab.runs.files import atomic_write_text

METHODS = ("msp", "energy")
OOD_FILE = "ood.json"
MIN_AUROC = 0.5  # chance: a detector at or below it is not stored


def ood_score(logits, method: str = "energy", temperature: float = 1.0):
    """Higher means more in-distribution: the max softmax probability (msp) or the energy
    score T·logsumexp(z/T). A torch tensor gives a tensor; a numpy array gives an array by
    the same formula (what a server without torch computes)."""
    if method not in METHODS:
        raise CnnlabError(choices_msg("OOD score", method, METHODS))
    if isinstance(logits, np.ndarray):
        z = logits.astype(np.float32) / (1.0 if method == "msp" else temperature)
        top = z.max(1)
        total = np.exp(z - top[:, None]).sum(1)
        if method == "msp":
            return 1.0 / total  # exp(max - max) / Σ exp(z - max)
        return temperature * (top + np.log(total))
    import torch

    logits = logits.float()
    if method == "msp":
        return torch.softmax(logits, 1).max(1).values
    if method == "energy":
        return temperature * torch.logsumexp(logits / temperature, 1)
    raise CnnlabError(choices_msg("OOD score", method, METHODS))


def auroc(in_scores, out_scores) -> float:
    """Probability that a random in-distribution input scores above a random OOD one."""
    import torch

    s = torch.cat([in_scores, out_scores]).double()
    ranks = torch.empty_like(s)
    order = s.argsort()
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.double)
    # average ranks over ties
    uniq, inv, counts = torch.unique(s, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(uniq), dtype=torch.double).index_add_(0, inv, ranks)
    ranks = (sums / counts)[inv]
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))


def threshold_at_tpr(in_scores, tpr: float = 0.95) -> float:
    """Score above which a fraction ``tpr`` of in-distribution inputs lie."""
    import torch

    return float(torch.quantile(in_scores.double(), 1 - tpr))


def fpr_at_tpr(in_scores, out_scores, tpr: float = 0.95) -> float:
    t = threshold_at_tpr(in_scores, tpr)
    return float((out_scores >= t).double().mean())


def refuse_threshold(method: str, evaluated: dict[str, dict]) -> str | None:
    """Why the ``method`` score's threshold must not be stored (None: it may be):
    ``evaluated`` maps each OOD set to its ``{"auroc": ...}`` for that score."""
    bad = {k: v["auroc"] for k, v in evaluated.items() if v["auroc"] <= MIN_AUROC}
    if not bad:
        return None
    sets = ", ".join(f"{k} {a:.3f}" for k, a in bad.items())
    return (
        f"the {method} score separates the test set from the out-of-distribution images no "
        f"better than chance (AUROC {sets}; 0.5 is chance), so its threshold was not stored "
        "and predictions are not flagged"
    )


def save_ood(run_dir: str | os.PathLike, method: str, threshold: float, **extra) -> Path:
    p = Path(run_dir) / OOD_FILE
    atomic_write_text(
        p, json.dumps({"method": method, "threshold": threshold, "tpr": 0.95, **extra}, indent=1)
    )
    return p


def load_ood(run_dir: str | os.PathLike) -> dict | None:
    p = Path(run_dir) / OOD_FILE
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
        t = d.get("threshold")
        if d.get("method") in METHODS and isinstance(t, (int, float)) and math.isfinite(t):
            return d  # a NaN threshold (JSON allows it) would flag nothing and break answers
    except (json.JSONDecodeError, AttributeError):
        pass
    return None


def ood_flags(logits, ood: dict):
    """(scores, is_ood) for a batch of logits (torch or numpy) under a stored threshold."""
    s = ood_score(logits, ood["method"], ood.get("temperature", 1.0))
    return s, s < ood["threshold"]
