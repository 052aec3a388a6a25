import json

import pytest
import torch

import cnnlab
from cnnlab.config import Config, apply_overrides
from cnnlab.data.datasets import load_dataset
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics
from cnnlab.runs.load import load_model
from cnnlab.train.callbacks import Callback
from cnnlab.train.optim import Schedule, build_optimizer
from cnnlab.train.tasks.classify import split_train_val

FAST = [
    "data.name=synthetic",
    "data.num_train=256",
    "data.num_test=128",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.device=cpu",
]


def run(tmp_path, *extra, epochs=2, name="r", resume=None):
    return cnnlab.fit(
        overrides=FAST + list(extra),
        epochs=epochs,
        name=None if resume else name,
        runs_dir=str(tmp_path),
        quiet=True,
        resume=resume,
    )


def test_run_directory_contents(tmp_path):
    res = run(tmp_path)
    d = res.run_dir
    assert (d / "config.yaml").is_file()
    rows = read_metrics(d)
    assert [r["epoch"] for r in rows] == [1, 2]
    for k in ("train_loss", "train_acc", "test_loss", "test_acc", "seconds", "images_per_s", "lr"):
        assert k in rows[0]
    ck = load_checkpoint(d / "checkpoints" / "last.safetensors")
    assert ck.meta["epoch"] == 2 and ck.meta["classes"][0] == "class0"
    assert ck.meta["config"]["data"]["name"] == "synthetic" and ck.optimizer_state()["state"]
    model, meta = load_model(d)
    assert isinstance(model, torch.nn.Module) and not model.training


def test_learns_synthetic(tmp_path):
    res = run(tmp_path, epochs=4)
    assert res.final["test_acc"] > 0.8  # 10 chance-level classes → clearly learned


def test_resume_is_exact(tmp_path):
    full = run(tmp_path, "train.deterministic=true", epochs=3, name="full")

    class StopAfter2(Callback):  # an interruption after epoch 2 of the same 3-epoch run
        def on_epoch_end(self, trainer, epoch, m):
            trainer.should_stop = epoch == 2

    part = cnnlab.fit(
        overrides=FAST + ["train.deterministic=true"],
        epochs=3,
        name="part",
        runs_dir=str(tmp_path),
        quiet=True,
        callbacks=[StopAfter2()],
    )
    assert part.final["epoch"] == 2
    resumed = cnnlab.fit(resume=part.run_dir, quiet=True)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.safetensors").model_state
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.safetensors").model_state
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra, rb = read_metrics(full.run_dir), read_metrics(resumed.run_dir)
    assert [r["test_acc"] for r in ra] == [r["test_acc"] for r in rb]


def test_existing_run_name_is_not_overwritten(tmp_path):
    run(tmp_path, epochs=1, name="same")
    before = (tmp_path / "same" / "metrics.jsonl").read_text()
    with pytest.raises(cnnlab.CnnlabError, match="already exists"):
        run(tmp_path, epochs=1, name="same")
    assert (tmp_path / "same" / "metrics.jsonl").read_text() == before


def test_val_split_disjoint():
    tr, va = split_train_val(1000, 0.1, seed=3)
    assert len(va) == 100 and len(tr) == 900 and not set(tr.tolist()) & set(va.tolist())


def test_val_split_reported(tmp_path):
    res = run(tmp_path, "data.val_fraction=0.25", epochs=1)
    assert "val_acc" in res.final
    cfg = json.loads(json.dumps(res.final))
    assert cfg["epoch"] == 1


@pytest.mark.parametrize("sched", ["constant", "step", "cosine", "onecycle"])
def test_schedules(sched):
    c = apply_overrides(
        Config(),
        [f"sched.name={sched}", "optim.lr=0.1", "sched.step_size=1", "sched.warmup_epochs=0"],
    )
    opt = build_optimizer(torch.nn.Linear(2, 2), c.optim)
    s = Schedule(opt, c.sched, epochs=3, steps_per_epoch=10)
    lrs = []
    for _ in range(30):
        lrs.append(s.lr)
        s.step()
    if sched == "constant":
        assert set(lrs) == {0.1}
    elif sched == "step":
        assert lrs[0] == 0.1 and abs(lrs[10] - 0.01) < 1e-12 and abs(lrs[25] - 0.001) < 1e-12
    elif sched == "cosine":
        assert lrs[0] == 0.1 and lrs[-1] < 0.002 and all(a >= b for a, b in zip(lrs, lrs[1:]))
    else:
        peak = lrs.index(max(lrs))
        assert 0 < peak < 15 and lrs[0] < 0.01 and lrs[-1] < 0.001


def test_dataset_object_api(tmp_path):
    ds = load_dataset("synthetic", num_train=64, num_test=32, size=32, channels=3)
    res = cnnlab.fit(
        dataset=ds,
        model="lenet5",
        epochs=1,
        runs_dir=str(tmp_path),
        quiet=True,
        batch_size=16,
        device="cpu",
    )
    assert res.final["epoch"] == 1
    _, meta = load_model(res.run_dir)
    assert meta["input"]["channels"] == 3 and meta["input"]["size"] == 32
