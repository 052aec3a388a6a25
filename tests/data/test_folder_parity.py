"""A folder of PNGs written from Fashion-MNIST holds the very images of the IDX files:
decoded bit for bit, and trained on, the same run."""

from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.data.datasets import FASHION_CLASSES, load_dataset
from cnnlab.data.datatypes import Dataset
from cnnlab.data.folder import class_folder_name, write_image_folder
from cnnlab.data.formats import read_idx

FASHION = Path("/work/shared/data/fashion-mnist")
pytestmark = pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST not at hand"
)
N_TRAIN, N_TEST = 400, 200


def idx_part(prefix: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = read_idx(FASHION / f"{prefix}-images-idx3-ubyte.gz")[:n]
    y = read_idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz")[:n].astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(x))[:, None], torch.from_numpy(y)


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion-png")
    parts = {"train": idx_part("train", N_TRAIN), "test": idx_part("t10k", N_TEST)}
    for name, (x, y) in parts.items():
        write_image_folder(root / name, x, y, FASHION_CLASSES)
    return root, parts


def in_folder_order(ds, part: str, x: torch.Tensor, y: torch.Tensor):
    """The IDX images in the order the folder's split lists them (file name = IDX index),
    their labels renumbered as the folder numbers its classes (sorted folder names)."""
    idx = [int(Path(r).stem) for r, _ in ds.split.parts[part]]
    renumber = torch.tensor([ds.classes.index(class_folder_name(c)) for c in FASHION_CLASSES])
    return x[idx], renumber[y[idx]]


def test_decoded_folder_is_bit_identical_to_the_idx_tensors(fashion_folder):
    root, parts = fashion_folder
    ds = load_dataset("imagefolder", root)
    assert ds.channels == 1 and ds.size == 28 and ds.split.test_from == "test/"
    for part, (x, y) in parts.items():
        xi, yi = in_folder_order(ds, part, x, y)
        got_x, got_y = (ds.train_x, ds.train_y) if part == "train" else (ds.test_x, ds.test_y)
        assert got_x.dtype == torch.uint8 and torch.equal(got_x, xi) and torch.equal(got_y, yi)


def test_training_on_the_folder_is_training_on_the_idx_images(fashion_folder, tmp_path):
    root, parts = fashion_folder
    folder = load_dataset("imagefolder", root)
    (xtr, ytr), (xte, yte) = (in_folder_order(folder, p, *parts[p]) for p in ("train", "test"))
    idx = Dataset("fashion-idx", xtr, ytr, xte, yte, folder.classes, folder.mean, folder.std,
                  folder.augment)  # fmt: skip
    runs = []
    for ds in (folder, idx):
        res = cnnlab.fit(dataset=ds, model="lenet5", epochs=1, batch_size=64, device="cpu",
                         runs_dir=str(tmp_path), quiet=True, overrides=["train.deterministic=true"])  # fmt: skip
        runs.append(res.final)
    a, b = runs
    assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
    assert a["test_acc"] == b["test_acc"] and a["val_acc"] == b["val_acc"]
