"""Resume against damaged or mismatched runs, a real divergence, and a config that cannot
train: refused in one line before anything is written, and nothing lost."""

from __future__ import annotations

import shlex

import pytest
import torch

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics
from cnnlab.train.callbacks import Callback

from ..conftest import make_idx_dataset
from .conftest import FAST, fit_run


def fit(tmp_path, *extra, epochs=1, **kw):
    return fit_run(tmp_path, *extra, epochs=epochs, **kw)


def files(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_with_another_optimiser_or_architecture_is_refused_before_writing(tmp_path):
    run = fit(tmp_path).run_dir
    before = files(run)
    for change in ("optim.name=sgd", "model.batch_norm=both"):
        with pytest.raises(CheckpointError, match="cannot resume .* with a different") as e:
            cnnlab.fit(overrides=[change], epochs=2, resume=run, quiet=True)
        assert "\n" not in str(e.value)
        assert files(run) == before, change  # config.yaml and the rest untouched
    res = cnnlab.fit(epochs=2, resume=run, quiet=True)  # a plain resume still works
    assert [m["epoch"] for m in res.history] == [1, 2]


class StopAfter(Callback):
    """SIGTERM-like stop after ``step`` steps of the resumed run."""

    def __init__(self, step):
        self.step = step

    def on_step(self, trainer, step, loss):
        if step >= self.step:
            trainer._signal = 15


def test_after_a_fallback_to_prev_the_corrupt_last_is_never_rotated_into_prev(tmp_path):
    run = fit(tmp_path, "train.checkpoint_every_steps=2", epochs=2, name="fb",
              callbacks=[StopAfter(5)]).run_dir  # fmt: skip
    ck = run / "checkpoints"
    good_prev = (ck / "prev.safetensors").read_bytes()
    raw = (ck / "last.safetensors").read_bytes()
    (ck / "last.safetensors").write_bytes(raw[:-100] + bytes([raw[-100] ^ 0xFF]) + raw[-99:])
    # resume (falls back to prev) and stop after its first new checkpoint
    fit(tmp_path, resume=run, epochs=2, callbacks=[StopAfter(1)])
    assert (ck / "prev.safetensors").read_bytes() == good_prev  # still the good one
    load_checkpoint(ck / "last.safetensors")  # the new last is good
    # one more fault on last: prev still saves the run
    raw = (ck / "last.safetensors").read_bytes()
    (ck / "last.safetensors").write_bytes(raw[: len(raw) // 2])
    res = fit(tmp_path, resume=run, epochs=2)
    assert [m["epoch"] for m in res.history] == [1, 2]


def test_damaged_metrics_lines_do_not_stop_a_resume(tmp_path, capsys):
    run = fit(tmp_path, name="dm").run_dir
    good = (run / "metrics.jsonl").read_bytes()
    (run / "metrics.jsonl").write_bytes(b'123\n{"epoch": "x"}\n\xff\xfe\n' + good)
    res = fit(tmp_path, resume=run, epochs=2)
    assert "3 damaged line(s) left out" in capsys.readouterr().err
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2] == [m["epoch"] for m in res.history]
    assert (run / "metrics.jsonl").read_bytes().startswith(good)


@pytest.mark.slow
def test_a_real_divergence_keeps_only_finite_checkpoints_and_its_advice_works(tmp_path, capsys):
    args = ["--set", "optim.name=sgd", "--lr", "1e6", "--set", "train.checkpoint_every_steps=1"]
    for s in FAST:
        args += ["--set", s]
    base = ["train", *args, "--device", "cpu", "--epochs", "2", "--runs-dir", str(tmp_path)]
    assert main([*base, "--name", "nan", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "training loss became" in err and "cnnlab train --resume" in err
    run = tmp_path / "nan"
    for p in (run / "checkpoints").glob("*.safetensors"):
        if not p.name.startswith("diverged-"):  # what a resume would use is finite
            ck = load_checkpoint(p)
            assert all(torch.isfinite(v).all() for v in ck.model_state.values()), p
    advice = err.split("Continue with a lower LR: ")[1].split(" (or")[0]
    assert main([*shlex.split(advice)[1:], "--quiet"]) == 0  # followed as printed
    ck = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert all(torch.isfinite(v).all() for v in ck.model_state.values())
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2]
    # nan_policy=skip that skips nearly every step stops with an error, not "loss 0.0000"
    assert main([*base, "--name", "skip", "--quiet", "--set", "train.nan_policy=skip"]) == 2
    err = capsys.readouterr().err
    assert "had a non-finite loss and were skipped" in err and "Traceback" not in err


def test_a_config_that_cannot_train_leaves_no_run_folder(tmp_path, capsys):
    runs = tmp_path / "runs"
    data = make_idx_dataset(tmp_path / "tiny", n_train=16, n_test=8, size=1)  # 1×1 images
    cases = [
        ["--set", "data.name=synthetic", "--set", "data.size=8"],  # too small for LeNet-5
        ["--set", "data.name=synthetic", "--set", "data.pad=100"],  # more than the image
        ["--dataset", "mnist", "--data-dir", str(data), "--set", "data.pad=0"],
    ]
    for extra in cases:
        rc = main(["train", *extra, "--epochs", "1", "--device", "cpu", "--quiet",
                   "--runs-dir", str(runs)])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("cnnlab: error: ") and err.count("\n") == 1, err
        assert not runs.exists() or not any(runs.iterdir()), extra
    with pytest.raises(ConfigError, match="data.pad=100 is larger than the 28-pixel"):
        fit(tmp_path, "data.pad=100")
