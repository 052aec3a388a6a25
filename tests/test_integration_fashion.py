"""One short epoch on the real Fashion-MNIST when CNNLAB_DATA points at it (CI does)."""

import os
from pathlib import Path

import pytest

import cnnlab
from cnnlab.data.datasets import DATASETS, locate

ROOT = os.environ.get("CNNLAB_DATA_REAL") or os.environ.get("CNNLAB_DATA_AT_START")


@pytest.mark.skipif(
    not ROOT or locate(DATASETS.get("fashion-mnist"), ROOT) is None,
    reason="real Fashion-MNIST not available (set CNNLAB_DATA)",
)
def test_one_epoch_real_fashion_mnist(tmp_path):
    ds = cnnlab.load_dataset("fashion-mnist", ROOT, download=False)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    res = cnnlab.fit(
        recipe="recipes/lenet5-fashion-mnist.yaml",
        dataset=ds,
        epochs=1,
        runs_dir=str(tmp_path),
        quiet=True,
        overrides=["train.device=cpu"],
    )
    assert res.final["test_acc"] > 0.80  # one epoch of the real data, far above chance
    assert Path(res.run_dir, "checkpoints", "best.safetensors").is_file()
