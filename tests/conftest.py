"""Shared fixtures: tiny datasets written in the official formats into a temp dir."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from cnnlab.data.formats import write_cifar_batch, write_idx

MNIST_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


# The autouse fixture below hides CNNLAB_DATA from unit tests; the integration test reads
# the value it had when the session started.
if os.environ.get("CNNLAB_DATA"):
    os.environ.setdefault("CNNLAB_DATA_AT_START", os.environ["CNNLAB_DATA"])


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped, with the reason, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu test: needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory, monkeypatch):
    """Keep tests away from the user's cache and data, and keep them fast on 2 cores."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def make_idx_dataset(folder, n_train=64, n_test=32, size=28, num_classes=10, seed=0, gz=True):
    """Learnable fake MNIST: class k has a bright block at a class-specific place."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def make(n):
        y = rng.integers(0, num_classes, n).astype(np.uint8)
        x = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
        for i, c in enumerate(y):
            r, col = divmod(int(c), 4)
            x[i, 2 + r * 8 : 8 + r * 8, 2 + col * 6 : 7 + col * 6] = 230
        return x, y

    xtr, ytr = make(n_train)
    xte, yte = make(n_test)
    for name, arr in zip(MNIST_NAMES, (xtr, ytr, xte, yte), strict=True):
        write_idx(folder / (name if gz else name[:-3]), arr, compress=gz)
    return folder


def make_cifar_dataset(folder, per_batch=20, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        write_cifar_batch(
            folder / f"data_batch_{i}",
            rng.integers(0, 256, (per_batch, 3, 32, 32)),
            rng.integers(0, 10, per_batch),
        )
    write_cifar_batch(
        folder / "test_batch",
        rng.integers(0, 256, (n_test, 3, 32, 32)),
        rng.integers(0, 10, n_test),
    )
    return folder


@pytest.fixture
def mnist_dir(tmp_path):
    return make_idx_dataset(tmp_path / "mnist")


@pytest.fixture
def cifar_dir(tmp_path):
    return make_cifar_dataset(tmp_path / "cifar10" / "cifar-10-batches-py")


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory):
    """A LeNet-5 (in-place ReLUs) trained for a few seconds on the synthetic set: a run
    directory for the analysis tests (explain, robustness). Copy it before writing into it."""
    import cnnlab

    res = cnnlab.fit(
        overrides=[
            "data.name=synthetic",
            "data.num_train=512",
            "data.num_test=128",
            "model.activation=relu",
            "train.batch_size=32",
            "train.eval_batch_size=128",
            "train.device=cpu",
        ],
        epochs=3,
        name="tiny",
        runs_dir=str(tmp_path_factory.mktemp("runs")),
        quiet=True,
    )
    assert res.final["test_acc"] > 0.8
    return res.run_dir


@pytest.fixture(scope="session")
def augmented_run(tmp_path_factory):
    """A run trained one short epoch with crop and flip augmentation (ten test-time
    augmentation views). Copy it before writing into it."""
    import cnnlab

    return cnnlab.fit(
        overrides=[
            "data.name=synthetic",
            "data.num_train=96",
            "data.num_test=16",
            "train.batch_size=32",
            "train.device=cpu",
            "train.diagnostics=false",
            "train.report=false",
            "data.augment=crop,flip",
        ],
        epochs=1,
        runs_dir=str(tmp_path_factory.mktemp("runs")),
        name="augmented",
        quiet=True,
    ).run_dir


@pytest.fixture
def tiny_run(tiny_trained_run, tmp_path):
    """A copy of the shared tiny run that a test may write into."""
    dst = tmp_path / "tiny"
    shutil.copytree(tiny_trained_run, dst)
    return dst
