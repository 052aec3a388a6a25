"""Crash safety in-process: mid-epoch resume, rotation fallback, signals, NaN guard, disk errors."""

import errno
import os
import signal

import pytest
import torch

from cnnlab.config import OptimConfig
from cnnlab.errors import CheckpointError
from cnnlab.runs import checkpoint as ckmod
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics
from cnnlab.train import trainer as trmod
from cnnlab.train.callbacks import Callback, NonFiniteLoss
from cnnlab.train.tasks import classify as clsmod

from ..runs.conftest import FAST  # tiny synthetic runs, CPU, deterministic
from ..runs.conftest import fit_run as run


def weights(run_dir, which="last"):
    return load_checkpoint(run_dir / "checkpoints" / f"{which}.safetensors").model_state


def assert_same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    drop = ("seconds", "images_per_s", "eval_seconds")
    ra = [{k: v for k, v in m.items() if k not in drop} for m in read_metrics(a)]
    rb = [{k: v for k, v in m.items() if k not in drop} for m in read_metrics(b)]
    assert ra == rb


class SignalAt(Callback):
    """Send ourselves a signal at (epoch, step), as Ctrl-C or `kill -TERM` would."""

    def __init__(self, epoch, step, sig=signal.SIGTERM):
        self.at, self.sig, self.epoch = (epoch, step), sig, 0

    def on_epoch_start(self, trainer, epoch):
        self.epoch = epoch

    def on_step(self, trainer, step, loss):
        if (self.epoch, step) == self.at:
            os.kill(os.getpid(), self.sig)


def test_signal_mid_epoch_then_resume_is_exact(tmp_path, capsys):
    six = ["train.checkpoint_every_steps=4", "data.val_fraction=0"]  # 6 steps per epoch
    full = run(tmp_path, *six, name="full")
    part = run(tmp_path, *six, name="part", callbacks=[SignalAt(2, 3)])
    assert part.interrupted and [m["epoch"] for m in part.history] == [1]
    out = capsys.readouterr()
    assert "stopped by SIGTERM at epoch 2, step 3" in out.out
    assert f"cnnlab train --resume {part.run_dir}" in out.out
    ck = load_checkpoint(part.run_dir / "checkpoints" / "last.safetensors")
    assert ck.meta["position"]["epoch"] == 2 and ck.meta["position"]["step"] == 3
    assert (part.run_dir / "checkpoints" / "prev.safetensors").is_file()
    # the resumed run crosses a step checkpoint (step 4 of epoch 2) on its way
    res = run(tmp_path, resume=part.run_dir)
    assert not res.interrupted
    assert_same_run(full.run_dir, res.run_dir)

    # Ctrl-C on the last step of an epoch: the position is the epoch's end
    steps = 192 // 32
    part = run(tmp_path, *six, name="p2", callbacks=[SignalAt(1, steps, signal.SIGINT)])
    assert part.interrupted and "stopped by SIGINT" in capsys.readouterr().out
    ck = load_checkpoint(part.run_dir / "checkpoints" / "last.safetensors")
    assert ck.meta["position"]["step"] == steps
    res = run(tmp_path, resume=part.run_dir)
    assert [m["epoch"] for m in res.history] == [1, 2]
    assert_same_run(full.run_dir, res.run_dir)


def test_resume_falls_back_to_prev_when_last_is_damaged(tmp_path, capsys):
    full = run(tmp_path, name="full")
    base = run(tmp_path, name="base", callbacks=[SignalAt(2, 1)])
    ck = base.run_dir / "checkpoints"
    assert load_checkpoint(ck / "prev.safetensors").meta["epoch"] == 1
    for damage in ("truncate", "flip", "delete"):
        d = tmp_path / damage
        d.mkdir()
        os.system(f"cp -r {base.run_dir}/. {d}/")
        last = d / "checkpoints" / "last.safetensors"
        raw = last.read_bytes()
        if damage == "truncate":
            last.write_bytes(raw[: len(raw) // 2])
        elif damage == "flip":
            last.write_bytes(raw[:-100] + bytes([raw[-100] ^ 0xFF]) + raw[-99:])
        else:
            last.unlink()
        res = run(tmp_path, resume=d)
        err = capsys.readouterr().err
        assert "resuming from the previous checkpoint" in err, damage
        assert_same_run(full.run_dir, res.run_dir)


def test_no_checkpoint_yet_starts_over(tmp_path, capsys):
    d = tmp_path / "early"
    full = run(tmp_path, epochs=1, name="full")
    d.mkdir()
    (d / "config.yaml").write_text((full.run_dir / "config.yaml").read_text())
    res = run(tmp_path, epochs=1, resume=d)
    assert "no checkpoint yet" in capsys.readouterr().err
    assert_same_run(full.run_dir, res.run_dir)


def nan_loss_at(monkeypatch, calls):
    """Make the training loss NaN at the given 1-based loss calls."""
    real = clsmod.build_loss
    count = {"n": 0}

    def build(*a, **k):
        fn = real(*a, **k)

        def loss(out, y):
            count["n"] += 1
            v = fn(out, y)
            return v * float("nan") if count["n"] in calls else v

        return loss

    monkeypatch.setattr(clsmod, "build_loss", build)


def test_nan_stop_names_epoch_and_step_and_keeps_last_good(tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, {6 + 4})  # epoch 2, step 4 (6 steps per epoch)
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 4 \(global step 10\)"):
        run(tmp_path, "train.checkpoint_every_steps=5", "data.val_fraction=0", name="nan")
    ck = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.safetensors")
    assert ck.meta["epoch"] == 1 and "position" not in ck.meta  # the epoch-1 one, not step 11
    assert all(torch.isfinite(v).all() for v in ck.model_state.values())
    assert [m["epoch"] for m in read_metrics(tmp_path / "nan")] == [1]


def test_nan_skip_skips_the_step_and_lowers_lr(tmp_path, monkeypatch, capsys):
    nan_loss_at(monkeypatch, {3})
    res = run(tmp_path, "train.nan_policy=skip", "sched.name=constant", name="skip", epochs=1)
    assert "non-finite loss at epoch 1, step 3: step skipped" in capsys.readouterr().err
    m = res.final
    assert m["skipped_steps"] == 1 and torch.isfinite(torch.tensor(m["train_loss"]))
    ck = load_checkpoint(res.run_dir / "checkpoints" / "last.safetensors")
    assert ck.meta["lr_scale"] == 0.5
    assert ck.optimizer_state()["param_groups"][0]["lr"] == pytest.approx(OptimConfig().lr * 0.5)
    assert all(torch.isfinite(v).all() for v in ck.model_state.values())


def test_disk_full_during_checkpoint_leaves_nothing_corrupt(tmp_path, monkeypatch):
    res = run(tmp_path, epochs=1, name="disk")
    ck = res.run_dir / "checkpoints"
    before = (ck / "last.safetensors").read_bytes()
    real = ckmod.save_file

    def full_disk(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)
        with open(path, "r+b") as f:  # a partial file, then the disk is full
            f.truncate(100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckmod, "save_file", full_disk)
    with pytest.raises(CheckpointError) as e:
        run(tmp_path, epochs=2, resume=res.run_dir)
    msg = str(e.value)
    assert "No space left on device" in msg and "--resume" in msg and "\n" not in msg
    assert sorted(p.name for p in ck.iterdir()) == ["best.safetensors", "last.safetensors"]
    assert (ck / "last.safetensors").read_bytes() == before
    monkeypatch.setattr(ckmod, "save_file", real)
    assert run(tmp_path, epochs=2, resume=res.run_dir).final["epoch"] == 2


def test_disk_full_during_metrics_append_leaves_no_torn_line(tmp_path, monkeypatch):
    res = run(tmp_path, epochs=1, name="m")
    p = res.run_dir / "metrics.jsonl"
    before = p.read_bytes()
    real_fsync = os.fsync

    def failing_fsync(fd):
        if os.path.realpath(f"/proc/self/fd/{fd}") == str(p.resolve()):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(trmod.os, "fsync", failing_fsync)
    with pytest.raises(CheckpointError, match="cannot append to .*No space left"):
        run(tmp_path, epochs=2, resume=res.run_dir)
    assert p.read_bytes() == before


def test_unwritable_runs_dir_is_one_line_exit_2(tmp_path):
    from cnnlab.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    # root ignores chmod, so an unwritable place is a path through a regular file
    rc = main(["train", *sum((["--set", o] for o in FAST), []), "--epochs", "1", "--quiet", "--device", "cpu",
               "--runs-dir", str(blocker / "runs")])  # fmt: skip
    assert rc == 2


def test_resume_removes_temp_files_of_a_killed_checkpoint_write(tmp_path):
    first = run(tmp_path, epochs=1, name="t")
    ck = first.run_dir / "checkpoints"
    # ours (.<name>.XXXX.tmp) and the one safetensors' save_file writes through (.tmpXXXXXX)
    junk = [ck / ".last.safetensors.ab12.tmp", ck / ".tmp4WsXVs"]
    for j in junk:
        j.write_bytes(b"partial")
    res = run(tmp_path, epochs=2, resume=first.run_dir)
    assert [m["epoch"] for m in res.history][-1] == 2
    assert not any(j.exists() for j in junk)
