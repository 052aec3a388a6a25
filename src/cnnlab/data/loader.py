"""The fast path for small datasets: the whole set lives on the device as uint8.

A batch is an index slice of a random permutation; conversion to float, optional
resize/grayscale, augmentation and normalisation run batched on the device. No
DataLoader, no per-sample Python, no host sync.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from cnnlab.data import augment as aug

_MIX = torch.tensor([1, 31, 961, 29_791, 923_521, 28_629_151, 887_503_681, 27_512_614_111])


class ResidentLoader:
    """Iterate (x float (B, C, H, W) normalised, y int64 (B,)) over device tensors."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        mean,
        std,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: tuple[str, ...] = (),
        pad: int = 2,
        resize: int | None = None,
        grayscale: bool = False,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        train: bool | None = None,
        balanced: bool = False,
    ):
        self.device = torch.device(device)
        self.x = x.to(self.device, non_blocking=True)
        self.y = y.to(self.device, non_blocking=True)
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.augment, self.pad = tuple(augment), pad
        self.resize, self.grayscale = resize, grayscale
        self.generator = generator
        self.channels_last = channels_last
        self.dtype = dtype
        self.train = shuffle if train is None else train  # augment only when training
        # data.sampler=balanced: each draw picks a class uniformly, then one of its images
        self.balanced = balanced
        self.weights = balanced_weights(self.y).to(self.device) if balanced else None
        c = 1 if grayscale else x.shape[1]
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if grayscale and mean.numel() == 3:
            w = torch.tensor([0.299, 0.587, 0.114])
            mean, std = (mean * w).sum().reshape(1), (std * w).sum().reshape(1)
        mean = mean.expand(c) if mean.numel() == 1 else mean
        std = std.expand(c) if std.numel() == 1 else std
        # x_norm = (x/255 - mean)/std folded into one multiply-add
        self.scale = (1.0 / (255.0 * std)).reshape(1, c, 1, 1).to(self.device)
        self.shift = (-mean / std).reshape(1, c, 1, 1).to(self.device)
        self.mean = mean.reshape(1, c, 1, 1).to(self.device)
        self.std = std.reshape(1, c, 1, 1).to(self.device)

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self) * self.batch_size if self.drop_last else int(self.x.shape[0])

    def order(self) -> torch.Tensor:
        """The epoch's indices: a permutation, or (balanced) as many class-balanced draws
        with replacement — both from ``generator``, so every rank of a sharded run draws
        the same global order and a resumed epoch (the generator's state restored) too."""
        n = self.x.shape[0]
        if self.shuffle:
            g = self.generator
            dev = g.device if g is not None else self.device
            if self.balanced:
                w = self.weights.to(dev)
                return torch.multinomial(w, n, replacement=True, generator=g).to(self.device)
            return torch.randperm(n, generator=g, device=dev).to(self.device)
        return torch.arange(n, device=self.device)

    def pixels(self, xb: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 batch → float in [0, 1], resized/grayscaled/augmented as configured."""
        x = xb.float().div_(255.0)
        if self.grayscale and x.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114], device=x.device).reshape(1, 3, 1, 1)
            x = (x * w).sum(1, keepdim=True)
        if self.resize and self.resize != x.shape[-1]:
            x = F.interpolate(
                x, size=(self.resize, self.resize), mode="bilinear", align_corners=False
            )
        if train and self.augment:
            x = aug.apply(x, self.augment, self.pad, self._gen(x))
        return x

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.mean) / self.std

    def _gen(self, x: torch.Tensor) -> torch.Generator | None:
        g = self.rank_generator if self.rank_generator is not None else self.generator
        return g if g is not None and g.device == x.device else None

    def prepare(self, xb: torch.Tensor, train: bool) -> torch.Tensor:
        ops = self.augment if train else ()
        if not self.resize and not self.grayscale:
            # crop and flip move whole pixels: done on the uint8 batch (4× fewer bytes than
            # float, the same result), then one fused multiply-add normalises
            n = 0
            while n < len(ops) and ops[n] in aug.GEOMETRIC:
                n += 1
            if n:
                xb = aug.apply(xb, ops[:n], self.pad, self._gen(xb))
            if n == len(ops):
                x = torch.addcmul(self.shift, xb.to(torch.float32), self.scale)
            else:
                x = xb.float().div_(255.0)
                x = self.normalize(aug.apply(x, ops[n:], self.pad, self._gen(x)))
        else:
            x = self.normalize(self.pixels(xb, train))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.dtype) if self.dtype != torch.float32 else x

    def shard(self, rank: int, world: int) -> None:
        """Data-parallel sharding: every rank draws the same global permutation (same
        generator seed) and takes its contiguous ``batch_size / world`` slice of each
        global batch, so the global batch is the same as a 1-process run's."""
        if self.batch_size % world:
            raise ValueError(f"batch size {self.batch_size} is not divisible by {world} ranks")
        self.rank, self.world = int(rank), int(world)

    rank, world = 0, 1
    rank_generator: torch.Generator | None = None  # sharded: this rank's augmentation draws

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate()

    def iterate(
        self, start_step: int = 0, order: torch.Tensor | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches from step ``start_step`` on; ``order`` replays a saved epoch's permutation
        (exact mid-epoch resume) instead of drawing a new one."""
        idx = self.order() if order is None else order
        n = idx.numel()
        b = self.batch_size
        lb = b // self.world  # per-rank slice of the global batch
        off = self.rank * lb
        stop = (n // b) * b if self.drop_last else n
        train = self.train
        # sharded: each rank draws its own augmentations (the shared generator would give
        # every rank the same ones), re-seeded each step from the epoch's order, the step
        # and the rank, so a resumed epoch redraws them exactly and the ranks' shared
        # generator stays in step for the next permutation
        key = int((idx[:8].long().cpu() * _MIX[: min(8, n)]).sum()) if self.world > 1 else 0
        for i in range(start_step * b, stop, b):
            if self.world > 1 and train and self.augment:
                g = self.generator
                dev = g.device if g is not None else self.device
                seed = (key * 1_000_003 + i // b) * 1_009 + self.rank
                self.rank_generator = torch.Generator(dev).manual_seed(seed % 2**63)
            if self.shuffle:
                j = idx[i + off : i + off + lb]
                yield self.prepare(self.x[j], train), self.y[j]
            else:
                yield self.prepare(self.x[i : i + b], train), self.y[i : i + b]


def balanced_weights(y: torch.Tensor) -> torch.Tensor:
    """Per-image sampling weights 1 / (images of its class), float64 on ``y``'s device:
    every class is drawn equally often."""
    y = y.long()
    counts = torch.bincount(y)
    return 1.0 / counts.index_select(0, y).double()


class BalancedSampler(torch.utils.data.Sampler):
    """``data.sampler=balanced`` for a streaming (DataLoader) loader: each epoch draws as
    many indices as there are images, class-balanced, with replacement, from a generator
    seeded by (seed, epoch) — so a resumed epoch draws the same. Under DDP every rank draws
    the same global order and takes every ``world``-th index from its ``rank`` on (its
    ``1/world`` share, as DistributedSampler with drop_last)."""

    def __init__(self, labels, seed: int, rank: int = 0, world: int = 1):
        self.weights = balanced_weights(torch.as_tensor(labels).cpu())
        self.seed, self.rank, self.world = int(seed), int(rank), int(world)
        self.total = len(self.weights)
        self.per_rank = self.total // self.world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> torch.Tensor:
        """This rank's indices for the current epoch."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        idx = torch.multinomial(self.weights, self.total, replacement=True, generator=g)
        return idx[self.rank : self.per_rank * self.world : self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.per_rank
