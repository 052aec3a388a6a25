"""``imagefolder``: image files streamed from disk (the ImageNet layout) for the big models.

``<data_dir>/train/<class>/*.jpg`` and ``<data_dir>/val/<class>/*.jpg`` (``test/`` is
accepted for ``val/``). Images are decoded by DataLoader worker processes with
torchvision transforms — training: RandomResizedCrop + horizontal flip (``data.augment``
'crop'/'flip'; 'none' = resize + centre crop), evaluation: resize to size·256/224 and centre
crop — then grayscale (``data.grayscale``, the article's optional RGB→gray) and per-channel
normalisation (ImageNet statistics unless ``mean``/``std`` are given). ``data.resize`` (or
the ``size`` option) picks the side: 224 by default, 227 for the article's AlexNet.

The scan takes regular image files only (a FIFO, socket or device named ``x.png`` is
skipped: opening one would block forever) and follows a directory symlink only to a
folder not seen before in this split — never to the folder itself, an ancestor (``loop
-> ..``) or another class — so symlink loops neither hang nor multiply the images.

The trainer sees the same interface as the resident loaders: iterating gives device
tensors (x float (B, C, S, S) normalised, y int64 (B,)); ``len(loader)`` is the number of
steps per epoch.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch
from PIL import Image

from cnnlab.data.augment import parse_augment
from cnnlab.data.images import MAX_IMAGE_PIXELS
from cnnlab.data.loader import BalancedSampler
from cnnlab.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_PIXELS = MAX_IMAGE_PIXELS  # refuse decompression bombs (PIL's own limit is a warning)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def scan_split(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, class index) of every regular image file under ``root/<class>/``.
    Directory symlinks are followed only into folders not yet seen (by device and inode),
    so loops and links to ``..`` or to another class add nothing."""
    seen = set()
    for c in classes:  # every class folder counts as seen: a link into one is skipped
        st = os.stat(root / c)
        seen.add((st.st_dev, st.st_ino))
    st = os.stat(root)
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


def _image_folder(path: Path):
    """torchvision's ImageFolder with the scan above in place of its own walk (which
    follows every symlink and opens FIFOs)."""
    from torchvision.datasets import ImageFolder

    class SafeImageFolder(ImageFolder):
        @staticmethod
        def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None,
                         allow_empty=False):  # fmt: skip
            classes = sorted(class_to_idx, key=class_to_idx.get)
            samples = scan_split(Path(directory), classes)
            if not samples and not allow_empty:
                raise FileNotFoundError(f"no image files found in {directory}")
            return samples

    return SafeImageFolder(str(path), loader=_pil_loader)


def _pil_loader(path: str):
    """Decode one image safely; a broken file names itself instead of killing the run."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise DataError(f"{path}: {im.width}×{im.height} image is too large to decode")
            return im.convert("RGB")
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001  (PIL raises many types for bad files)
        raise DataError(
            f"{path}: cannot decode image ({type(e).__name__}); remove or fix it"
        ) from None


def _split_dir(root: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise DataError(
        f"imagefolder: {root} has no {names[0]}/ folder; pass --data-dir pointing to a folder "
        "with train/<class>/*.jpg and val/<class>/*.jpg"
    )


class StreamingLoader:
    """A DataLoader over image files whose batches land on the device."""

    def __init__(
        self,
        dataset,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        workers: int,
        device,
        channels_last: bool,
        mean,
        std,
        seed: int = 0,
        sampler=None,
    ):
        self.dataset = dataset
        self.sampler = sampler  # DDP: a DistributedSampler giving this rank its share
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.channels_last = channels_last
        c = len(mean)
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, c, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(1, c, 1, 1)
        self.generator = torch.Generator().manual_seed(seed)
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
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
        it = iter(self.loader)
        while True:
            try:
                x, y = next(it)
            except StopIteration:
                return
            except DataError as e:  # re-raised from a worker with its traceback: keep one line
                lines = [ln for ln in str(e).splitlines() if "DataError:" in ln]
                raise DataError(
                    lines[-1].split("DataError:", 1)[1].strip() if lines else str(e)
                ) from None
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


class FolderDataset:
    """The imagefolder dataset: class names, statistics and how to build its loaders."""

    streaming = True

    def __init__(
        self, root: Path, size: int = 224, workers: int | None = None, mean=None, std=None
    ):
        self.root = Path(root)
        self.name = "imagefolder"
        self.size = int(size)
        if self.size < 8:
            raise DataError(f"imagefolder: size must be ≥ 8 pixels, got {size}")
        self.workers = min(4, os.cpu_count() or 1) if workers is None else int(workers)
        self.mean = tuple(float(v) for v in (mean or IMAGENET_MEAN))
        self.std = tuple(float(v) for v in (std or IMAGENET_STD))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise DataError("imagefolder: mean and std need 3 values each (std > 0)")
        self.augment = "crop,flip"
        self.source = str(self.root)
        tr, va = _split_dir(self.root, ("train",)), _split_dir(self.root, ("val", "test"))
        try:
            self.train_files = _image_folder(tr)
            self.val_files = _image_folder(va)
        except (FileNotFoundError, OSError) as e:
            raise DataError(f"imagefolder: {str(e).splitlines()[0]}") from None
        self.classes = list(self.train_files.classes)
        if self.val_files.classes != self.classes:
            raise DataError(
                f"imagefolder: val/ classes differ from train/ ({len(self.val_files.classes)} vs "
                f"{len(self.classes)}); both need the same <class> folders"
            )

    channels = 3  # decoded as RGB; grayscale is a transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"FolderDataset({str(self.root)!r}, train={len(self.train_files)}, "
            f"val={len(self.val_files)}, classes={self.num_classes})"
        )

    def transforms(self, size: int, train: bool, augment: tuple[str, ...], grayscale: bool):
        from torchvision import transforms as T

        ops = []
        if train and "crop" in augment:
            ops.append(T.RandomResizedCrop(size, antialias=True))
        else:
            ops += [T.Resize(int(round(size * 256 / 224)), antialias=True), T.CenterCrop(size)]
        if train and "flip" in augment:
            ops.append(T.RandomHorizontalFlip())
        mean, std = self.mean, self.std
        if grayscale:  # the article's optional RGB → gray (ITU-R 601 weights, as PIL)
            ops.append(T.Grayscale(1))
            w = (0.299, 0.587, 0.114)
            mean = (sum(a * b for a, b in zip(mean, w, strict=True)),)
            std = (sum(a * b for a, b in zip(std, w, strict=True)),)
        ops += [T.ToTensor(), T.Normalize(mean, std)]
        return T.Compose(ops), mean, std

    def attach_loaders(self, trainer) -> None:
        """Give ``trainer`` its train/test(/val) loaders (the Trainer.setup hook)."""
        cfg, t = trainer.cfg, trainer.cfg.train
        size = cfg.data.resize or self.size
        augment = parse_augment(cfg.data.augment, self.augment)
        tf_train, mean, std = self.transforms(size, True, augment, cfg.data.grayscale)
        tf_eval, _, _ = self.transforms(size, False, (), cfg.data.grayscale)
        n = len(self.train_files)
        # a fixed shuffle first: the folder order is sorted by class, so "the first N" or a
        # validation tail would otherwise hold only a few classes
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
        if cfg.data.train_limit:
            perm = perm[: cfg.data.train_limit]
        val_idx: list[int] = []
        if cfg.data.val_fraction > 0:
            nv = int(round(len(perm) * cfg.data.val_fraction))
            val_idx, perm = perm[:nv], perm[nv:]
        if not perm:
            raise ConfigError("no training images left after train_limit/val_fraction")
        train_set = _Transformed(self.train_files, perm, tf_train)
        common = dict(
            workers=self.workers,
            device=trainer.rt.device,
            channels_last=trainer.rt.channels_last,
            mean=mean,
            std=std,
            seed=t.seed,
        )
        bs = min(t.batch_size, len(perm))
        dist = getattr(trainer, "dist", None)
        sampler = dist.sampler(train_set, True, t.seed, drop_last=True) if dist else None
        sharded = sampler is not None
        if cfg.data.sampler == "balanced":  # class-balanced draws (this rank's share)
            rank, world = (dist.rank, dist.world) if sharded else (0, 1)
            sampler = BalancedSampler(train_set.targets, t.seed, rank, world)
        if sharded:  # train.batch_size is the global batch
            bs = max(1, bs // dist.world)
        trainer.train_loader = StreamingLoader(
            train_set, bs, shuffle=True, drop_last=True, sampler=sampler, **common
        )
        val_set = _Transformed(self.val_files, list(range(len(self.val_files))), tf_eval)
        trainer.test_loader = StreamingLoader(
            val_set, t.eval_batch_size, shuffle=False, drop_last=False, **common
        )
        trainer.val = None
        if val_idx:
            trainer.val = StreamingLoader(
                _Transformed(self.train_files, val_idx, tf_eval),
                t.eval_batch_size,
                shuffle=False,
                drop_last=False,
                **common,
            )
        trainer.augment = augment
        trainer.generator = torch.Generator().manual_seed(t.seed)


class _Transformed(torch.utils.data.Dataset):
    """A subset of an ImageFolder with its own transform (train and val views share files)."""

    def __init__(self, files, indices: list[int], transform):
        self.files, self.indices, self.transform = files, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> list[int]:
        """The class index of every image of the subset (class counts, balanced sampling)."""
        return [self.files.targets[i] for i in self.indices]

    def __getitem__(self, i: int):
        path, y = self.files.samples[self.indices[i]]
        return self.transform(self.files.loader(path)), y


def load_imagefolder(
    folder: Path, size: int = 224, workers: int | None = None, mean=None, std=None
) -> FolderDataset:
    return FolderDataset(folder, size=size, workers=workers, mean=mean, std=std)
