"""``cnnlab data check``: what is wrong with a dataset before a model is trained on it.

For a folder of images (``PATH/<class>/*`` or ``PATH/{train,val,test}/<class>/*``) or a
built-in dataset:

* **unreadable files** (the folder's files that Pillow cannot decode), listed;
* **class counts** per split and the **imbalance ratio** (largest / smallest class);
* **image sizes and modes** (a folder's files as stored; a built-in set's tensors);
* **exact duplicates**: the same decoded pixels (BLAKE2b of the pixel bytes), within a
  split and *across* splits (a test image that is also a training image), and those
  whose copies carry different labels;
* **near-duplicates**: a 64-bit difference hash (dHash: the signs of horizontal gradients
  on a 9×8 grey thumbnail, Krawetz 2013) within ``near`` bits of each other — every pair
  compared, in chunks; ranked by their mean absolute pixel difference;
* **junk**: files that are not photos of anything — near-constant images, drawings and
  placeholders with a handful of colours, images far smaller than the rest, a format the
  rest of the folder does not use (one GIF among JPEGs), a name that lies about the format,
  animations;
* **likely label errors**: out-of-fold predicted probabilities of a quick model
  (multinomial logistic regression, k-fold, scikit-learn) fed to cleanlab's
  ``find_label_issues`` (confident learning, Northcutt et al. 2021), ranked by
  self-confidence. Its features: for small grey images (digits, Fashion-MNIST) the grey
  pixels at most 28×28; for photos (colour, or larger than :data:`PHOTO_SIDE`) features
  that survive a change of viewpoint — a joint colour histogram, a 4×4 colour layout and
  4×4 cells of gradient-orientation histograms (HOG-like) on a 64×64 thumbnail. The
  model's out-of-fold accuracy comes with a 95 % interval, the chance level and its
  calibration error (the photo model's strength is chosen by inner cross-validation on the
  log loss, so its probabilities are calibrated); below :data:`MIN_PER_CLASS` images in a
  class, or when the interval does not reach halfway from chance to 100 %, no suspects are
  named ("too few images to judge" / "too weak to judge labels"): a weak model's
  disagreements are not label errors. A suspect is an image
  to look at, not a proven error: many are genuinely ambiguous.

:func:`contact_sheet` draws the suspects (and near-duplicate pairs) with their labels.

The work is split by job: :mod:`~cnnlab.analysis.datacheck_scan` reads the images,
:mod:`~cnnlab.analysis.datacheck_dups` finds duplicates, :mod:`~cnnlab.analysis.datacheck_labels`
the likely label errors, :mod:`~cnnlab.analysis.datacheck_report` holds the result; this
module runs them (:func:`check`) and re-exports their public names.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from cnnlab.analysis.datacheck_dups import (
    dhash,
    exact_duplicates,
    near_duplicates,
    near_pairs,
    pixel_mad,
)
from cnnlab.analysis.datacheck_labels import (
    MIN_PER_CLASS,
    label_issues,
    label_model,
    label_verdict,
    oof_accuracy,
    out_of_fold_probs,
    wilson,
)
from cnnlab.analysis.datacheck_report import DataCheck, contact_sheet
from cnnlab.analysis.datacheck_scan import (
    PHOTO,
    PHOTO_SIDE,
    SPLITS,
    THUMB,
    Images,
    colour_thumb,
    folder_layout,
    photo_features,
    scan_dataset,
    scan_folder,
)

__all__ = [
    "FEW_COLOURS",
    "FLAT_STD",
    "MIN_PER_CLASS",
    "PHOTO",
    "PHOTO_SIDE",
    "SPLITS",
    "THUMB",
    "DataCheck",
    "Images",
    "check",
    "class_counts",
    "colour_thumb",
    "contact_sheet",
    "dhash",
    "exact_duplicates",
    "folder_layout",
    "junk",
    "label_issues",
    "label_model",
    "label_verdict",
    "near_duplicates",
    "near_pairs",
    "oof_accuracy",
    "out_of_fold_probs",
    "photo_features",
    "pixel_mad",
    "scan_dataset",
    "scan_folder",
    "wilson",
]

FLAT_STD = 4.0  # grey levels: a thumbnail with less spread is near-constant
FEW_COLOURS = 16  # a photo thumbnail has hundreds of colours; a placeholder a handful

_colour_thumb = colour_thumb  # its former private name, still used by the tests


def class_counts(im: Images) -> dict:
    """{split: {class: count}} and the imbalance ratio (largest / smallest class) per split."""
    out = {}
    for s in dict.fromkeys(im.splits.tolist()):
        n = np.bincount(im.labels[im.splits == s], minlength=len(im.classes))
        counts = {c: int(k) for c, k in zip(im.classes, n, strict=True)}
        ratio = float(n.max() / n.min()) if n.min() > 0 else float("inf")
        out[s] = {
            "counts": counts,
            "imbalance_ratio": ratio,
            "empty": [c for c, k in counts.items() if k == 0],
        }
    return out


def junk(im: Images) -> list[dict]:
    """Files that are probably not photos of anything, each with its reasons: near-constant
    pixels, a handful of colours in a folder of photos, far smaller than the folder's
    images, a format the folder otherwise does not use, an extension that names another
    format, an animation. Built-in datasets (no file information) get the first only."""
    out = []
    std = im.grey.reshape(len(im.grey), -1).std(1)
    info = im.info if len(im.info) == len(im.labels) else [{}] * len(im.labels)
    fmts = Counter(i.get("format") for i in info if i)
    main_fmt, main_n = fmts.most_common(1)[0] if fmts else (None, 0)
    colours = np.median([i["colours"] for i in info if i]) if fmts else 0
    longs = [max(i["w"], i["h"]) for i in info if i]
    med_long = float(np.median(longs)) if longs else 0.0
    ext_fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP",
               ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}  # fmt: skip
    for k, i in enumerate(info):
        why = []
        if std[k] < FLAT_STD:
            why.append(f"near-constant (grey spread {std[k]:.1f} levels)")
        if i:
            if colours > 8 * FEW_COLOURS and i["colours"] <= FEW_COLOURS:
                why.append(f"{i['colours']} colours (a drawing or placeholder, not a photo)")
            if med_long >= 4 * PHOTO_SIDE and max(i["w"], i["h"]) * 4 < med_long:
                why.append(f"{i['w']}×{i['h']} px, the folder's images are ~{med_long:.0f} px")
            if main_n >= 0.9 * len(info) and i["format"] != main_fmt:
                why.append(f"a {i['format']} among {main_fmt} files")
            named = ext_fmt.get(i["ext"])
            if named and i["format"] not in (named, "MPO"):  # MPO: a phone's JPEG
                why.append(f"named {i['ext']} but is {i['format']}")
            if i["frames"] > 1:
                why.append(f"animated ({i['frames']} frames)")
        if why:
            out.append({"id": im.ids[k], "index": k, "split": str(im.splits[k]), "why": why})
    return out


def check(
    im: Images,
    near: int = 2,
    max_mad: float = 5.0,
    folds: int = 3,
    labels: bool = True,
    seed: int = 0,
    progress=None,
) -> DataCheck:
    """Every check on scanned images. ``progress(phase, done, total)`` is told how far."""

    def p(phase):
        return None if progress is None else (lambda d, t: progress(phase, d, t))

    counts = class_counts(im)
    exact = exact_duplicates(im)
    nd, candidates = near_duplicates(im, near, max_mad, progress=p("near-duplicates"))
    issues = acc = verdict = None
    if labels:
        verdict = label_verdict(im, None)  # the floor first: no model on a handful
        if verdict["ok"]:
            probs = out_of_fold_probs(im, folds, seed, progress=p(f"labels ({folds}-fold)"))
            acc, verdict = oof_accuracy(im, probs), label_verdict(im, probs)
            issues = label_issues(im, probs) if verdict["ok"] else None
    settings = {
        "near_bits": near,
        "near_max_mad": max_mad,
        "hash_candidates": candidates,  # pairs within `near` bits before the pixel check
        "folds": folds,
        "seed": seed,
        "label_model": label_model(im),
    }
    return DataCheck(im, counts, exact, nd, issues, acc, settings, junk(im), verdict)
