"""One writer per run directory: a real second process is refused, a killed holder's lock
is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cnnlab.errors import CheckpointError
from cnnlab.runs.layout import read_metrics
from cnnlab.runs.lock import RunLock

from .conftest import SRC, cli_args, start

HOLD = (
    "import sys, time; from cnnlab.runs.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); time.sleep(60)"
)


def holder(run_dir) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=SRC),
    )
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_process_is_refused_naming_the_holder_and_a_killed_ones_lock_is_free(tmp_path):
    other = holder(tmp_path)
    try:
        with pytest.raises(CheckpointError, match=rf"in use by pid {other.pid} on \S+"):
            RunLock(tmp_path).acquire()
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    # the file is still there with the dead holder's pid: stale, because its lock is free
    assert str(other.pid) in (tmp_path / ".lock").read_text()
    with RunLock(tmp_path):
        with pytest.raises(CheckpointError, match=f"in use by pid {os.getpid()}"):
            RunLock(tmp_path).acquire()  # a second writer in the same process too
    RunLock(tmp_path).acquire().release()


@pytest.mark.slow
def test_two_resumes_of_a_live_run_cannot_both_train(tmp_path):
    runs = tmp_path / "runs"
    args = cli_args("train.checkpoint_every_steps=1", epochs=30)
    # the first run is slowed inside its checkpoint writes so that it is alive throughout
    first = start(["train", *args, "--runs-dir", str(runs), "--name", "live"],
                  CNNLAB_FAULT_SLEEP="0.5")  # fmt: skip
    run = runs / "live"
    t = time.monotonic()
    while not (run / "checkpoints" / "last.safetensors").exists():
        assert first.poll() is None and time.monotonic() - t < 120, first.communicate()
        time.sleep(0.05)
    second = start(["train", "--resume", str(run), "--quiet"])
    out, err = second.communicate(timeout=600)
    assert first.poll() is None, "the first run ended before the second one tried"
    assert second.returncode == 2, err
    assert f"is in use by pid {first.pid}" in err and "Traceback" not in err
    first.send_signal(signal.SIGKILL)  # the holder dies: its lock goes with it
    first.wait()
    done = len(read_metrics(run))
    third = start(["train", "--resume", str(run), "--quiet", "--epochs", str(done + 1)])
    out, err = third.communicate(timeout=600)
    assert third.returncode == 0, err
    assert [m["epoch"] for m in read_metrics(run)] == list(range(1, done + 2))


@pytest.mark.slow
def test_a_ddp_run_is_locked_by_its_rank_0(tmp_path):
    runs = tmp_path / "runs"
    args = cli_args("train.checkpoint_every_steps=1", epochs=30)
    p = start(["train", "--nproc", "2", *args, "--runs-dir", str(runs), "--name", "ddp"],
              CNNLAB_FAULT_SLEEP="0.5")  # fmt: skip
    run = runs / "ddp"
    try:
        t = time.monotonic()
        while not (run / "checkpoints" / "last.safetensors").exists():
            assert p.poll() is None and time.monotonic() - t < 300, p.communicate()
            time.sleep(0.1)
        with pytest.raises(CheckpointError, match=r"in use by pid \d+") as e:
            RunLock(run).acquire()
        holder_pid = int(str(e.value).split("in use by pid ")[1].split()[0])
        assert holder_pid != p.pid  # a rank (rank 0), not the launcher
        second = start(["train", "--resume", str(run), "--quiet"])
        _, err = second.communicate(timeout=600)
        assert p.poll() is None, "the DDP run ended before the second one tried"
        assert second.returncode == 2 and f"in use by pid {holder_pid}" in err, err
    finally:
        p.send_signal(signal.SIGTERM)  # the launcher forwards it: a clean stop
        p.communicate(timeout=600)
    RunLock(run).acquire().release()  # free again once the run has stopped
