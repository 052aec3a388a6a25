"""Reading a dataset for ``cnnlab data check``: every image of a folder (or of a built-in
dataset's tensors) reduced to what the checks need (:class:`Images`) — grey thumbnails,
pixel digests, sizes and modes, and for photos the features the label model sees."""

from __future__ import annotations

import hashlib
import os
import stat
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


def colour_thumb(img) -> np.ndarray:
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
                colour.append(colour_thumb(img))
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
