import pytest

import cnnlab
from cnnlab.config import Config, apply_overrides
from cnnlab.errors import ConfigError
from cnnlab.train.callbacks import EarlyStopping
from cnnlab.train.trainer import config_callbacks

FAST = [
    "data.name=synthetic",
    "data.num_train=256",
    "data.num_test=64",
    "train.batch_size=32",
    "train.device=cpu",
    "train.diagnostics=false",
]


def test_early_stop_needs_a_validation_split(tmp_path):
    with pytest.raises(ConfigError, match="val_fraction"):
        cnnlab.fit(
            overrides=FAST + ["train.early_stop=2", "data.val_fraction=0"],
            runs_dir=str(tmp_path),
            quiet=True,
        )


def test_early_stop_monitors_validation_never_test():
    cfg = apply_overrides(Config(), ["train.early_stop=3", "data.val_fraction=0.1"])
    (es,) = [c for c in config_callbacks(cfg) if isinstance(c, EarlyStopping)]
    assert es.monitor == "val_acc" and es.patience == 3


def test_early_stop_stops(tmp_path):
    # a learning rate so small that validation accuracy cannot improve after epoch 1
    res = cnnlab.fit(
        overrides=FAST
        + ["train.early_stop=1", "data.val_fraction=0.25", "optim.lr=1e-12", "sched.name=constant"],
        epochs=6,
        runs_dir=str(tmp_path),
        name="es",
        quiet=True,
    )
    assert len(res.history) == 2
    assert all("val_acc" in m for m in res.history)
