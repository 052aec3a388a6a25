"""``imagefolder``: your own images, one sub-folder per class.

Two layouts under ``--data-dir PATH``:

* ``PATH/<class>/*`` (flat): a stratified test split — ``data.test_fraction`` (0.2) of each
  class — drawn with ``data.split_seed`` (0; not ``train.seed``, so runs with different
  seeds share one test set). The validation split is then carved from the rest by
  ``data.val_fraction``, as for every dataset.
* ``PATH/train/<class>/*`` with ``val/`` and/or ``test/`` beside it, used as given: no
  ``val/`` → carved from ``train/``; no ``test/`` → ``val/`` is the test set (the older
  ImageNet layout); ``train/`` alone → split like a flat folder.

The split — every file of every part, relative to PATH, with its label — and how images
are decoded (side, channels, statistics) are written into the run as ``split.json``, so
``eval`` and the other commands score the very same test images even after files are
added to the folder (added files are ignored; a removed one is an error).

Decoding: any format Pillow reads, through :func:`cnnlab.data.images.load_image` (the one
``predict`` uses, with its decompression-bomb guards): 16-bit grey scaled to 8 bits, grey
kept 1-channel when every sampled image is grey (else RGB), transparency composited onto
white, each image resized to one square side — ``data.size``, or the median shorter side
of a sample of the images, at most 224 px. Unreadable files are skipped and named once in
one warning, never a crash mid-epoch.

Resident or streamed: a folder whose decoded uint8 images fit ``data.max_resident_mb``
(2048 MiB) is decoded once (with progress) and lives on the device like MNIST — the
ResidentLoader path, same augmentation. A larger one streams: DataLoader workers decode
uint8 batches with the same function, the device augments and normalises them with the
same operations.

The scan takes regular image files only (a FIFO named ``x.png`` would block forever) and
follows a directory symlink only to a folder not seen before — never to a split folder,
PATH itself or another class — so symlink loops neither hang nor multiply the images.

The work is split by job: :mod:`~cnnlab.data.folder_scan` finds the files,
:mod:`~cnnlab.data.folder_split` plans and stores the split, :mod:`~cnnlab.data.folder_decode`
decodes, :mod:`~cnnlab.data.folder_stream` streams; this module builds the dataset (and
re-exports their public names).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from cnnlab.data.datatypes import Dataset
from cnnlab.data.folder_decode import channel_stats, decode_files, decode_one, warn_unreadable
from cnnlab.data.folder_scan import (
    IMG_EXTENSIONS,
    SPLITS,
    find_layout,
    folder_error,
    printable,
    scan_split,
)
from cnnlab.data.folder_split import (
    GREY_MODES,
    MAX_AUTO_SIZE,
    SAMPLE,
    SPLIT_FORMAT,
    FolderSplit,
    plan_split,
    settle_decoding,
)
from cnnlab.data.folder_stream import STATS_SAMPLE, StreamingFolder, StreamingLoader
from cnnlab.errors import ConfigError

__all__ = [
    "GREY_MODES",
    "IMG_EXTENSIONS",
    "MAX_AUTO_SIZE",
    "SAMPLE",
    "SPLITS",
    "SPLIT_FORMAT",
    "STATS_SAMPLE",
    "FolderData",
    "FolderSplit",
    "StreamingFolder",
    "StreamingLoader",
    "channel_stats",
    "class_folder_name",
    "decode_files",
    "decode_one",
    "find_layout",
    "folder_error",
    "load_imagefolder",
    "plan_split",
    "printable",
    "scan_split",
    "settle_decoding",
    "warn_unreadable",
    "write_image_folder",
]


class FolderData(Dataset):
    """A folder decoded into uint8 tensors, part by part when first used: a training run
    decodes everything up front (one pass, one warning); ``eval`` touches only the test
    part, so only the test files are decoded. ``val_x``/``val_y``: a given val/ folder."""

    streaming = False

    def __init__(self, fs: FolderSplit, workers: int = 0):
        self.name, self.split = "imagefolder", fs
        self.classes = list(fs.classes)
        self.augment, self.source = "crop,flip", str(fs.root)
        self.workers = workers
        self._parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mean, self.std = fs.mean, fs.std

    def decode(self, names: Sequence[str]) -> None:
        """Decode the named parts not decoded yet, in one pass, warning once."""
        fs = self.split
        todo = [n for n in names if n in fs.parts and n not in self._parts]
        if not todo:
            return
        fs.check_present(todo)
        files = [f for n in todo for f in fs.parts[n]]
        x, y, bad = decode_files(
            fs.root, files, fs.channels, fs.size, ", ".join(todo), self.workers
        )
        warn_unreadable(bad, fs.root)
        gone, start = set(bad), 0
        for n in todo:
            kept = [f for f in fs.parts[n] if f[0] not in gone]
            self._parts[n] = (x[start : start + len(kept)], y[start : start + len(kept)])
            start += len(kept)
            fs.parts[n] = kept
        fs.skipped += bad
        if "train" in todo:
            counts = torch.bincount(self._parts["train"][1], minlength=len(self.classes))
            if (counts == 0).any():
                c = self.classes[int((counts == 0).nonzero()[0])]
                raise folder_error(f"no readable training image left in class {c!r}")
            if self.mean is None:
                self.mean, self.std = channel_stats(self._parts["train"][0])
                fs.mean, fs.std = self.mean, self.std
        if self.mean is None:  # only evaluation images at hand (a split file has the stats)
            self.mean, self.std = channel_stats(x)

    def _part(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.decode([name])
        return self._parts[name]

    train_x = property(lambda self: self._part("train")[0])
    train_y = property(lambda self: self._part("train")[1])
    test_x = property(lambda self: self._part("test")[0])
    test_y = property(lambda self: self._part("test")[1])
    val_x = property(lambda self: self._part("val")[0] if "val" in self.split.parts else None)
    val_y = property(lambda self: self._part("val")[1] if "val" in self.split.parts else None)

    @property
    def channels(self) -> int:
        return self.split.channels

    @property
    def num_train(self) -> int:
        return len(self.split.parts["train"])

    @property
    def size(self) -> int:
        return self.split.size

    def split_record(self) -> str:
        return self.split.to_json()

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={len(v)}" for k, v in self.split.parts.items())
        return f"FolderData({str(self.split.root)!r}, {counts}, classes={self.num_classes})"


def load_imagefolder(
    folder: Path,
    size: int | None = None,
    channels: int | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    resident: bool | str = "auto",
    max_resident_mb: float = 2048,
    workers: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    split_file: str | os.PathLike | None = None,
    split: str | None = None,
) -> FolderData | StreamingFolder:
    """The folder as a dataset: resident (decoded uint8 tensors) when it fits
    ``max_resident_mb``, else streamed. ``split_file``: a run's split.json to reuse (its
    files, side, channels and statistics). ``split``: a run read back — ``"test"`` decodes
    only the test files (what ``eval`` needs), ``"lazy"`` each part when first used."""
    if size is not None and not (isinstance(size, int) and 8 <= size <= 4096):
        raise ConfigError(f"data.size must be an integer in [8, 4096] pixels, got {size!r}")
    if resident not in (True, False, "auto"):
        raise ConfigError(f"data.resident must be auto, true or false, got {resident!r}")
    if not (isinstance(split_seed, int) and not isinstance(split_seed, bool) and split_seed >= 0):
        raise ConfigError(f"data.split_seed must be an integer ≥ 0, got {split_seed!r}")
    if not (isinstance(max_resident_mb, (int, float)) and max_resident_mb >= 0):
        raise ConfigError(f"data.max_resident_mb must be a number ≥ 0, got {max_resident_mb!r}")
    if split_file is not None:
        fs = FolderSplit.load(split_file, folder)
    else:
        fs = plan_split(Path(folder), test_fraction, split_seed)
        settle_decoding(fs, size, channels)
        if mean is not None or std is not None:
            n = len(mean or ()), len(std or ())
            if n[0] != n[1] or n[0] not in (1, fs.channels) or min(std or [0]) <= 0:
                raise ConfigError(
                    f"data.mean and data.std need 1 or {fs.channels} values each (std > 0)"
                )
            fs.mean, fs.std = tuple(map(float, mean)), tuple(map(float, std))
        need = sum(len(v) for v in fs.parts.values()) * fs.channels * fs.size**2
        fs.resident = resident is True or (resident == "auto" and need <= max_resident_mb * 2**20)
    if split is None and not fs.resident:
        return StreamingFolder(fs, workers)
    ds = FolderData(fs, 0 if workers is None else int(workers))
    if split is None:  # training: every part now, one pass, one warning
        ds.decode(list(fs.parts))
    elif split != "lazy":
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        ds.decode([split])
    return ds


def class_folder_name(name: str) -> str:
    """A class name as a folder name ("T-shirt/top" → "T-shirt_top")."""
    safe = "".join(ch if ch not in "/\\\0:" else "_" for ch in str(name)).strip()
    return safe if safe not in ("", ".", "..") else f"class_{safe or 'x'}"


def write_image_folder(
    root: str | os.PathLike, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str],
    ext: str = "png", start: int = 0,
) -> list[Path]:  # fmt: skip
    """Write uint8 images (N, C, H, W) as ``root/<class>/<index>.<ext>`` files (index from
    ``start``: a dataset's own image numbers), a folder this module reads back — PNG
    losslessly, so the decoded tensors equal ``x``."""
    root = Path(root)
    names = [class_folder_name(c) for c in classes]
    for n in names:
        (root / n).mkdir(parents=True, exist_ok=True)
    out = []
    arr = x.numpy()
    for i, (a, label) in enumerate(zip(arr, y.tolist(), strict=True)):
        p = root / names[label] / f"{start + i:05d}.{ext}"
        Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).save(p)
        out.append(p)
    return out
