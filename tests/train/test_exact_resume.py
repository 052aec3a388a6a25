"""A run records the numerics it trains with, and ``--resume`` computes with them again:
kill-and-resume is bit-identical for every Task even when the thread count the machine
would give has changed between the kill and the resume (other jobs, another CPU set).

The original run is SIGKILLed in a process pinned to one core, so it trains with one
thread; the resume runs with two cores, and (auto-measure) with a measurement that finds
them idle — it must still compute with the one thread it trained with."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.cli import main
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics
from cnnlab.runtime import device, numerics

from .test_tasks import COMMON as TASK_COMMON
from .test_tasks import assert_same_run

SRC = str(Path(cnnlab.__file__).resolve().parents[1])
# the Task tests' tiny setting, without their pinned thread count and deterministic mode
COMMON = [
    *(o for o in TASK_COMMON if o not in ("train.deterministic=true", "train.threads=1")),
    "train.checkpoint_every_steps=2",
]
GAN = ["model.name=dcgan", "gan.width=8", "gan.z_dim=8", "gan.grid=2", "gan.eval_samples=32"]
TASKS = {  # each Task, with the default thread rule or the load-measuring one
    "classify": ["data.augment=crop,flip"],
    "adversarial": ["train.adversarial=fgsm", "train.eps=0.05", "train.threads=auto-measure"],
    "fixmatch": [
        "data.labels_per_class=4",
        "train.semi=fixmatch",
        "train.semi_ratio=2",
        "train.steps_per_epoch=5",
        "train.ema=0.9",
    ],  # fmt: skip
    "gan": [*GAN, "sched.name=constant", "data.augment=none", "train.threads=auto-measure"],
}

needs_two_cores = pytest.mark.skipif(
    device.available_cores() < 2, reason="needs 2 cores: the resume must be offered another count"
)


def sets(task, *extra):
    return [a for o in (*COMMON, *TASKS[task], *extra) for a in ("--set", o)]


def one_core():
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def killed_on_one_core(tmp_path, task) -> Path:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("OMP_NUM_THREADS", None)
    p = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--quiet", *sets(task), "--epochs", "2",
         "--runs-dir", str(tmp_path), "--name", "killed"],
        env=dict(env, CNNLAB_FAULT="step:7"), preexec_fn=one_core, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == -signal.SIGKILL, p.stderr
    run = tmp_path / "killed"
    ck = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert ck.meta["position"]["epoch"] == 2  # killed inside epoch 2
    assert ck.meta["numerics"]["threads"] == 1 and ck.meta["numerics"]["torch"] == torch.__version__
    return run


@needs_two_cores
@pytest.mark.parametrize("task", list(TASKS))
def test_kill_then_resume_under_another_thread_offer_is_bit_identical(
    tmp_path, task, monkeypatch, capsys
):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device, "_MEASURED", {})
    run = killed_on_one_core(tmp_path, task)
    # the uninterrupted run, offered one core as the killed one was
    with monkeypatch.context() as m:
        m.setattr(device.os, "sched_getaffinity", lambda pid: {0})
        args = ["train", "--quiet", *sets(task), "--epochs", "2", "--runs-dir", str(tmp_path)]
        assert main([*args, "--name", "ref"]) == 0
    # the resume is offered two idle cores (measured so): it keeps the run's one thread
    monkeypatch.setattr(device, "threads_pay", lambda n: 1.9)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "cpu (1 thread: as the run trained with; 2 would be chosen now)" in out
    assert_same_run(tmp_path / "ref", run)


def test_thread_counts_change_the_numbers_so_the_record_matters(tmp_path):
    """Why the count is recorded: the same run on 1 and on 2 threads differs in its bits."""
    if device.available_cores() < 2:
        pytest.skip("needs 2 cores")
    base = ["train", "--quiet", *sets("classify"), "--epochs", "1", "--runs-dir", str(tmp_path)]
    for n in (1, 2):
        assert main([*base, "--name", f"t{n}", "--set", f"train.threads={n}"]) == 0
    a = load_checkpoint(tmp_path / "t1" / "checkpoints" / "last.safetensors").model_state
    b = load_checkpoint(tmp_path / "t2" / "checkpoints" / "last.safetensors").model_state
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_a_resume_that_cannot_compute_the_same_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    args = ["train", "--quiet", *sets("classify"), "--set", "train.threads=1"]
    assert main([*args, "--epochs", "1", "--runs-dir", str(tmp_path), "--name", "r"]) == 0
    run = tmp_path / "r"
    real = numerics.record
    monkeypatch.setattr(numerics, "record", lambda rt: dict(real(rt), torch="9.9.9"))
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("cnnlab: error: cannot resume")
    assert f"torch {torch.__version__} → 9.9.9" in err and "train.exact_resume=false" in err
    assert len(read_metrics(run)) == 1  # nothing was trained or written
    # asked for: it continues, and says the numbers will differ
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet",
                 "--set", "train.exact_resume=false"]) == 0  # fmt: skip
    assert "will not match an uninterrupted run" in capsys.readouterr().err
    assert len(read_metrics(run)) == 2


def test_asking_for_another_thread_count_on_resume_is_honoured_and_warned(tmp_path, capsys):
    args = ["train", "--quiet", *sets("classify"), "--set", "train.threads=1"]
    assert main([*args, "--epochs", "1", "--runs-dir", str(tmp_path), "--name", "r"]) == 0
    capsys.readouterr()
    run = tmp_path / "r"
    assert main(["train", "--resume", str(run), "--epochs", "2", "--set", "train.threads=2"]) == 0
    cap = capsys.readouterr()
    assert "cpu (2 threads: train.threads)" in cap.out
    assert "differs from the 1 the run trained with" in cap.err
    ck = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert ck.meta["numerics"]["threads"] == 2  # what it computes with from now on
