"""SIGKILL `cnnlab train` at random points (mid-epoch, mid-checkpoint-write), resume each
time, and check the final weights and metrics equal an uninterrupted run bit for bit
(CPU, deterministic mode, 1 thread: the same kernels in the same order)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics

ARGS = [
    "--set", "data.name=synthetic", "--set", "data.num_train=192", "--set", "data.num_test=64",
    "--set", "train.batch_size=32", "--set", "train.eval_batch_size=64",
    "--set", "train.deterministic=true", "--set", "train.threads=1",
    "--set", "train.checkpoint_every_steps=2", "--set", "data.augment=crop,flip",
    "--device", "cpu", "--epochs", "3",
]  # fmt: skip
SRC = str(Path(cnnlab.__file__).resolve().parents[1])


def start(args, **env):
    e = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    return subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "train", *args],
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(pred, proc, timeout=60.0):
    t = time.monotonic()
    while not pred():
        if proc.poll() is not None or time.monotonic() - t > timeout:
            return False
        time.sleep(0.01)
    return True


def state_is_recoverable(run: Path) -> None:
    """After any kill: last or prev loads and passes its checksum."""
    ck = run / "checkpoints"
    good = []
    for name in ("last", "prev"):
        try:
            good.append(load_checkpoint(ck / f"{name}.safetensors"))
        except cnnlab.CnnlabError:
            pass
    assert good or not ck.exists()


@pytest.mark.slow  # tens of seconds: `make test-slow`
def test_sigkill_anywhere_then_resume_matches_uninterrupted(tmp_path):
    rng = random.Random(8)
    ref = cnnlab.fit(
        overrides=[a for a in ARGS[1:18:2]], device="cpu", epochs=3,
        runs_dir=str(tmp_path), name="ref", quiet=True,
    )  # fmt: skip
    run = tmp_path / "killed"
    first = ARGS + ["--runs-dir", str(tmp_path), "--name", "killed", "--quiet"]
    resume = ["--resume", str(run), "--quiet"]
    # (how the process dies, fault hook): 18 steps, a checkpoint every 2 → 9 + best/last
    plan = [
        ("SIGKILL mid-epoch", {"CNNLAB_FAULT": f"step:{rng.randint(2, 5)}"}),
        ("SIGKILL halfway through a checkpoint write", {"CNNLAB_FAULT": "ckpt-half:1"}),
        ("SIGKILL between rotating prev and renaming last", {"CNNLAB_FAULT": "ckpt-rotate:1"}),
        ("SIGKILL after the temp file, before rotation", {"CNNLAB_FAULT": "ckpt-write:2"}),
        ("external SIGKILL while a checkpoint is written", {"CNNLAB_FAULT_SLEEP": "0.3"}),
        ("external SIGTERM at a random time", {"CNNLAB_FAULT_SLEEP": "0.2"}),
    ]
    for i, (what, env) in enumerate(plan):
        ck = run / "checkpoints"
        stale = set(ck.glob(".*.tmp"))
        new_tmp = lambda ck=ck, stale=stale: set(ck.glob(".last.safetensors.*.tmp")) - stale  # noqa: E731  # left by an earlier kill; the resume removes them
        term = what.startswith("external SIGTERM")
        # not quiet for SIGTERM: the "run ..." line says the signal handlers are set
        p = start(first if i == 0 else resume[:-1] if term else resume, **env)
        if what.startswith("external SIGKILL"):
            assert wait_for(new_tmp, p)
            p.send_signal(signal.SIGKILL)
        elif term:
            assert p.stdout.readline().startswith("run ")
            time.sleep(rng.uniform(0.0, 0.5))
            p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
        if term:
            assert p.returncode == 0, err
            assert f"Resume with: cnnlab train --resume {run}" in out
        else:
            assert p.returncode == -signal.SIGKILL, (what, p.returncode, err)
        state_is_recoverable(run)
        # the kill really landed inside the run: it had not finished its 3 epochs
        assert len(read_metrics(run)) < 3, what
    p = start(resume)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "test accuracy" in out
    a = load_checkpoint(ref.run_dir / "checkpoints" / "last.safetensors").model_state
    b = load_checkpoint(run / "checkpoints" / "last.safetensors").model_state
    for k in a:
        assert torch.equal(a[k], b[k]), k
    drop = ("seconds", "images_per_s", "eval_seconds")
    ra = [{k: v for k, v in m.items() if k not in drop} for m in read_metrics(ref.run_dir)]
    rb = [{k: v for k, v in m.items() if k not in drop} for m in read_metrics(run)]
    assert ra == rb and [m["epoch"] for m in rb] == [1, 2, 3]
    assert not list((run / "checkpoints").glob(".*"))  # no temp files left behind
