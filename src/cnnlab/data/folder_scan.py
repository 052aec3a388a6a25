"""Finding an image folder's files: its layout (flat or ``train/``, ``val/``, ``test/``),
its class folders, and every regular image file under them, symlink loops followed at most
once (see :mod:`cnnlab.data.folder` for the format)."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError

IMG_EXTENSIONS = (
    ".jpg", ".jpeg", ".jfif", ".png", ".ppm", ".pgm", ".pbm", ".pnm", ".bmp", ".gif",
    ".tif", ".tiff", ".webp", ".tga", ".ico",
)  # fmt: skip
SPLITS = ("train", "val", "test")


def folder_error(msg: str) -> DataError:
    """A DataError about an image folder, named as such."""
    return DataError(f"imagefolder: {msg}")


def scan_split(root: Path, classes: list[str], also_seen: Sequence[Path] = ()) -> list[tuple]:
    """(path, class index) of every regular image file under ``root/<class>/``.
    Directory symlinks are followed only into folders not yet seen (by device and inode):
    ``root``, its classes and ``also_seen`` (the dataset folder, the other splits) count as
    seen, so loops and links to ``..`` or to another class add nothing."""
    seen = set()
    for d in (root, *also_seen, *(root / c for c in classes)):
        try:
            st = os.stat(d)
        except OSError:
            continue
        seen.add((st.st_dev, st.st_ino))
    samples = []
    for idx, c in enumerate(classes):
        stack = [root / c]
        while stack:
            d = stack.pop()
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError:
                continue
            for e in entries:
                try:
                    st = os.stat(e.path)  # follows a symlink; a dangling one is skipped
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key not in seen:
                        seen.add(key)
                        stack.append(Path(e.path))
                elif stat.S_ISREG(st.st_mode) and e.name.lower().endswith(IMG_EXTENSIONS):
                    samples.append((idx, str(d), e.name, e.path))
    # torchvision's order: class, then folder, then file name
    return [(path, idx) for idx, _, _, path in sorted(samples)]


def class_names(d: Path) -> list[str]:
    """The class folders of ``d``, sorted (hidden ones left out)."""
    try:
        return sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise folder_error(f"cannot read {d} ({e.strerror})") from None


def find_layout(root: Path) -> dict[str, Path]:
    """The folders of each part present: ``{"train": ..., "val": ..., "test": ...}`` (flat:
    only ``"all"``). Raises DataError for a missing path or a file where a folder should be."""
    if not root.exists():
        raise folder_error(
            f"{root} not found; pass --data-dir pointing to a folder with one sub-folder of "
            "images per class (PATH/<class>/*.jpg, or PATH/train/<class>/*.jpg)"
        )
    if not root.is_dir():
        raise folder_error(
            f"{root} is a file, not a folder; --data-dir takes the folder of class folders"
        )
    present = {}
    for s in SPLITS:
        p = root / s
        if p.exists() and not p.is_dir():
            raise folder_error(f"{p} is a file where a folder of class folders should be")
        if p.is_dir():
            present[s] = p
    if present and "train" not in present:
        raise folder_error(f"{root} has {'/'.join(present)}/ but no train/ folder")
    return present or {"all": root}


def check_classes(where: Path, classes: list[str]) -> None:
    """A DataError unless ``where`` has two or more class folders."""
    if not classes:
        loose = any(
            e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS) for e in os.scandir(where)
        )
        raise folder_error(
            f"{where} has no class sub-folders"
            + (" (it holds images directly)" if loose else "")
            + "; put each class's images in a folder of its own: PATH/<class>/*.jpg"
        )
    if len(classes) == 1:
        raise folder_error(
            f"{where} has only one class folder ({classes[0]!r}); a classifier needs two or more"
        )


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by Python as surrogates) shown
    as ``\\xff`` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def scan_part(
    root: Path, part: Path, classes: list[str], others: list[Path], bad_names: list[str]
) -> list[tuple]:
    """(path relative to ``root``, label) of every image of one part: a name that is not
    UTF-8 goes to ``bad_names`` instead; a class folder with no image is a DataError."""
    files = []
    for p, y in scan_split(part, classes, [root, *others]):
        try:
            p.encode("utf-8")
            files.append((p, y))
        except UnicodeEncodeError:  # a name that is not UTF-8 cannot go into split.json
            bad_names.append(printable(os.path.relpath(p, root)))
    counts = np.bincount([y for _, y in files], minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise folder_error(
            f"class folder {part / empty[0]} holds no image files"
            + (f" (and {len(empty) - 1} more class folder(s) are empty)" if len(empty) > 1 else "")
            + f"; image files end in {', '.join(IMG_EXTENSIONS[:5])}, …"
        )
    return [(os.path.relpath(p, root), y) for p, y in files]
