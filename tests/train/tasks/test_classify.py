"""The classifier task's model selection: a validation split carved from the training set
(stratified, seeded), the best checkpoint chosen on it and never on the test set."""

import pytest
import torch

import cnnlab
import cnnlab.train.callbacks
from cnnlab.config import Config
from cnnlab.errors import ConfigError
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


def _imbalanced(n_major: int = 120, n_minor: int = 12):
    """Three learnable classes, the last one rare (10 : 10 : 1)."""
    from cnnlab.data.datasets import Dataset

    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * n_major + [1] * n_major + [2] * n_minor)
    y = y[torch.randperm(len(y), generator=g)]
    x = (torch.rand(len(y), 1, 12, 12, generator=g) * 60 + y.reshape(-1, 1, 1, 1) * 80).to(
        torch.uint8
    )
    names = ["common", "usual", "rare"]
    return Dataset("tiny-imb", x, y, x[:60], y[:60], names, (0.5,), (0.25,))


IMB = [
    "model.name=mlp",
    "train.batch_size=32",
    "train.device=cpu",
    "train.diagnostics=false",
    "data.val_fraction=0",
]


def test_class_counts_are_shown_and_recorded_and_quiet_prints_nothing(tmp_path, capsys):
    extra = ["train.class_weights=auto", "data.sampler=balanced"]
    res = cnnlab.fit(overrides=IMB + extra, dataset=_imbalanced(), epochs=1,
                     runs_dir=str(tmp_path), name="loud")  # fmt: skip
    out = capsys.readouterr().out
    assert (
        "train images per class: common 120 · usual 120 · rare 12 — imbalance 10.0×; "
        "sampler balanced, class weights auto" in out
    )
    meta = load_checkpoint(res.run_dir / "checkpoints" / "last.safetensors").meta
    assert meta["class_counts"] == {"common": 120, "usual": 120, "rare": 12}
    w = meta["class_weights"]
    assert w[2] == pytest.approx(10 * w[0]) and (120 * w[0] * 2 + 12 * w[2]) / 252 == pytest.approx(
        1
    )
    cnnlab.fit(overrides=IMB, dataset=_imbalanced(), epochs=1, runs_dir=str(tmp_path),
               name="quiet", quiet=True)  # fmt: skip
    assert capsys.readouterr().out == ""


def test_balanced_sampler_and_class_weights_resume_exactly(tmp_path):
    from cnnlab.train.callbacks import Callback

    sets = IMB + ["train.class_weights=auto", "data.sampler=balanced", "train.label_smoothing=0.1"]
    full = cnnlab.fit(overrides=sets, dataset=_imbalanced(), epochs=3, runs_dir=str(tmp_path),
                      name="full", quiet=True)  # fmt: skip

    class StopAfter1(Callback):
        def on_epoch_end(self, trainer, epoch, m):
            trainer.should_stop = epoch == 1

    part = cnnlab.fit(overrides=sets, dataset=_imbalanced(), epochs=3, runs_dir=str(tmp_path),
                      name="part", quiet=True, callbacks=[StopAfter1()])  # fmt: skip
    resumed = cnnlab.fit(resume=part.run_dir, dataset=_imbalanced(), quiet=True)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.safetensors").model_state
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.safetensors").model_state
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra, rb = read_metrics(full.run_dir), read_metrics(resumed.run_dir)
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb]


def test_class_weights_of_the_wrong_length_leave_nothing_behind(tmp_path):
    with pytest.raises(ConfigError, match="a list of 3 numbers > 0.*got 2 values"):
        cnnlab.fit(overrides=IMB + ["train.class_weights=[1, 2]"], dataset=_imbalanced(),
                   epochs=1, runs_dir=str(tmp_path), quiet=True)  # fmt: skip
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_streaming_folder_takes_the_balanced_sampler(tmp_path):
    from PIL import Image

    from cnnlab.data.loader import BalancedSampler

    for split, counts in (("train", (12, 3)), ("val", (2, 2))):
        for ci, (c, n) in enumerate(zip(("a", "b"), counts, strict=True)):
            (tmp_path / "f" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (200 * ci, 50, 90)).save(
                    tmp_path / "f" / split / c / f"{i}.png"
                )
    captured = {}

    class Peek(cnnlab.train.callbacks.Callback):
        def on_fit_start(self, trainer):
            captured["sampler"] = trainer.task.train_loader.sampler
            captured["line"] = trainer.task.class_line()

    cnnlab.fit(model="mlp", dataset="imagefolder", data_dir=str(tmp_path / "f"), epochs=1,
               runs_dir=str(tmp_path / "runs"), quiet=True, callbacks=[Peek()],
               overrides=["data.size=8", "data.workers=0", "data.max_resident_mb=0", "train.batch_size=5",
                          "data.val_fraction=0", "data.sampler=balanced",
                          "train.class_weights=auto", "train.device=cpu"])  # fmt: skip
    assert isinstance(captured["sampler"], BalancedSampler) and len(captured["sampler"]) == 15
    assert captured["line"].startswith("train images per class: a 12 · b 3 — imbalance 4.0×")


def test_eval_and_report_show_balanced_accuracy_macro_f1_and_per_class_metrics(tmp_path, capsys):
    import json

    from cnnlab.cli import main
    from cnnlab.report.html import write_report

    res = cnnlab.fit(overrides=FAST + ["data.val_fraction=0"], epochs=1, runs_dir=str(tmp_path),
                     name="r", quiet=True)  # fmt: skip
    assert main(["eval", str(res.run_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((res.run_dir / "eval.json").read_text())
    assert f"balanced accuracy {saved['balanced_accuracy']:.4f}" in out
    assert f"macro-F1 {saved['macro_f1']:.4f}" in out
    pcm = saved["per_class_metrics"]
    assert set(pcm["class0"]) == {"precision", "recall", "f1", "support"}
    assert sum(m["support"] for m in pcm.values()) == saved["n"] == 64
    write_report(res.run_dir)
    page = (res.run_dir / "report.html").read_text()
    assert f"<td>macro-F1</td><td>{saved['macro_f1']:.2%}</td>" in page
    assert "balanced accuracy (mean per-class recall)" in page
    assert "<th>train images</th><th>precision</th><th>recall</th><th>F1</th>" in page
    counts = load_checkpoint(res.run_dir / "checkpoints" / "last.safetensors").meta["class_counts"]
    assert sum(counts.values()) == 128 and f"<td>class0</td><td>{counts['class0']}</td>" in page
