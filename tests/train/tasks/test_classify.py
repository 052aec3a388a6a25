"""The classifier task's model selection: a validation split carved from the training set
(stratified, seeded), the best checkpoint chosen on it and never on the test set."""

import torch

import cnnlab
from cnnlab.config import Config
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics
from cnnlab.runs.load import resolve_checkpoint
from cnnlab.train.tasks.classify import ClassifyTask, split_train_val

FAST = [
    "data.name=synthetic",
    "data.num_train=128",
    "data.num_test=64",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.device=cpu",
    "train.diagnostics=false",
]


def test_validation_is_on_by_default():
    assert 0 < Config().data.val_fraction < 0.5


def test_split_is_stratified_disjoint_and_seeded():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    tr, va = split_train_val(len(y), 0.1, 0, y)
    assert len(va) == 10 and len(tr) == 90 and not set(tr.tolist()) & set(va.tolist())
    assert torch.bincount(y[va], minlength=3).tolist() == [5, 3, 2]  # each class its share
    assert torch.equal(va, split_train_val(len(y), 0.1, 0, y)[1])
    assert not torch.equal(va, split_train_val(len(y), 0.1, 1, y)[1])


def test_tiny_split_spreads_over_classes():
    y = torch.arange(10).repeat(3)  # 10 classes × 3 images, 10 % → 3 validation images
    _, va = split_train_val(len(y), 0.1, 0, y)
    assert len(set(y[va].tolist())) == 3


def scripted(monkeypatch, val, test):
    """Replace the task's evaluation by fixed curves: val and test peak at different epochs."""

    def evaluate(self, epoch):
        m = {"test_loss": 1.0, "test_acc": test[epoch - 1]}
        if self.val is not None:
            m.update(val_loss=1.0, val_acc=val[epoch - 1])
        return m

    monkeypatch.setattr(ClassifyTask, "evaluate", evaluate)


def fit(tmp_path, *extra):
    return cnnlab.fit(
        overrides=FAST + list(extra), epochs=3, name="r", runs_dir=str(tmp_path), quiet=True
    )


def test_best_is_chosen_on_validation_never_on_test(tmp_path, monkeypatch):
    scripted(monkeypatch, val=[0.5, 0.9, 0.6], test=[0.95, 0.1, 0.99])
    res = fit(tmp_path)
    assert res.best["epoch"] == 2
    ck = load_checkpoint(res.run_dir / "checkpoints" / "best.safetensors")
    assert ck.meta["epoch"] == 2  # the test set's best epochs (1 and 3) were never picked
    assert [m["test_acc"] for m in read_metrics(res.run_dir)] == [0.95, 0.1, 0.99]


def test_without_validation_no_best_is_written_and_last_is_used(tmp_path, monkeypatch):
    scripted(monkeypatch, val=[0, 0, 0], test=[0.95, 0.1, 0.5])
    res = fit(tmp_path, "data.val_fraction=0")
    ck = res.run_dir / "checkpoints"
    assert not (ck / "best.safetensors").exists() and res.best == {}
    assert resolve_checkpoint(res.run_dir, "best") == ck / "last.safetensors"


def test_early_stopping_watches_validation(tmp_path, monkeypatch):
    # validation stalls after epoch 1 while the test accuracy keeps rising: stop at 2
    scripted(monkeypatch, val=[0.9, 0.5, 0.5], test=[0.1, 0.5, 0.9])
    res = fit(tmp_path, "train.early_stop=1")
    assert len(res.history) == 2
