"""An image folder's split — which file is in which part, and how the images are decoded —
planned from a scan, settled from a sample of the images, and stored as a run's
``split.json`` (:class:`FolderSplit`)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnlab.data.folder_decode import warn_unreadable
from cnnlab.data.folder_scan import check_classes, class_names, find_layout, scan_part
from cnnlab.data.folder_scan import folder_error as _err
from cnnlab.data.split import split_train_val
from cnnlab.errors import ConfigError

GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_AUTO_SIZE = 224  # the automatic side: the median shorter side, at most this
SAMPLE = 256  # images whose headers decide the automatic side and channels
SPLIT_FORMAT = 1


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
    classes = class_names(base)
    check_classes(base, classes)
    others = [p for p in present.values() if p != base]
    bad_names: list[str] = []
    parts = {"train": scan_part(root, base, classes, others, bad_names)}
    for s in ("val", "test"):
        if s in present:
            got = class_names(present[s])
            if got != classes:
                extra = sorted(set(got) ^ set(classes))
                raise _err(
                    f"{present[s]} and {base} hold different class folders "
                    f"(not in both: {', '.join(extra[:4])}); each split needs the same classes"
                )
            parts[s] = scan_part(
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
