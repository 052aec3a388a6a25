"""MNIST, Fashion-MNIST and CIFAR-10 from their official files (IDX, CIFAR's python
batches; the readers are in ``formats``): the loaders and the specs of their files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.data.datatypes import Dataset
from cnnlab.data.formats import read_cifar_batch, read_cifar_meta, read_idx
from cnnlab.data.lookup import DatasetSpec, find_variant
from cnnlab.errors import DataError


def _check_pair(x: np.ndarray, y: np.ndarray, xs: str, ys: str, num_classes: int) -> None:
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{xs} holds {x.shape[0]} images but {ys} holds {y.shape[0]} labels")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(f"{ys}: labels outside 0..{num_classes - 1}")


def _idx_images(path: Path) -> np.ndarray:
    arr = read_idx(path)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images (N, H, W), found {arr.dtype} {arr.shape}")
    return arr


def _idx_labels(path: Path) -> np.ndarray:
    arr = read_idx(path)
    if arr.ndim != 1:
        raise DataError(f"{path}: expected a 1-D label array, found shape {arr.shape}")
    return arr.astype(np.int64)


MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _idx_dataset(name, classes, mean, std, augment):
    def loader(folder: Path, split: str | None = None) -> Dataset:
        paths = [find_variant(folder, f) for f in MNIST_FILES]
        xte, yte = _idx_images(paths[2]), _idx_labels(paths[3])
        _check_pair(xte, yte, paths[2].name, paths[3].name, len(classes))
        n_train = None
        if split == "test":  # evaluation: the t10k images only (and the count of the others)
            xtr, ytr = xte[:0], yte[:0]
            n_train = len(_idx_labels(paths[1])) if paths[1] is not None else 0
        else:
            xtr, ytr = _idx_images(paths[0]), _idx_labels(paths[1])
            _check_pair(xtr, ytr, paths[0].name, paths[1].name, len(classes))
        if xtr.shape[1:] != xte.shape[1:]:
            raise DataError(f"{folder}: train images {xtr.shape[1:]} vs test {xte.shape[1:]}")
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        return Dataset(
            name,
            t(xtr)[:, None],
            t(ytr),
            t(xte)[:, None],
            t(yte),
            list(classes),
            mean,
            std,
            augment,
            str(folder),
            n_train,
        )

    return loader


MNIST = DatasetSpec(
    "mnist",
    "MNIST handwritten digits, 60k/10k, 28×28 gray (official IDX files)",
    _idx_dataset("mnist", [str(i) for i in range(10)], (0.1307,), (0.3081,), "none"),
    files={
        "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
    },
    mirrors=[
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    subdirs=("MNIST/raw",),
    test_files=MNIST_FILES[2:],
)

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

FASHION_MNIST = DatasetSpec(
    "fashion-mnist",
    "Fashion-MNIST clothing, 60k/10k, 28×28 gray (official IDX files)",
    _idx_dataset("fashion-mnist", FASHION_CLASSES, (0.2860,), (0.3530,), "crop,flip"),
    files={
        "train-images-idx3-ubyte.gz": "sha256:b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "sha256:0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "sha256:cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "sha256:8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
    mirrors=["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    subdirs=("FashionMNIST/raw",),
    test_files=MNIST_FILES[2:],
)

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _cifar_loader(folder: Path) -> Dataset:
    xs, ys = zip(*(read_cifar_batch(folder / f) for f in CIFAR_TRAIN), strict=True)
    xte, yte = read_cifar_batch(folder / "test_batch")
    classes = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        classes = read_cifar_meta(folder / "batches.meta") or classes
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return Dataset(
        "cifar10",
        t(np.concatenate(xs)),
        t(np.concatenate(ys)),
        t(xte),
        t(yte),
        list(classes),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        "crop,flip",
        str(folder),
    )


CIFAR10 = DatasetSpec(
    "cifar10",
    "CIFAR-10 objects, 50k/10k, 32×32 RGB (official python batches)",
    _cifar_loader,
    files={f: None for f in (*CIFAR_TRAIN, "test_batch")},
    mirrors=["https://www.cs.toronto.edu/~kriz/"],
    subdirs=("cifar-10-batches-py",),
    archive=("cifar-10-python.tar.gz", "md5:c58f30108f718f92721af3b95e74349a"),
)
