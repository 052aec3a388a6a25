"""Streaming an image folder too large to hold decoded: DataLoader workers decode uint8
batches, the device augments and normalises them with the resident loader's own code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.augment import parse_augment
from cnnlab.data.folder_decode import channel_stats, decode_files, decode_one, warn_unreadable
from cnnlab.data.folder_split import FolderSplit
from cnnlab.data.loader import BalancedSampler, ResidentLoader
from cnnlab.data.split import split_train_val
from cnnlab.errors import ConfigError

STATS_SAMPLE = 512  # streamed folders: images whose pixels give the mean and std


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
