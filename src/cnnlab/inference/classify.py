"""Classifying images with a trained run (``cnnlab predict``, ``cnnlab.predict``): the
server's path too — the same pixels (:mod:`~cnnlab.inference.pixels`), the same model on
[0, 1] pixels (:class:`~cnnlab.inference.model.PixelModel`), the same TTA views and the
same answer (:mod:`~cnnlab.inference.answer`)."""

from __future__ import annotations

import os

import numpy as np

from cnnlab.analysis.ood import load_ood
from cnnlab.errors import CnnlabError
from cnnlab.inference.answer import predictions, split_views, usable_ood, with_views
from cnnlab.inference.model import numpy_logits, pixel_model
from cnnlab.inference.pixels import norm_stats, prepare, read_image
from cnnlab.inference.views import dataset_augment, tta_views
from cnnlab.progress import track
from cnnlab.runs.load import run_dir_of
from cnnlab.runtime.device import resolve_device

BATCH = 256  # model inputs per forward pass (images × TTA views)


def predict(
    target,
    images,
    top: int = 3,
    device: str = "auto",
    invert: str = "auto",
    which: str = "best",
    errors: str = "raise",
    tta: bool = False,
) -> list[dict]:
    """Classify image files (or uint8 arrays (C, H, W)) with a trained run: one answer per
    image, in the shape :mod:`cnnlab.inference.answer` describes (the server's too).

    ``invert='auto'``: a gray image on a light background is inverted when the model was
    trained on light-on-dark images (MNIST, Fashion-MNIST), as a photo of ink on paper is.
    ``errors='report'``: an unreadable file gives ``{"image": ..., "error": ...}`` in its
    place and the others are still answered (``'raise'``: the first one is an error).
    ``tta=True``: the probabilities are averaged over the flips and shifts the run was
    trained with (:func:`~cnnlab.inference.views.tta_views`; each answer names them under
    ``"tta"``); the out-of-distribution score stays the plain image's.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise CnnlabError(f"--top must be a whole number ≥ 1, got {top!r}")
    if errors not in ("raise", "report"):
        raise CnnlabError(f"errors must be 'raise' or 'report', got {errors!r}")
    dev = resolve_device(device)
    model, meta = pixel_model(target, which, dev)
    views = tta_views(meta, dataset_augment(meta)) if tta else None
    out, arrs, names = _read(images, meta["input"]["channels"], meta["input"]["size"], errors)
    if not arrs:
        return out
    x01, flags = prepare(arrs, norm_stats(meta)[0], invert)
    n = len(views) if views else 1
    bs = max(1, BATCH // n)
    logits, probs = [], []
    for b in track(range(0, len(x01), bs), "classifying images"):
        plain, p = split_views(numpy_logits(model, with_views(x01[b : b + bs], views), dev), n)
        logits.append(plain)
        probs.append(p)
    ood = usable_ood(load_ood(run_dir_of(target)))  # stored by `cnnlab robustness RUN --ood`
    logits, probs = np.concatenate(logits), np.concatenate(probs)
    answers = iter(predictions(logits, probs, meta["classes"], top, flags, names, ood, views))
    return [r if "error" in r else next(answers) for r in out]


def _read(images, channels: int, size: int, errors: str):
    """(a placeholder or an error entry per image, the decoded uint8 images, their names)."""
    out: list[dict] = []
    arrs, names = [], []
    for i, im in enumerate(images):
        name = str(im) if isinstance(im, (str, os.PathLike)) else f"#{i}"
        try:
            arrs.append(read_image(im, channels, size))
        except CnnlabError as e:
            if errors == "raise":
                raise
            out.append({"image": name, "error": str(e)})
            continue
        names.append(name)
        out.append({"image": name})
    return out, arrs, names
