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
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.data.folder import printable
from cnnlab.errors import DataError

SPLITS = ("train", "val", "test")
THUMB = 28  # the side images are reduced to for hashing, the model and the contact sheet
PHOTO = 64  # the colour thumbnail the photo features are computed on
PHOTO_SIDE = 64  # images larger than this (or in colour) get the photo features
MIN_PER_CLASS = 20  # fewer images in a class: too few to judge its labels
FLAT_STD = 4.0  # grey levels: a thumbnail with less spread is near-constant
FEW_COLOURS = 16  # a photo thumbnail has hundreds of colours; a placeholder a handful


@dataclass
class Images:
    """Every image of a dataset, reduced to what the checks need."""

    name: str
    classes: list[str]
    labels: np.ndarray  # (N,) int
    splits: np.ndarray  # (N,) str: train / val / test / all
    ids: list[str]  # a file's path relative to the root, or "<split>#<index>"
    grey: np.ndarray  # (N, THUMB, THUMB) uint8, for the hash, the model and the sheet
    digests: list[str]  # BLAKE2b of the decoded pixels at full size
    sizes: Counter = field(default_factory=Counter)  # "W×H" → count
    modes: Counter = field(default_factory=Counter)  # Pillow mode → count
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    feats: np.ndarray | None = None  # (N, F) photo features (None: small grey images)
    info: list[dict] = field(default_factory=list)  # per image: format, w, h, frames, colours


def _digest(a: np.ndarray) -> str:
    return hashlib.blake2b(
        np.ascontiguousarray(a).tobytes() + str(a.shape).encode(), digest_size=16
    ).hexdigest()


def _thumb(img) -> np.ndarray:
    """A Pillow image → THUMB×THUMB grey uint8 (area resampling)."""
    from PIL import Image

    g = img.convert("L")
    if g.size != (THUMB, THUMB):
        g = g.resize((THUMB, THUMB), Image.Resampling.BOX)
    return np.asarray(g, dtype=np.uint8)


def _colour_thumb(img) -> np.ndarray:
    """A Pillow image → PHOTO×PHOTO RGB uint8 (area resampling; transparency on white)."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return np.asarray(
        img.convert("RGB").resize((PHOTO, PHOTO), Image.Resampling.BOX), dtype=np.uint8
    )


def photo_features(rgb: np.ndarray) -> np.ndarray:
    """(N, PHOTO, PHOTO, 3) uint8 → (N, 240) float32: a 4×4×4 joint colour histogram (64),
    the mean colour of 4×4 cells (48) and, per 4×4 cell, an 8-bin histogram of gradient
    orientations weighted by magnitude and L2-normalised (128; HOG-like, Dalal & Triggs
    2005). What an object is made of and how its edges run, not where its pixels sit."""
    x = rgb.astype(np.float32) / 255.0
    n = len(x)
    q = np.minimum((x * 4).astype(np.int64), 3)
    code = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
    hist = np.zeros((n, 64), np.float32)
    np.add.at(hist, (np.repeat(np.arange(n), PHOTO * PHOTO), code.reshape(-1)), 1.0)
    hist /= PHOTO * PHOTO
    c = PHOTO // 4
    layout = x.reshape(n, 4, c, 4, c, 3).mean((2, 4)).reshape(n, 48)
    g = x.mean(-1)
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
    gy[:, 1:-1] = g[:, 2:] - g[:, :-2]
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned orientation
    b = np.minimum((ang / np.pi * 8).astype(np.int64), 7)
    cell = (np.arange(PHOTO) // c)[:, None] * 4 + (np.arange(PHOTO) // c)[None, :]
    idx = cell[None] * 8 + b  # (N, H, W) → one of 16 cells × 8 bins
    hog = np.zeros((n, 128), np.float32)
    np.add.at(hog, (np.repeat(np.arange(n), PHOTO * PHOTO), idx.reshape(-1)), mag.reshape(-1))
    hog = hog.reshape(n, 16, 8)
    hog /= np.linalg.norm(hog, axis=2, keepdims=True) + 1e-6
    return np.concatenate([hist, layout, hog.reshape(n, 128)], 1).astype(np.float32)


def _class_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_layout(root: Path) -> dict[str, Path]:
    """``{split: folder of class sub-folders}``: ``train``/``val``/``test`` where the
    folder has them, else ``{"all": root}``. A mistake in the layout is a DataError."""
    if not root.exists():
        raise DataError(f"{str(root)!r} not found: give a folder of class sub-folders or a dataset")
    if not root.is_dir():
        raise DataError(f"{str(root)!r} is a file; give a folder of class sub-folders")
    subs = {p.name for p in _class_dirs(root)}
    if "train" in subs:
        layout = {s: root / s for s in SPLITS if s in subs}
    else:
        layout = {"all": root}
    for split, d in layout.items():
        classes = _class_dirs(d)
        stray = [p.name for p in d.iterdir() if p.is_file() and not p.name.startswith(".")]
        if not classes:
            raise DataError(
                f"{d} has no class sub-folders: put the images in {d}/<class>/ (one folder "
                "per class)"
            )
        if stray:
            raise DataError(
                f"{d} holds files next to its class folders (e.g. {stray[0]!r}): every image "
                "goes inside a <class>/ folder"
            )
        if split in ("all", "train") and len(classes) < 2:
            raise DataError(f"{d} has one class folder ({classes[0].name}); a classifier needs ≥ 2")
    return layout


def _files(d: Path) -> list[Path]:
    """The files under a class folder (sub-folders too; links to folders not followed,
    so a symlink loop cannot recurse)."""
    out = []
    for base, dirs, names in os.walk(d, followlinks=False):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out += [Path(base) / n for n in sorted(names) if not n.startswith(".")]
    return out


def scan_folder(root: str | os.PathLike, limit: int | None = None, progress=None) -> Images:
    """Decode every file of a folder (the first ``limit`` per split, when given)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    layout = folder_layout(root)
    classes = sorted({p.name for d in layout.values() for p in _class_dirs(d)})
    todo = []
    for split, d in layout.items():
        files = [(f, c.name) for c in _class_dirs(d) for f in _files(c)]
        if limit:
            files = _spread(files, limit)
        todo += [(split, f, c) for f, c in files]
    im = Images(root.name, classes, np.zeros(0, int), np.zeros(0, str), [], np.zeros(0), [])
    labels, splits, grey, colour = [], [], [], []
    for k, (split, f, c) in enumerate(todo):
        rel = printable(str(f.relative_to(root)))
        try:
            if not stat.S_ISREG(os.stat(f).st_mode):  # a FIFO named x.png: open() never returns
                im.unreadable.append((rel, "not a regular file"))
                continue
            with Image.open(f) as img:
                img.load()
                im.sizes[f"{img.width}×{img.height}"] += 1
                im.modes[img.mode] += 1
                im.digests.append(_digest(np.asarray(img)))
                grey.append(_thumb(img))
                colour.append(_colour_thumb(img))
                im.info.append(
                    {
                        "format": img.format or "?",
                        "w": img.width,
                        "h": img.height,
                        "frames": int(getattr(img, "n_frames", 1) or 1),
                        "colours": len(np.unique(colour[-1].reshape(-1, 3), axis=0)),
                        "ext": f.suffix.lower(),
                    }
                )
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            im.unreadable.append((rel, type(e).__name__))
            continue
        finally:
            if progress is not None:
                progress(k + 1, len(todo))
        labels.append(classes.index(c))
        splits.append(split)
        im.ids.append(rel)
    if not grey:
        raise DataError(f"{root}: no readable image in it")
    im.labels, im.splits, im.grey = np.array(labels), np.array(splits), np.stack(grey)
    sides = [min(i["w"], i["h"]) for i in im.info]
    colourful = any(m not in ("1", "L", "LA", "I", "I;16", "F") for m in im.modes)
    if colourful or np.median(sides) > PHOTO_SIDE:
        im.feats = photo_features(np.stack(colour))
    return im


def _spread(files: list, limit: int) -> list:
    """``limit`` files taken evenly across the (sorted) list, so every class keeps some."""
    if len(files) <= limit:
        return files
    idx = np.linspace(0, len(files) - 1, limit).round().astype(int)
    return [files[i] for i in idx]


def scan_dataset(ds, limit: int | None = None) -> Images:
    """A loaded :class:`~cnnlab.data.datasets.Dataset` (train and test tensors)."""
    import torch

    parts = []
    for split, x, y in (("train", ds.train_x, ds.train_y), ("test", ds.test_x, ds.test_y)):
        idx = np.arange(len(y))
        if limit and len(idx) > limit:
            idx = np.linspace(0, len(idx) - 1, limit).round().astype(int)
        parts.append((split, x[torch.from_numpy(idx)], y[torch.from_numpy(idx)], idx))
    labels = np.concatenate([y.numpy() for _, _, y, _ in parts]).astype(int)
    splits = np.concatenate([np.full(len(i), s) for s, _, _, i in parts])
    ids = [f"{s}#{i}" for s, _, _, idx in parts for i in idx]
    xs = [x for _, x, _, _ in parts]
    digests = [_digest(a) for x in xs for a in x.numpy()]
    grey = np.concatenate([_grey_tensor(x) for x in xs])
    c, h, w = xs[0].shape[1:]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(c, f"{c} channels")
    feats = None
    if c == 3 or min(h, w) > PHOTO_SIDE:
        feats = np.concatenate([_features_of_tensor(x) for x in xs])
    return Images(
        ds.name,
        list(ds.classes),
        labels,
        splits,
        ids,
        grey,
        digests,
        Counter({f"{w}×{h}": len(labels)}),
        Counter({mode: len(labels)}),
        feats=feats,
    )


def _features_of_tensor(x, chunk: int = 1024) -> np.ndarray:
    """uint8 (N, C, H, W) → photo features, in chunks (a 64×64 float copy of 60,000
    images would not fit in memory at once)."""
    import torch.nn.functional as F

    out = []
    for a in range(0, len(x), chunk):
        t = x[a : a + chunk].float()
        t = t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t[:, :3]
        t = F.interpolate(
            t, size=(PHOTO, PHOTO), mode="area" if t.shape[-1] >= PHOTO else "bilinear"
        )
        rgb = t.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        out.append(photo_features(rgb))
    return np.concatenate(out)


def _grey_tensor(x) -> np.ndarray:
    """uint8 (N, C, H, W) → (N, THUMB, THUMB) grey uint8 (channel mean; area resize)."""
    import torch
    import torch.nn.functional as F

    g = x.float().mean(1, keepdim=True)
    if g.shape[-1] != THUMB or g.shape[-2] != THUMB:
        g = (
            F.adaptive_avg_pool2d(g, THUMB)
            if min(g.shape[-2:]) >= THUMB
            else F.interpolate(g, size=(THUMB, THUMB), mode="bilinear", align_corners=False)
        )
    return g[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


# --- the checks --------------------------------------------------------------------------


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


def exact_duplicates(im: Images) -> list[dict]:
    """Groups of images with identical pixels: their ids, splits and labels."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(im.digests):
        groups.setdefault(d, []).append(i)
    out = []
    for members in groups.values():
        if len(members) > 1:
            out.append(
                {
                    "ids": [im.ids[i] for i in members],
                    "splits": sorted({str(im.splits[i]) for i in members}),
                    "labels": sorted({im.classes[im.labels[i]] for i in members}),
                }
            )
    return out


def dhash(grey: np.ndarray) -> np.ndarray:
    """64-bit difference hashes (uint64) of (N, H, W) grey images."""
    import torch
    import torch.nn.functional as F

    g = torch.from_numpy(grey).float()[:, None]
    small = F.adaptive_avg_pool2d(g, (8, 9))[:, 0]
    bits = (small[:, :, 1:] > small[:, :, :-1]).reshape(len(grey), 64).numpy()
    packed = np.packbits(bits.astype(np.uint8), axis=1)  # (N, 8) bytes, big-endian
    return packed.view(">u8")[:, 0].astype(np.uint64)


def near_pairs(hashes: np.ndarray, near: int, chunk: int = 256, progress=None) -> np.ndarray:
    """Every pair (i < j) whose hashes differ in at most ``near`` bits: (P, 3) of i, j, d."""
    n = len(hashes)
    found = []
    for a in range(0, n, chunk):
        block = hashes[a : a + chunk]
        d = np.bitwise_count(block[:, None] ^ hashes[None, a:])  # only j ≥ a
        i, j = np.nonzero(d <= near)
        keep = j + a > i + a  # upper triangle
        found.append(np.stack([i[keep] + a, j[keep] + a, d[i[keep], j[keep]]], 1))
        if progress is not None:
            progress(min(a + chunk, n), n)
    return np.concatenate(found) if found else np.zeros((0, 3), int)


def pixel_mad(grey: np.ndarray, pairs: np.ndarray, chunk: int = 50_000) -> np.ndarray:
    """Mean absolute grey-level difference (0-255) of each pair's thumbnails."""
    out = np.zeros(len(pairs))
    for a in range(0, len(pairs), chunk):
        i, j = pairs[a : a + chunk, 0], pairs[a : a + chunk, 1]
        out[a : a + chunk] = np.abs(grey[i].astype(np.int16) - grey[j]).mean((1, 2))
    return out


def near_duplicates(
    im: Images, near: int = 2, max_mad: float = 5.0, progress=None
) -> tuple[list[dict], int]:
    """Pairs of different images (exact copies are reported as such) whose hashes are
    within ``near`` bits *and* whose 28×28 grey thumbnails differ by at most ``max_mad``
    grey levels on average (the hash alone is coarse on small images with a plain
    background); closest first. Returns (pairs, how many pairs the hash alone matched)."""
    pairs = near_pairs(dhash(im.grey), near, progress=progress)
    mad = pixel_mad(im.grey, pairs)
    keep = mad <= max_mad
    out = []
    for (i, j, d), m in zip(pairs[keep].tolist(), mad[keep].tolist(), strict=True):
        if im.digests[i] == im.digests[j]:
            continue
        out.append(
            {
                "a": im.ids[i],
                "b": im.ids[j],
                "ia": i,
                "ib": j,
                "bits": int(d),
                "pixel_mad": round(m, 2),
                "splits": f"{im.splits[i]}/{im.splits[j]}",
                "labels": [im.classes[im.labels[i]], im.classes[im.labels[j]]],
            }
        )
    return sorted(out, key=lambda r: (r["pixel_mad"], r["bits"])), len(pairs)


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


# --- the contact sheet ---------------------------------------------------------------


def contact_sheet(
    im: Images, tiles: list[tuple[list[int], str]], title: str, cols: int = 8, scale: int = 3
) -> bytes:
    """A PNG grid: each tile shows its images side by side (upscaled ``scale``×) above a
    caption."""
    import io

    from PIL import Image, ImageDraw

    side = THUMB * scale
    per = max(len(t[0]) for t in tiles) if tiles else 1
    tw, th = per * side + (per - 1) * 2, side + 37
    cols = max(1, min(cols, len(tiles)))
    rows = max(1, -(-len(tiles) // cols))
    sheet = Image.new("RGB", (cols * (tw + 8) + 8, rows * (th + 8) + 30), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 8), title, fill="black")
    for k, (members, caption) in enumerate(tiles):
        x0, y0 = 8 + (k % cols) * (tw + 8), 30 + (k // cols) * (th + 8)
        for m, i in enumerate(members):
            g = Image.fromarray(im.grey[i]).resize((side, side), Image.Resampling.NEAREST)
            sheet.paste(g.convert("RGB"), (x0 + m * (side + 2), y0))
        for n, line in enumerate(caption.split("\n")[:3]):
            draw.text((x0, y0 + side + 2 + 11 * n), line[: tw // 6], fill="black")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class DataCheck:
    """What :func:`check` found (``to_dict`` for JSON)."""

    images: Images
    counts: dict
    exact: list[dict]
    near: list[dict]
    issues: list[dict] | None
    oof_acc: float | None
    settings: dict
    junk: list[dict] = field(default_factory=list)
    verdict: dict | None = None  # can the quick model judge labels (label_verdict)

    def summary(self) -> dict:
        im = self.images
        cross_exact = [g for g in self.exact if len(g["splits"]) > 1]
        cross_near = [
            p for p in self.near if p["splits"].split("/")[0] != p["splits"].split("/")[1]
        ]
        s = {
            "dataset": im.name,
            "images": int(len(im.labels)),
            "splits": {k: int(v) for k, v in Counter(im.splits.tolist()).items()},
            "classes": len(im.classes),
            "unreadable": len(im.unreadable),
            "sizes": dict(im.sizes.most_common()),
            "modes": dict(im.modes.most_common()),
            "imbalance_ratio": {k: v["imbalance_ratio"] for k, v in self.counts.items()},
            "exact_duplicate_groups": len(self.exact),
            "exact_duplicates_across_splits": len(cross_exact),
            "exact_duplicates_with_other_labels": sum(len(g["labels"]) > 1 for g in self.exact),
            "near_duplicate_pairs": len(self.near),
            "near_duplicates_across_splits": len(cross_near),
            "near_duplicates_with_other_labels": sum(
                p["labels"][0] != p["labels"][1] for p in self.near
            ),
        }
        s["junk"] = len(self.junk)
        if self.verdict is not None:
            s["label_check"] = self.verdict
        if self.issues is not None:
            s["label_issues"] = len(self.issues)
        if self.oof_acc is not None:
            s["label_model_oof_accuracy"] = round(self.oof_acc, 4)
        return s

    def to_dict(self) -> dict:
        return {
            "summary": self.summary(),
            "settings": self.settings,
            "class_counts": self.counts,
            "unreadable": [{"file": f, "error": e} for f, e in self.images.unreadable],
            "exact_duplicates": self.exact,
            "near_duplicates": [
                {k: v for k, v in p.items() if k not in ("ia", "ib")} for p in self.near
            ],
            "label_issues": self.issues,
            "junk": [{k: v for k, v in j.items() if k != "index"} for j in self.junk],
        }

    def sheets(self, n: int = 48) -> dict[str, bytes]:
        """Contact sheets: ``label_issues`` (the top ``n`` suspects) and
        ``near_duplicates`` (the ``n`` closest pairs, cross-split first)."""
        im, out = self.images, {}
        if self.issues:
            tiles = [
                (
                    [r["index"]],
                    f"{r['id']}\nlabel {r['given']}\nlooks {r['predicted']}",
                )
                for r in self.issues[:n]
            ]
            out["label_issues"] = contact_sheet(
                im,
                tiles,
                f"{im.name}: likely label errors (the given label; what the quick model sees)",
            )
        if self.junk:
            tiles = [([j["index"]], f"{j['id']}\n{j['why'][0]}") for j in self.junk[:n]]
            out["junk"] = contact_sheet(im, tiles, f"{im.name}: probably not photos (junk)")
        if self.near:
            pairs = sorted(
                self.near,
                key=lambda p: (p["splits"] in ("train/train", "test/test"), p["pixel_mad"]),
            )[:n]
            tiles = [
                (
                    [p["ia"], p["ib"]],
                    f"{p['a']} | {p['b']}\n{p['labels'][0]} | {p['labels'][1]}\n"
                    f"{p['bits']} bits, grey diff {p['pixel_mad']:.1f}",
                )
                for p in pairs
            ]
            out["near_duplicates"] = contact_sheet(
                im,
                tiles,
                f"{im.name}: near-duplicate pairs (splits, dHash bits, pixel MAD)",
                cols=6,
            )
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
