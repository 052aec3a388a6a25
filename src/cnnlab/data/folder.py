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
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnlab.data.augment import parse_augment
from cnnlab.data.datatypes import Dataset
from cnnlab.data.images import load_image
from cnnlab.data.loader import BalancedSampler, ResidentLoader
from cnnlab.data.split import split_train_val
from cnnlab.errors import CnnlabError, ConfigError, DataError
from cnnlab.progress import progress

IMG_EXTENSIONS = (
    ".jpg", ".jpeg", ".jfif", ".png", ".ppm", ".pgm", ".pbm", ".pnm", ".bmp", ".gif",
    ".tif", ".tiff", ".webp", ".tga", ".ico",
)  # fmt: skip
SPLITS = ("train", "val", "test")
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_AUTO_SIZE = 224  # the automatic side: the median shorter side, at most this
SAMPLE = 256  # images whose headers decide the automatic side and channels
STATS_SAMPLE = 512  # streamed folders: images whose pixels give the mean and std
SPLIT_FORMAT = 1


def _err(msg: str) -> DataError:
    return DataError(f"imagefolder: {msg}")


# --- finding the files ------------------------------------------------------------------


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


def _class_names(d: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise _err(f"cannot read {d} ({e.strerror})") from None


def find_layout(root: Path) -> dict[str, Path]:
    """The folders of each part present: ``{"train": ..., "val": ..., "test": ...}`` (flat:
    only ``"all"``). Raises DataError for a missing path or a file where a folder should be."""
    if not root.exists():
        raise _err(
            f"{root} not found; pass --data-dir pointing to a folder with one sub-folder of "
            "images per class (PATH/<class>/*.jpg, or PATH/train/<class>/*.jpg)"
        )
    if not root.is_dir():
        raise _err(f"{root} is a file, not a folder; --data-dir takes the folder of class folders")
    present = {}
    for s in SPLITS:
        p = root / s
        if p.exists() and not p.is_dir():
            raise _err(f"{p} is a file where a folder of class folders should be")
        if p.is_dir():
            present[s] = p
    if present and "train" not in present:
        raise _err(f"{root} has {'/'.join(present)}/ but no train/ folder")
    return present or {"all": root}


def _check_classes(where: Path, classes: list[str]) -> None:
    if not classes:
        loose = any(
            e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS) for e in os.scandir(where)
        )
        raise _err(
            f"{where} has no class sub-folders"
            + (" (it holds images directly)" if loose else "")
            + "; put each class's images in a folder of its own: PATH/<class>/*.jpg"
        )
    if len(classes) == 1:
        raise _err(
            f"{where} has only one class folder ({classes[0]!r}); a classifier needs two or more"
        )


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (kept by Python as surrogates) shown
    as ``\\xff`` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _scan(
    root: Path, part: Path, classes: list[str], others: list[Path], bad_names: list[str]
) -> list[tuple]:
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
        raise _err(
            f"class folder {part / empty[0]} holds no image files"
            + (f" (and {len(empty) - 1} more class folder(s) are empty)" if len(empty) > 1 else "")
            + f"; image files end in {', '.join(IMG_EXTENSIONS[:5])}, …"
        )
    return [(os.path.relpath(p, root), y) for p, y in files]


# --- the split --------------------------------------------------------------------------


@dataclass
class FolderSplit:
    """Which file is in which part, and how the images are decoded: a run's split.json."""

    root: Path
    layout: str
    classes: list[str]
    parts: dict[str, list[tuple[str, int]]]  # train, test and (given) val: (relpath, label)
    split_seed: int = 0
    test_fraction: float = 0.2
    test_from: str = "carved"  # carved | test/ | val/
    size: int = 0
    channels: int = 0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resident: bool = True
    skipped: list[str] = field(default_factory=list)

    def digest(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.parts):
            for rel, y in self.parts[name]:
                h.update(f"{name}\0{rel}\0{y}\n".encode())
        return h.hexdigest()

    def to_json(self) -> str:
        d = {
            "format": SPLIT_FORMAT,
            "root": str(self.root),
            "layout": self.layout,
            "classes": self.classes,
            "split_seed": self.split_seed,
            "test_fraction": self.test_fraction,
            "test_from": self.test_from,
            "val": "given (val/)"
            if "val" in self.parts
            else "carved from train by data.val_fraction, stratified, seeded by train.seed",
            "decode": {
                "size": self.size,
                "channels": self.channels,
                "mean": list(self.mean or ()),
                "std": list(self.std or ()),
                "resident": self.resident,
            },
            "digest": self.digest(),
            "counts": {k: len(v) for k, v in self.parts.items()},
            "skipped": self.skipped,
        }
        # one file a line: readable and diffable even with a million files
        parts = ",\n".join(
            f"  {json.dumps(k)}: [\n"
            + ",\n".join(f"   {json.dumps([r, y])}" for r, y in v)
            + "\n  ]"
            for k, v in self.parts.items()
        )
        return json.dumps(d, indent=1)[:-2] + ',\n "parts": {\n' + parts + "\n }\n}\n"

    @classmethod
    def load(cls, path: str | os.PathLike, root: str | os.PathLike | None = None) -> FolderSplit:
        """A stored split; ``root`` (another --data-dir) replaces the folder it recorded.
        Every listed file must still exist (files added since are ignored)."""
        try:
            d = json.loads(Path(path).read_text())
            dec = d["decode"]
            fs = cls(
                Path(root or d["root"]).expanduser().absolute(),
                d["layout"],
                list(d["classes"]),
                {k: [(str(r), int(y)) for r, y in v] for k, v in d["parts"].items()},
                int(d["split_seed"]),
                float(d["test_fraction"]),
                d["test_from"],
                int(dec["size"]),
                int(dec["channels"]),
                tuple(dec["mean"]) or None,
                tuple(dec["std"]) or None,
                bool(dec["resident"]),
                list(d.get("skipped", [])),
            )
        except OSError as e:
            raise _err(f"cannot read the split file {path} ({e.strerror})") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise _err(f"{path} is not a split file cnnlab wrote ({type(e).__name__})") from None
        bad = [
            r for v in fs.parts.values() for r, _ in v if os.path.isabs(r) or ".." in Path(r).parts
        ]
        if bad:
            raise _err(f"{path} names a file outside the image folder ({bad[0]})")
        if d.get("digest") not in (None, fs.digest()):
            raise _err(f"{path} was edited: its file lists do not match its digest")
        if not fs.root.is_dir():
            raise _err(f"{fs.root} (the run's image folder) not found; pass --data-dir")
        return fs

    def check_present(self, names: Sequence[str]) -> None:
        missing = [
            r for n in names for r, _ in self.parts.get(n, []) if not (self.root / r).exists()
        ]
        if missing:
            raise _err(
                f"{len(missing)} file(s) of the run's recorded split are gone from {self.root} "
                f"(first: {missing[0]}); restore them, or pass --data-dir to the folder that "
                "has them (the split is in the run's split.json)"
            )


def plan_split(root: Path, test_fraction: float = 0.2, split_seed: int = 0) -> FolderSplit:
    """Scan ``root`` (either layout) into a FolderSplit (decode settings not yet chosen)."""
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"data.test_fraction must be between 0 and 1, got {test_fraction}")
    root = Path(root).expanduser().absolute()
    present = find_layout(root)
    base = present.get("train", present.get("all"))
    classes = _class_names(base)
    _check_classes(base, classes)
    others = [p for p in present.values() if p != base]
    bad_names: list[str] = []
    parts = {"train": _scan(root, base, classes, others, bad_names)}
    for s in ("val", "test"):
        if s in present:
            got = _class_names(present[s])
            if got != classes:
                extra = sorted(set(got) ^ set(classes))
                raise _err(
                    f"{present[s]} and {base} hold different class folders "
                    f"(not in both: {', '.join(extra[:4])}); each split needs the same classes"
                )
            parts[s] = _scan(
                root,
                present[s],
                classes,
                [p for p in present.values() if p != present[s]],
                bad_names,
            )
    layout = "/".join(present) if "all" not in present else "flat"
    test_from = "carved"
    if "test" in parts:
        test_from = "test/"
    elif "val" in parts:  # the older train/ + val/ layout: val/ is the test set
        parts["test"], test_from = parts.pop("val"), "val/"
    else:
        labels = torch.tensor([y for _, y in parts["train"]])
        tr, te = split_train_val(len(labels), float(test_fraction), int(split_seed), labels)
        files = parts["train"]
        parts["train"], parts["test"] = [files[i] for i in tr], [files[i] for i in te]
        left = np.bincount([y for _, y in parts["train"]], minlength=len(classes))
        if (left == 0).any():
            c = classes[int(np.flatnonzero(left == 0)[0])]
            raise _err(
                f"class {c!r} has too few images to give some to both training and testing; "
                "add images or lower data.test_fraction"
            )
    # a fixed shuffle of the training files: "the first N" (data.train_limit) are then a
    # sample of every class, not the first classes in folder order
    g = torch.Generator().manual_seed(int(split_seed))
    perm = torch.randperm(len(parts["train"]), generator=g).tolist()
    parts["train"] = [parts["train"][i] for i in perm]
    if bad_names:
        warn_unreadable([f"{n} (file name is not UTF-8: rename it)" for n in bad_names], root)
    return FolderSplit(
        root,
        layout,
        classes,
        parts,
        int(split_seed),
        float(test_fraction),
        test_from,
        skipped=list(bad_names),
    )


def settle_decoding(fs: FolderSplit, size: int | None, channels: int | None) -> None:
    """The side and channels every image is decoded to: given, or from a seeded sample of
    the images' headers (1 channel when all are grey; the median shorter side, ≤ 224)."""
    files = [r for v in fs.parts.values() for r, _ in v]
    g = np.random.default_rng(fs.split_seed)
    pick = g.permutation(len(files))[:SAMPLE] if len(files) > SAMPLE else range(len(files))
    modes, sides = [], []
    for i in pick:
        try:
            with Image.open(fs.root / files[i]) as im:
                modes.append(im.mode)
                sides.append(min(im.size))
        except Exception:  # noqa: BLE001 - unreadable: found and named when decoded
            continue
    if channels is None:
        channels = 1 if modes and all(m in GREY_MODES for m in modes) else 3
    if channels not in (1, 3):
        raise ConfigError(f"data.channels must be 1 or 3, got {channels}")
    if size is None:
        size = int(min(MAX_AUTO_SIZE, max(8, np.median(sides)))) if sides else MAX_AUTO_SIZE
    fs.size, fs.channels = int(size), int(channels)


# --- decoding ---------------------------------------------------------------------------


def decode_one(path: Path, channels: int, size: int) -> np.ndarray | None:
    """uint8 (C, size, size), or None for a file that cannot be read as an image."""
    try:
        return load_image(path, channels, size)
    except CnnlabError:
        return None


def decode_files(
    root: Path, files: Sequence[tuple[str, int]], channels: int, size: int, what: str,
    workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:  # fmt: skip
    """Decode ``files`` into uint8 (N, C, S, S) and labels, skipping (and returning the
    names of) those that cannot be read. Threads: Pillow decodes without the GIL."""
    x = torch.empty((len(files), channels, size, size), dtype=torch.uint8)
    keep, bad = [], []
    threads = workers or min(8, os.cpu_count() or 1)
    xn = x.numpy()  # filled in place: decoded arrays are read-only views of PIL images
    with progress(f"decoding {what}", total=len(files)) as bar:
        with ThreadPoolExecutor(max_workers=threads) as ex:
            it = ex.map(lambda f: decode_one(root / f[0], channels, size), files, chunksize=64)
            for i, a in enumerate(it):
                if a is None:
                    bad.append(files[i][0])
                else:
                    xn[i] = a
                    keep.append(i)
                bar.advance()
    idx = torch.tensor(keep, dtype=torch.long)
    y = torch.tensor([files[i][1] for i in keep], dtype=torch.long)
    return (x[idx] if bad else x), y, bad


def warn_unreadable(bad: Sequence[str], root: Path) -> None:
    if bad:
        shown = ", ".join(bad[:5]) + (f", … ({len(bad) - 5} more)" if len(bad) > 5 else "")
        print(
            f"warning: imagefolder: skipped {len(bad)} unreadable image file(s) in {root}: {shown}",
            file=sys.stderr,
            flush=True,
        )


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units."""
    xf = x.float().div_(255)
    dims = (0, 2, 3)
    return tuple(xf.mean(dims).tolist()), tuple(xf.std(dims).clamp_min(1e-3).tolist())


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
                raise _err(f"no readable training image left in class {c!r}")
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


# --- streaming --------------------------------------------------------------------------


class _Files(torch.utils.data.Dataset):
    """Image files decoded to uint8 (C, S, S) in a worker; an unreadable one gives None."""

    def __init__(self, root: Path, files: list[tuple[str, int]], channels: int, size: int):
        self.root, self.files, self.channels, self.size = root, files, channels, size

    def __len__(self) -> int:
        return len(self.files)

    @property
    def targets(self) -> list[int]:
        """The class index of every file (class counts, balanced sampling)."""
        return [y for _, y in self.files]

    def __getitem__(self, i: int):
        rel, y = self.files[i]
        a = decode_one(self.root / rel, self.channels, self.size)
        return (None if a is None else torch.from_numpy(np.array(a))), y, rel


def _collate(items):
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [rel for x, _, rel in items if x is None]
    if not good:
        return None, None, bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good]), bad


class StreamingLoader:
    """A DataLoader over image files whose uint8 batches are augmented and normalised on
    the device by the resident loader's own code (``prep``), so streamed and resident
    folders see the same pixels. Unreadable files are dropped from their batch and named
    once, in one warning, when the first pass over the files ends."""

    def __init__(
        self, files: _Files, batch_size: int, prep: ResidentLoader, *, shuffle: bool,
        drop_last: bool, workers: int, seed: int = 0, sampler=None, train: bool = False,
    ):  # fmt: skip
        self.dataset, self.prep, self.train = files, prep, train
        self.sampler = sampler  # DDP: a DistributedSampler giving this rank its share
        self.batch_size = int(batch_size)
        self.device = prep.device
        self.mean, self.std = prep.mean, prep.std
        self.generator = torch.Generator().manual_seed(seed)
        self.bad: set[str] = set()
        self.warned = False
        self.loader = torch.utils.data.DataLoader(
            files,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            generator=self.generator,
            prefetch_factor=4 if workers > 0 else None,
        )

    def __len__(self) -> int:
        return len(self.loader)  # steps per epoch

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    @property
    def num_samples(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        for x, y, bad in self.loader:
            self.bad.update(bad)
            if x is None:
                continue
            x = x.to(self.device, non_blocking=True)
            yield self.prep.prepare(x, self.train), y.to(self.device, non_blocking=True)
        if not self.warned:
            self.warned = True
            warn_unreadable(sorted(self.bad), self.dataset.root)


class StreamingFolder:
    """A folder too large to hold decoded: class names, statistics, its split, and how to
    build its streaming loaders (the ClassifyTask hook ``attach_loaders``)."""

    streaming = True

    def __init__(self, fs: FolderSplit, workers: int | None = None):
        self.name, self.split = "imagefolder", fs
        self.classes = list(fs.classes)
        self.augment, self.source = "crop,flip", str(fs.root)
        self.workers = min(4, os.cpu_count() or 1) if workers is None else int(workers)
        self.channels, self.size = fs.channels, fs.size
        if fs.mean is None:  # statistics of a seeded sample of the training images
            g = np.random.default_rng(fs.split_seed)
            pick = g.permutation(len(fs.parts["train"]))[:STATS_SAMPLE]
            x, _, _ = decode_files(
                fs.root, [fs.parts["train"][i] for i in pick], fs.channels, fs.size,
                "a sample for the mean and std",
            )  # fmt: skip
            fs.mean, fs.std = channel_stats(x)
        self.mean, self.std = fs.mean, fs.std

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_record(self) -> str:
        return self.split.to_json()

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={len(v)}" for k, v in self.split.parts.items())
        return f"StreamingFolder({str(self.split.root)!r}, {counts}, classes={self.num_classes})"

    def attach_loaders(self, task) -> None:
        """Give ``task`` its train/test(/val) loaders."""
        cfg, t, fs = task.cfg, task.cfg.train, self.split
        augment = parse_augment(cfg.data.augment, self.augment)
        dev = task.rt.device
        train = fs.parts["train"][: cfg.data.train_limit or None]
        val = fs.parts.get("val", [])
        if not val and cfg.data.val_fraction > 0:
            labels = torch.tensor([y for _, y in train])
            tr, va = split_train_val(len(train), cfg.data.val_fraction, t.seed, labels)
            train, val = [train[i] for i in tr], [train[i] for i in va]
        if not train:
            raise ConfigError("no training images left after train_limit/val_fraction")
        task.augment = augment
        task.generator = torch.Generator().manual_seed(t.seed)

        def prep(is_train: bool) -> ResidentLoader:
            empty = torch.empty((0, fs.channels, fs.size, fs.size), dtype=torch.uint8)
            return ResidentLoader(
                empty, torch.empty(0, dtype=torch.long), 1, self.mean, self.std,
                augment=augment if is_train else (), pad=cfg.data.pad, resize=cfg.data.resize,
                grayscale=cfg.data.grayscale, device=dev, channels_last=task.rt.channels_last,
                generator=torch.Generator(dev).manual_seed(t.seed), train=is_train,
            )  # fmt: skip

        def files(part):
            return _Files(fs.root, part, fs.channels, fs.size)

        bs = min(t.batch_size, len(train))
        dist = getattr(task, "dist", None)
        train_set = files(train)
        sampler = dist.sampler(train_set, True, t.seed, drop_last=True) if dist else None
        sharded = sampler is not None
        if cfg.data.sampler == "balanced":  # class-balanced draws (this rank's share)
            rank, world = (dist.rank, dist.world) if sharded else (0, 1)
            sampler = BalancedSampler(train_set.targets, t.seed, rank, world)
        if sharded:  # train.batch_size is the global batch
            bs = max(1, bs // dist.world)
        common = dict(workers=self.workers, seed=t.seed)
        task.train_loader = StreamingLoader(
            train_set, bs, prep(True), shuffle=True, drop_last=True, sampler=sampler,
            train=True, **common,
        )  # fmt: skip
        task.test_loader = StreamingLoader(
            files(fs.parts["test"]), t.eval_batch_size, prep(False), shuffle=False,
            drop_last=False, **common,
        )  # fmt: skip
        task.val = None
        if val:
            task.val = StreamingLoader(
                files(val), t.eval_batch_size, prep(False), shuffle=False, drop_last=False,
                **common,
            )  # fmt: skip


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
