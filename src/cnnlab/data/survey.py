"""A look at an image folder before anything is decoded: how many images, in which
classes and splits, how large, grey or colour. Headers only (Pillow reads a JPEG's size
without decoding it), so it costs milliseconds per image; what a run should be trained
with is chosen from it one floor up (``train/auto.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.data.folder import GREY_MODES, SAMPLE, plan_split


@dataclass
class FolderSurvey:
    root: Path
    layout: str  # flat, train/val, train/test, train/val/test, train
    test_from: str  # carved | test/ | val/
    classes: list[str]
    train_labels: list[int]  # the training pool (before the validation split)
    n_val_given: int  # images in a val/ folder that is kept as validation (train/val/test)
    n_test: int
    sampled: int = 0  # headers read
    short_sides: list[int] = field(default_factory=list)
    long_sides: list[int] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    @property
    def per_class(self) -> list[int]:
        return np.bincount(self.train_labels, minlength=len(self.classes)).tolist()

    @property
    def median_short(self) -> int:
        return int(np.median(self.short_sides)) if self.short_sides else 0

    @property
    def median_long(self) -> int:
        return int(np.median(self.long_sides)) if self.long_sides else 0

    @property
    def max_long(self) -> int:
        return max(self.long_sides, default=0)

    @property
    def grey(self) -> bool:
        return bool(self.modes) and all(m in GREY_MODES for m in self.modes)

    def split_line(self) -> str:
        """Where each folder goes: ``train/ → train + val (carved), val/ → test``."""
        if self.layout == "flat":
            return "split: PATH/<class>/ → train + val + test (test carved, stratified)"
        parts = ["train/ → train + val (val carved from it)"]
        if self.n_val_given:
            parts = ["train/ → train", "val/ → val"]
        if self.test_from == "val/":
            parts.append("val/ → test (the older ImageNet layout: val/ is the test set)")
        elif self.test_from == "test/":
            parts.append("test/ → test")
        else:
            parts[0] = "train/ → train + val + test (both carved)"
        return "split: " + ", ".join(parts)


def survey_folder(
    root: str | Path, test_fraction: float = 0.2, split_seed: int = 0, sample: int = SAMPLE
) -> FolderSurvey:
    """Survey ``root`` the way ``load_imagefolder`` will split it (same layout rules, same
    seeded split); sizes and modes from a seeded sample of at most ``sample`` headers.
    Raises the loader's own DataError/ConfigError for a folder it would refuse."""
    fs = plan_split(Path(root), test_fraction, split_seed)
    files = [r for v in fs.parts.values() for r, _ in v]
    g = np.random.default_rng(split_seed)
    pick = g.permutation(len(files))[:sample] if len(files) > sample else range(len(files))
    sv = FolderSurvey(
        root=fs.root,
        layout=fs.layout,
        test_from=fs.test_from,
        classes=list(fs.classes),
        train_labels=[y for _, y in fs.parts["train"]],
        n_val_given=len(fs.parts.get("val", ())),
        n_test=len(fs.parts["test"]),
    )
    for i in pick:
        try:
            with Image.open(fs.root / files[i]) as im:
                w, h = im.size
                sv.modes[im.mode] = sv.modes.get(im.mode, 0) + 1
        except Exception:  # noqa: BLE001 - unreadable: named when the folder is decoded
            continue
        sv.sampled += 1
        sv.short_sides.append(min(w, h))
        sv.long_sides.append(max(w, h))
    return sv
