"""DDP under torchrun: 2 CPU processes (gloo) match a 1-process run with the same global
batch. Not bit-exact: the gradient all-reduce and the metric sums add in another order,
so weights agree to ~1e-5 after a few steps (measured max |Δ| 6e-6 after 8 Adam steps)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics
from cnnlab.runtime.distributed import Dist, from_env

SETS = [
    "data.name=synthetic",
    "data.num_train=256",
    "data.num_test=64",
    "train.batch_size=64",  # the global batch: 32 per rank
    "train.eval_batch_size=64",
    "data.augment=none",  # augmentation draws per rank differ from one process's
    "train.checkpoint_every_steps=3",
]
SRC = str(Path(cnnlab.__file__).resolve().parents[1])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_gloo_processes_match_one(tmp_path):
    one = cnnlab.fit(
        overrides=SETS, device="cpu", epochs=2, runs_dir=str(tmp_path), name="one", quiet=True
    )
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "cnnlab", "train", "--nproc", "2", "--device", "cpu"]
    argv += sum((["--set", s] for s in SETS), [])
    argv += ["--epochs", "2", "--runs-dir", str(tmp_path), "--name", "two"]
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "DDP 2 ranks (gloo)" in p.stdout
    assert p.stdout.count("run directory:") == 1  # only rank 0 reports
    assert "Grad strides do not match" not in p.stderr
    two = tmp_path / "two"
    a = load_checkpoint(one.run_dir / "checkpoints" / "last.safetensors").model_state
    b = load_checkpoint(two / "checkpoints" / "last.safetensors").model_state
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-4)
    ra, rb = read_metrics(one.run_dir), read_metrics(two)
    assert [m["epoch"] for m in rb] == [1, 2]  # one line per epoch: only rank 0 writes
    for x, y in zip(ra, rb, strict=True):
        for k in ("train_loss", "test_loss"):
            assert y[k] == pytest.approx(x[k], rel=1e-5), k
        for k in ("train_acc", "test_acc"):  # counts: equal unless a logit tie flips
            assert abs(y[k] - x[k]) <= 1 / 64, k


def test_single_process_env_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d, dev = from_env(torch.device("cpu"))
    assert d == Dist() and not d.enabled and d.main and dev.type == "cpu"
    t = torch.ones(2)
    assert d.all_reduce(t) is t and d.broadcast("x") == "x"


def test_sharded_loader_covers_each_global_batch_once():
    from cnnlab.data.loader import ResidentLoader

    x = torch.arange(24, dtype=torch.uint8).reshape(24, 1, 1, 1)
    y = torch.arange(24)
    parts = []
    for r in range(2):
        g = torch.Generator().manual_seed(0)
        ld = ResidentLoader(x, y, 8, 0.0, 1.0, shuffle=True, drop_last=True, generator=g)
        ld.shard(r, 2)
        parts.append([yb for _, yb in ld])
    g = torch.Generator().manual_seed(0)
    whole = [yb for _, yb in ResidentLoader(x, y, 8, 0.0, 1.0, shuffle=True, generator=g)]
    for step, full in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][step], parts[1][step]]), full)
    with pytest.raises(ValueError, match="divisible"):
        ResidentLoader(x, y, 7, 0.0, 1.0).shard(0, 2)
