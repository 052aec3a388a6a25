"""A real `kill -9` during the first epoch's checkpoint writes (the fault hook only picks
the moment): the run resumes and ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import signal

import pytest
import torch

import cnnlab
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics

from .conftest import FAST, cli_args, start

DROP = ("seconds", "images_per_s", "eval_seconds")


def rows(run):
    return [{k: v for k, v in m.items() if k not in DROP} for m in read_metrics(run)]


@pytest.mark.slow
def test_kill_during_the_first_epochs_checkpoint_writes_then_resume_is_exact(tmp_path):
    ref = cnnlab.fit(overrides=FAST, device="cpu", epochs=2, runs_dir=str(tmp_path),
                     name="ref", quiet=True)  # fmt: skip
    want = load_checkpoint(ref.run_dir / "checkpoints" / "last.safetensors").model_state
    # epoch 1 ends: best (write 1), last (write 2), then its metrics.jsonl line
    for fault in ("ckpt-write:1", "ckpt-write:2", "metrics:1"):
        name = fault.replace(":", "-")
        p = start(["train", *cli_args(), "--runs-dir", str(tmp_path), "--name", name],
                  CNNLAB_FAULT=fault)  # fmt: skip
        _, err = p.communicate(timeout=300)
        assert p.returncode == -signal.SIGKILL, (fault, err)
        run = tmp_path / name
        p = start(["train", "--resume", str(run), "--quiet"])
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, (fault, err)
        got = load_checkpoint(run / "checkpoints" / "last.safetensors").model_state
        assert all(torch.equal(want[k], got[k]) for k in want), fault
        assert rows(run) == rows(ref.run_dir), fault
