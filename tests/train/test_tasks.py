"""Every Task gets every reliability feature of the one Trainer: an exact resume after
SIGKILL mid-epoch, SIGTERM → checkpoint and exit 0, the NaN policy, checkpoints every N
steps. Parametrised over the Tasks (CPU, deterministic, 1 thread)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics
from cnnlab.train.callbacks import Callback, NonFiniteLoss

COMMON = [
    "data.name=synthetic",
    "data.num_train=160",
    "data.num_test=64",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.device=cpu",
    "train.deterministic=true",
    "train.threads=1",
    "train.diagnostics=false",
]
TASKS = {
    "classify": ["data.augment=crop,flip"],
    # the weights' moving average is evaluated and saved; the student is resumable state
    "classify-ema": ["data.augment=crop,flip", "train.ema=0.9", "train.eval_flip=true"],
    "adversarial": ["train.adversarial=pgd", "train.adv_steps=2", "train.eps=0.05"],
    "fixmatch": [
        "data.labels_per_class=4",
        "train.semi=fixmatch",
        "train.semi_ratio=2",
        "train.steps_per_epoch=5",
        "train.ema=0.9",
    ],
    "conditional-gan": [
        "model.name=dcgan-conditional",
        "gan.width=8",
        "gan.z_dim=8",
        "gan.grid=2",
        "optim.lr=2e-4",
        "optim.beta1=0.5",
        "sched.name=constant",
        "data.augment=none",
    ],
}
KIND = {t: "classify" for t in ("classify", "classify-ema", "adversarial", "fixmatch")}
KIND["conditional-gan"] = "gan"
SRC = str(Path(cnnlab.__file__).resolve().parents[1])
DROP = ("seconds", "images_per_s", "eval_seconds")


def overrides(task, *extra):
    return COMMON + TASKS[task] + list(extra)


def fit(task, tmp_path, name, *extra, epochs=2, callbacks=None, resume=None):
    return cnnlab.fit(
        overrides=overrides(task, *extra),
        epochs=epochs,
        name=None if resume else name,
        runs_dir=str(tmp_path),
        resume=resume,
        callbacks=callbacks,
        quiet=True,
    )


def assert_same_run(a: Path, b: Path) -> None:
    ca = load_checkpoint(a / "checkpoints" / "last.safetensors")
    cb = load_checkpoint(b / "checkpoints" / "last.safetensors")
    assert ca.tensors.keys() == cb.tensors.keys()
    for k, v in ca.tensors.items():
        if not k.startswith("rng."):
            assert torch.equal(v, cb.tensors[k]), k
    ra = [{k: v for k, v in m.items() if k not in DROP} for m in read_metrics(a)]
    rb = [{k: v for k, v in m.items() if k not in DROP} for m in read_metrics(b)]
    assert ra == rb and len(ra) == 2


class At(Callback):
    """Call ``fn(trainer)`` after step ``step`` of epoch ``epoch``."""

    def __init__(self, epoch, step, fn):
        self.at, self.fn, self.epoch = (epoch, step), fn, 0

    def on_epoch_start(self, trainer, epoch):
        self.epoch = epoch

    def on_step(self, trainer, step, loss):
        if (self.epoch, step) == self.at:
            self.fn(trainer)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, task):
    ref = fit(task, tmp_path, "ref")
    run = tmp_path / "killed"
    args = [a for o in overrides(task, "train.checkpoint_every_steps=2") for a in ("--set", o)]
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    base = [sys.executable, "-m", "cnnlab", "train", "--quiet"]
    # the 7th step: epoch 2, after its first mid-epoch checkpoint
    p = subprocess.run(
        [*base, *args, "--epochs", "2", "--runs-dir", str(tmp_path), "--name", "killed"],
        env=dict(env, CNNLAB_FAULT="step:7"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert len(read_metrics(run)) == 1  # killed inside epoch 2
    pos = load_checkpoint(run / "checkpoints" / "last.safetensors").meta["position"]
    assert pos["epoch"] == 2 and 0 < pos["step"] < 7
    p = subprocess.run(
        [*base, "--resume", str(run)], env=env, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    assert_same_run(ref.run_dir, run)


@pytest.mark.parametrize("task", list(TASKS))
def test_sigterm_writes_a_checkpoint_and_stops_cleanly(tmp_path, task):
    res = fit(
        task, tmp_path, "t", callbacks=[At(1, 2, lambda tr: os.kill(os.getpid(), signal.SIGTERM))]
    )
    assert res.interrupted and res.history == []
    ck = load_checkpoint(res.run_dir / "checkpoints" / "last.safetensors")
    assert ck.meta["position"]["epoch"] == 1 and ck.meta["position"]["step"] == 2
    assert ck.meta["kind"] == KIND[task]


@pytest.mark.parametrize("task", list(TASKS))
def test_a_nan_stops_the_run_naming_epoch_and_step(tmp_path, task):
    def poison(trainer):
        with torch.no_grad():
            for m in trainer.task.modules().values():
                next(m.parameters()).fill_(float("nan"))
            if getattr(trainer.task, "train_model", None) is not None:
                next(trainer.task.train_model.parameters()).fill_(float("nan"))

    with pytest.raises(NonFiniteLoss, match=r"at epoch 2, step 2 "):
        fit(task, tmp_path, "n", callbacks=[At(2, 1, poison)])
    run = tmp_path / "n"
    assert [m["epoch"] for m in read_metrics(run)] == [1]
    ck = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert ck.meta["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck.model_state.values())


@pytest.mark.parametrize("task", list(TASKS))
def test_checkpoint_every_n_steps_is_honoured(tmp_path, task):
    seen = []

    def look(trainer):
        meta = load_checkpoint(trainer.run_dir / "checkpoints" / "last.safetensors").meta
        seen.append((meta["position"]["epoch"], meta["position"]["step"]))

    fit(task, tmp_path, "c", "train.checkpoint_every_steps=3", epochs=1, callbacks=[At(1, 4, look)])
    assert seen == [(1, 3)]
