"""Likely label errors for ``cnnlab data check``: out-of-fold probabilities of a quick
model (logistic regression, scikit-learn) fed to cleanlab, and the verdict on whether that
model is strong enough to judge labels at all."""

from __future__ import annotations

import warnings

import numpy as np

from cnnlab.analysis.datacheck_scan import Images
from cnnlab.errors import DataError

MIN_PER_CLASS = 20  # fewer images in a class: too few to judge its labels


def label_model(im: Images) -> str:
    """What the quick label model is fitted on, in words."""
    if im.feats is not None:
        return (
            "logistic regression on photo features (colour histogram, colour layout, "
            "gradient orientations; 64×64 thumbnails; strength by inner CV; out-of-fold)"
        )
    return "logistic regression on 28×28 grey pixels (out-of-fold)"


def out_of_fold_probs(im: Images, folds: int = 3, seed: int = 0, progress=None) -> np.ndarray:
    """(N, classes) predicted probabilities, each image's from a model that did not see it:
    multinomial logistic regression on its photo features (standardised) or, for small
    grey images, its grey pixels; stratified k-fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    if im.feats is not None:
        x = im.feats.astype(np.float32)
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    else:
        x = im.grey.reshape(len(im.grey), -1).astype(np.float32) / 255.0
        x -= x.mean(0)
    y = im.labels
    k = len(im.classes)
    per_class = np.bincount(y, minlength=k)
    folds = int(min(folds, per_class[per_class > 0].min()))
    if folds < 2:
        raise DataError("label check: every class needs ≥ 2 images (use --no-labels to skip it)")
    probs = np.zeros((len(y), k))
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for f, (tr, te) in enumerate(skf.split(x, y)):
        if im.feats is not None:  # few images, many features: the strength by inner CV on
            # the log loss, so the probabilities cleanlab reads are calibrated, not overfit
            from sklearn.linear_model import LogisticRegressionCV

            inner = int(min(3, np.bincount(y[tr]).min()))
            model = LogisticRegressionCV(
                Cs=[1e-3, 1e-2, 1e-1, 1.0], cv=inner, scoring="neg_log_loss", max_iter=500
            )
            with warnings.catch_warnings():  # scikit-learn 1.9's notice of renamed attributes
                warnings.simplefilter("ignore", FutureWarning)
                model.fit(x[tr], y[tr])
            probs[np.ix_(te, model.classes_)] = model.predict_proba(x[te])
            if progress is not None:
                progress(f + 1, folds)
            continue
        model = LogisticRegression(max_iter=200, C=0.1)
        model.fit(x[tr], y[tr])
        probs[np.ix_(te, model.classes_)] = model.predict_proba(x[te])
        if progress is not None:
            progress(f + 1, folds)
    return probs


def label_issues(im: Images, probs: np.ndarray) -> list[dict]:
    """cleanlab's likely label errors, most suspect first."""
    from cleanlab.filter import find_label_issues

    idx = find_label_issues(im.labels, probs, return_indices_ranked_by="self_confidence")
    return [
        {
            "id": im.ids[i],
            "index": int(i),
            "split": str(im.splits[i]),
            "given": im.classes[im.labels[i]],
            "predicted": im.classes[int(probs[i].argmax())],
            "p_given": round(float(probs[i, im.labels[i]]), 4),
            "p_predicted": round(float(probs[i].max()), 4),
        }
        for i in idx.tolist()
    ]


def oof_accuracy(im: Images, probs: np.ndarray) -> float:
    return float((probs.argmax(1) == im.labels).mean())


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / d
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return float(mid - half), float(mid + half)


def label_verdict(im: Images, probs: np.ndarray | None) -> dict:
    """Whether the quick model can judge labels: ``ok`` and, if not, ``why`` — too few
    images in a class, or an out-of-fold accuracy whose 95 % interval does not reach
    halfway from the chance level (the largest class's share) to 100 % (on two classes a
    model right 62 % of the time disagrees with a third of the labels: those are its
    errors, not the labels') — with the accuracy, its interval, chance and the expected
    calibration error of the out-of-fold probabilities."""
    counts = np.bincount(im.labels, minlength=len(im.classes))
    present = counts[counts > 0]
    chance = float(present.max() / present.sum())
    if present.min() < MIN_PER_CLASS:
        small = im.classes[int(np.flatnonzero(counts == present.min())[0])]
        return {
            "ok": False,
            "chance": round(chance, 4),
            "why": f"too few images to judge: class {small!r} has {int(present.min())} "
            f"(at least {MIN_PER_CLASS} per class are needed)",
        }
    if probs is None:  # the floor is met: the model may be fitted
        return {"ok": True, "chance": round(chance, 4)}
    import torch

    from cnnlab.metrics import expected_calibration_error

    hits = int((probs.argmax(1) == im.labels).sum())
    lo, hi = wilson(hits, len(im.labels))
    ece, _ = expected_calibration_error(torch.from_numpy(probs), torch.from_numpy(im.labels))
    need = chance + (1 - chance) / 2  # the model must remove half of chance's errors
    out = {
        "ok": lo >= need,
        "accuracy": round(hits / len(im.labels), 4),
        "interval": [round(lo, 4), round(hi, 4)],
        "chance": round(chance, 4),
        "ece": round(float(ece), 4),
    }
    if not out["ok"]:
        verdict = "does no better than chance" if lo <= chance else "is too weak to judge labels"
        out["why"] = (
            f"the quick model {verdict} ({100 * hits / len(im.labels):.1f} % out of fold, "
            f"95 % interval {100 * lo:.1f}-{100 * hi:.1f} %, chance {100 * chance:.1f} %; "
            f"{100 * need:.0f} % needed): its disagreements would be noise, so no suspects "
            "are named"
        )
    return out
