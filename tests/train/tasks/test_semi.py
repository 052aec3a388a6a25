import pytest
import torch

import cnnlab
from cnnlab.config import Config, apply_overrides
from cnnlab.errors import ConfigError
from cnnlab.train.tasks.classify import split_train_val
from cnnlab.train.tasks.semi import split_labelled, strong_augment, weak_augment
from cnnlab.train.trainer import Trainer

FAST = [
    "data.name=synthetic",
    "data.num_train=400",
    "data.num_test=64",
    "train.batch_size=16",
    "train.eval_batch_size=64",
    "train.device=cpu",
    "data.labels_per_class=5",
]


def test_split_labelled_disjoint_balanced_deterministic():
    y = torch.arange(10).repeat_interleave(30)[torch.randperm(300)]
    lab, unl = split_labelled(y, 7, seed=3)
    assert len(set(lab.tolist()) & set(unl.tolist())) == 0  # no labelled image is unlabelled
    assert len(lab) + len(unl) == 300
    assert torch.bincount(y[lab], minlength=10).tolist() == [7] * 10
    lab2, _ = split_labelled(y, 7, seed=3)
    assert torch.equal(lab, lab2)
    lab3, _ = split_labelled(y, 7, seed=4)
    assert not torch.equal(lab, lab3)


def test_split_labelled_too_few_raises():
    with pytest.raises(ConfigError, match="labels_per_class"):
        split_labelled(torch.tensor([0, 0, 1]), 2, seed=0)


def test_trainer_split_has_no_leaks(tmp_path):
    """Labelled, unlabelled and validation sets are disjoint pieces of the training set;
    no test image is in any of them."""
    cfg = apply_overrides(
        Config(),
        FAST
        + [
            "data.val_fraction=0.2",
            "train.epochs=1",
            f"run.runs_dir={tmp_path}",
            "train.semi=pseudo_label",
            "train.steps_per_epoch=2",
        ],
    )
    tr = Trainer(cfg, quiet=True)
    tr.setup()
    ds = tr.dataset
    # identify images by their bytes (synthetic images are continuous noise: unique)
    key = lambda x: {bytes(a.numpy().tobytes()) for a in x}  # noqa: E731
    train_keys = key(ds.train_x)
    lab, unl, val = key(tr.task.train_loader.x), key(tr.task.unlabelled_x.cpu()), key(tr.task.val.x)
    test = key(ds.test_x)
    assert len(lab) == 5 * ds.num_classes
    assert not lab & unl and not lab & val and not unl & val
    assert lab | unl | val == train_keys
    assert not (lab | unl | val) & test
    _, va_idx = split_train_val(len(ds.train_x), 0.2, 0, ds.train_y)
    assert val == key(ds.train_x[va_idx])


@pytest.mark.parametrize("method", ["none", "pseudo_label", "mean_teacher", "fixmatch"])
def test_methods_train(tmp_path, method):
    res = cnnlab.fit(
        overrides=FAST
        + [
            f"train.semi={method}",
            "train.steps_per_epoch=3",
            "train.ema=0.9" if method == "fixmatch" else "train.ema=0",
        ],
        epochs=1,
        runs_dir=str(tmp_path),
        name=method,
        quiet=True,
    )
    m = res.final
    assert 0 <= m["test_acc"] <= 1 and m["train_loss"] == m["train_loss"]
    if method in ("pseudo_label", "fixmatch"):
        assert 0 <= m["pseudo_label_rate"] <= 1
    assert (res.run_dir / "checkpoints" / "last.safetensors").is_file()


def test_semi_without_labels_per_class_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="labels_per_class"):
        cnnlab.fit(
            overrides=["data.name=synthetic", "train.semi=fixmatch"],
            runs_dir=str(tmp_path),
            quiet=True,
        )


def test_augmentations_keep_shape_and_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 28, 28, generator=g)
    for fn in (weak_augment, strong_augment):
        y = fn(x, 2, g)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
        assert not torch.equal(y, x)
