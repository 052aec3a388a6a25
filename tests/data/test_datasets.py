import numpy as np
import pytest
import torch

from cnnlab.data.datasets import list_datasets, load_dataset
from cnnlab.data.formats import write_idx
from cnnlab.errors import ConfigError, DataError

from ..conftest import make_cifar_dataset, make_idx_dataset


def test_registry_names():
    assert {"mnist", "fashion-mnist", "cifar10", "mnist-sample", "synthetic"} <= set(
        list_datasets()
    )


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("layout", ["flat", "named", "raw"])
def test_idx_datasets_found_in_each_layout(tmp_path, name, layout):
    folder = {"flat": tmp_path, "named": tmp_path / name, "raw": tmp_path / name}[layout]
    make_idx_dataset(folder, gz=layout != "raw")
    ds = load_dataset(name, tmp_path, download=False)
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (64, 1, 28, 28)
    assert ds.test_y.dtype == torch.int64 and len(ds.classes) == 10


def test_lookup_order_data_dir_then_env(tmp_path, monkeypatch):
    make_idx_dataset(tmp_path / "a" / "mnist", n_train=11)
    make_idx_dataset(tmp_path / "b" / "mnist", n_train=22)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "b"))
    assert len(load_dataset("mnist", download=False).train_x) == 22
    assert len(load_dataset("mnist", tmp_path / "a", download=False).train_x) == 11


def test_cifar_official_folder(tmp_path):
    make_cifar_dataset(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.test_x.shape == (20, 3, 32, 32)
    assert ds.classes[0] == "airplane" and ds.augment == "crop,flip"


def test_mismatched_counts_and_labels(tmp_path):
    make_idx_dataset(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="64 images but .* 5 labels"):
        load_dataset("mnist", tmp_path, download=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(64, 12, np.uint8))
    with pytest.raises(DataError, match="labels outside"):
        load_dataset("mnist", tmp_path, download=False)


def test_missing_offline(tmp_path):
    with pytest.raises(DataError, match="not found; put"):
        load_dataset("fashion-mnist", tmp_path, download=False)


def test_mnist_sample_is_real_and_deterministic():
    a = load_dataset("mnist-sample")
    b = load_dataset("mnist-sample")
    assert a.train_x.shape == (4000, 1, 28, 28) and a.test_x.shape == (1000, 1, 28, 28)
    assert torch.equal(a.test_y, b.test_y) and torch.equal(a.train_x, b.train_x)
    assert torch.bincount(a.test_y).min() >= 70  # stratified
    assert 0.1 < a.mean[0] < 0.2  # real digits: mostly dark background


def test_synthetic_options_and_errors():
    ds = load_dataset("synthetic", num_train=10, num_test=4, channels=3, size=32, num_classes=4)
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.num_classes == 4
    with pytest.raises(ConfigError, match="no option 'bogus'"):
        load_dataset("synthetic", bogus=1)
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; choose one of"):
        load_dataset("nope")


def test_the_mnist_sample_cache_is_used_only_when_its_checksum_holds():
    from cnnlab.data.datasets import user_cache_dir

    first = load_dataset("mnist-sample")
    cache = user_cache_dir() / "mnist-sample.npz"
    assert cache.is_file()
    with np.load(cache) as z:
        a = z["a"].copy()
    # a cache of another shape, one with shifted labels, one of the old format (no digest)
    shifted = a.copy()
    shifted[:, -1] = (shifted[:, -1] + 1) % 10
    for bad in (dict(a=a[:, :100]), dict(a=shifted), dict(a=shifted, meta=np.array("x:y"))):
        np.savez(cache, **bad)
        again = load_dataset("mnist-sample")
        assert torch.equal(again.train_y, first.train_y)
        assert torch.equal(again.test_x, first.test_x)
    with np.load(cache) as z:  # rebuilt and valid again
        assert np.array_equal(z["a"], a)
