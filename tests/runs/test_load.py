"""Loading a run's dataset back: only the split a command needs, and an image folder's
recorded split."""

import torch

from cnnlab.data.datasets import load_dataset
from cnnlab.runs.load import load_run_dataset

from ..conftest import make_idx_dataset


def test_the_test_split_alone_needs_only_the_t10k_files(tmp_path):
    d = make_idx_dataset(tmp_path / "mnist")
    full = load_dataset("mnist", d, download=False)
    (d / "train-images-idx3-ubyte.gz").unlink()  # eval must not need the training images
    meta = {"dataset": "mnist", "config": {"data": {"name": "mnist", "data_dir": str(d)}}}
    assert load_run_dataset(meta, split="test", download=False).num_train == full.num_train
    (d / "train-labels-idx1-ubyte.gz").unlink()
    meta = {"dataset": "mnist", "config": {"data": {"name": "mnist", "data_dir": str(d)}}}
    ds = load_run_dataset(meta, split="test", download=False)
    assert torch.equal(ds.test_x, full.test_x) and torch.equal(ds.test_y, full.test_y)
    assert ds.train_x.shape == (0, 1, 28, 28) and ds.channels == 1 and ds.size == 28
    assert ds.num_train == 0  # its labels are gone too: unknown


def test_an_image_folder_run_reads_its_recorded_split(tmp_path):
    from ..data.test_folder import make_flat

    root = make_flat(tmp_path / "imgs", n=5)
    trained = load_dataset("imagefolder", root, size=12, split_seed=3)
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text(trained.split_record())
    cfg = {"name": "imagefolder", "data_dir": str(root), "split_seed": 0, "size": 12}
    meta = {"dataset": "imagefolder", "config": {"data": cfg}}
    ds = load_run_dataset(meta, run_dir=run, split="test")
    assert torch.equal(ds.test_x, trained.test_x)  # split_seed 3's test set, from split.json
    assert not ds._parts.get("train")  # nothing but the test files decoded
    assert ds.num_train == len(trained.split.parts["train"]) and not ds._parts.get("train")
    fresh = load_run_dataset(meta, split="test")  # no split file: planned again (seed 0)
    assert fresh.split.parts["test"] != trained.split.parts["test"]
