"""A tiny trained run shared by the deploy tests (trained once per session, copied per test)."""

from __future__ import annotations

import shutil

import pytest

import cnnlab

FAST = [
    "data.name=synthetic",
    "data.num_train=256",
    "data.num_test=64",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.device=cpu",
]


@pytest.fixture(scope="session")
def _trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("deploy-runs")
    return cnnlab.fit(
        overrides=FAST, model="lenet5", epochs=1, name="tiny", runs_dir=str(d), quiet=True
    ).run_dir


@pytest.fixture
def tiny_run(_trained, tmp_path):
    dst = tmp_path / "tiny"
    shutil.copytree(_trained, dst)
    return dst
