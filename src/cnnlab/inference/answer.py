"""Model output → the answer: one shape for ``cnnlab predict --json`` and the server's
``POST /v1/predict`` (its OpenAPI model is ``deploy/schema.py:Prediction``). Numpy only,
no torch: the server runs it on an ONNX export without torch.

Per image::

    {"image": "digit.png",            # the file (or request part) it came from
     "class": "7", "index": 7,         # the top-1 class and its index in the classes
     "probability": 0.98,              # softmax; averaged over the TTA views with TTA
     "top": [{"class": "7", "probability": 0.98}, ...],   # top-k, most probable first
     "inverted": false,                # inverted to light-on-dark first (pixels.maybe_invert)
     "ood": {"method": "energy", "score": 9.1, "threshold": 4.2, "flag": false},
                                       # only for a run with an OOD threshold (ood.json);
                                       # the plain image's score, with TTA too
     "tta": ["original", "flip"]}      # only with TTA: the views averaged over

With TTA, every view of every image goes through the model in one batch
(:func:`with_views`), and :func:`split_views` takes the plain logits and the averaged
probabilities back out.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from cnnlab.analysis.ood import ood_flags
from cnnlab.inference.views import View, apply_view

log = logging.getLogger("cnnlab.inference")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32."""
    z = np.asarray(logits, np.float32)
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def with_views(x01: np.ndarray, views: list[View] | None) -> np.ndarray:
    """Pixels (B, C, S, S) → every view of every image, view by view (the original first):
    (V·B, C, S, S); without views the batch as it is."""
    if not views:
        return x01
    return np.ascontiguousarray(np.concatenate([apply_view(x01, v) for v in views]))


def split_views(logits: np.ndarray, n_views: int) -> tuple[np.ndarray, np.ndarray]:
    """The logits of :func:`with_views`'s batch → (the original images' logits (B, K), the
    softmax probabilities averaged over the views (B, K))."""
    logits = np.asarray(logits, np.float32)
    b = len(logits) // max(n_views, 1)
    if n_views <= 1:
        return logits, softmax(logits)
    probs = softmax(logits).reshape(n_views, b, -1).mean(0)
    return logits[:b], probs


def usable_ood(ood: dict | None) -> dict | None:
    """The stored OOD detector if its numbers are finite; a NaN or infinite threshold (a
    hand-edited ood.json) is dropped with a warning instead of breaking every answer."""
    if not ood:
        return None
    try:
        ok = math.isfinite(float(ood["threshold"])) and math.isfinite(
            float(ood.get("temperature", 1.0))
        )
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        log.warning("ignoring the OOD detector: its threshold is not a finite number")
        return None
    return ood


def predictions(
    logits: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    top_k: int,
    inverted: list[bool],
    names: list[str],
    ood: dict | None = None,
    views: list[View] | None = None,
) -> list[dict]:
    """One answer per image (the shape above) from its plain ``logits`` (for the OOD score)
    and its ``probs`` (averaged over ``views`` with TTA); ``top_k`` at most the classes."""
    k = min(top_k, len(classes))
    scores = None
    if ood:
        sc, fl = ood_flags(np.asarray(logits), ood)
        scores = list(zip(np.asarray(sc).tolist(), np.asarray(fl).tolist(), strict=True))
    tta = [v.name for v in views] if views else None
    # whole-batch numpy, then plain Python: per-row numpy calls cost more than the model
    tops = np.argsort(-probs, axis=1, kind="stable")[:, :k].tolist()
    out = []
    for i, (p, top) in enumerate(zip(np.asarray(probs).tolist(), tops, strict=True)):
        r = {
            "image": names[i],
            "class": classes[top[0]],
            "index": top[0],
            "probability": p[top[0]],
            "top": [{"class": classes[j], "probability": p[j]} for j in top],
            "inverted": bool(inverted[i]),
        }
        if scores is not None:
            r["ood"] = {
                "method": ood["method"],
                "score": float(scores[i][0]),
                "threshold": float(ood["threshold"]),
                "flag": bool(scores[i][1]),
            }
        if tta:
            r["tta"] = list(tta)
        out.append(r)
    return out
