"""The LR range test: a sensible suggestion, state left exactly as it was, optim.lr=auto."""

import copy
import json

import numpy as np
import pytest
import torch
import yaml

import cnnlab
from cnnlab.cli import main
from cnnlab.config import Config, apply_overrides
from cnnlab.errors import ConfigError
from cnnlab.runs.load import load_model
from cnnlab.train.lr_find import lr_range_test, suggest
from cnnlab.train.trainer import Trainer

FAST = [
    "data.name=synthetic",
    "data.num_train=256",
    "data.num_test=64",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.device=cpu",
    "train.diagnostics=false",
]


def test_suggest_reads_the_curve():
    lrs = np.logspace(-6, 0, 61)
    # a loss that falls fastest at 1e-3 (in log LR) and blows up after 1e-1
    x = np.log10(lrs)
    loss = 2.3 - 2 / (1 + np.exp(-3 * (x + 3))) + np.where(x > -1, (x + 1) * 20, 0)
    steepest, min10 = suggest(list(lrs), list(loss))
    assert 10**-3.2 < steepest < 10**-2.8
    assert min10 == pytest.approx(lrs[int(np.argmin(loss))] / 10)
    with pytest.raises(ConfigError, match="fewer than 3"):
        suggest([1e-3, 1e-2], [1.0, 0.9])


def test_state_is_restored_bit_for_bit():
    cfg = apply_overrides(Config(), FAST)
    tr = Trainer(cfg, quiet=True)
    tr.setup()
    model = tr.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = tr.optimizers[0].state_dict()
    lrs_before = [g["lr"] for g in tr.optimizers[0].param_groups]
    gen_before = tr.generator.get_state().clone()
    rng_before = torch.get_rng_state().clone()
    res = lr_range_test(tr, steps=20, quiet=True)
    assert len(res.lrs) >= 3 and res.lrs[0] == pytest.approx(1e-7)
    assert res.lrs[0] <= res.suggestion <= res.lrs[-1]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert tr.optimizers[0].state_dict()["state"] == opt_before["state"] == {}
    assert [g["lr"] for g in tr.optimizers[0].param_groups] == lrs_before
    assert torch.equal(tr.generator.get_state(), gen_before)
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_restored_after_training_steps_too():
    """Optimiser moments that exist before the sweep come back unchanged."""
    cfg = apply_overrides(Config(), [*FAST, "optim.name=sgd"])
    tr = Trainer(cfg, quiet=True)
    tr.setup()
    tr.task.begin_epoch(1)
    tr.task.step(0)
    st = copy.deepcopy(tr.optimizers[0].state_dict())
    w = {k: v.clone() for k, v in tr.model.state_dict().items()}
    lr_range_test(tr, steps=12, quiet=True)
    st2 = tr.optimizers[0].state_dict()
    for k, s in st["state"].items():
        assert torch.equal(s["momentum_buffer"], st2["state"][k]["momentum_buffer"])
    assert all(torch.equal(w[k], v) for k, v in tr.model.state_dict().items())


def test_the_trained_weights_behind_a_moving_average_come_back_too():
    """With train.ema the task evaluates the average; the sweep must also put back the
    weights it trains (the student) and the average's update count."""
    cfg = apply_overrides(Config(), [*FAST, "train.ema=0.9"])
    tr = Trainer(cfg, quiet=True)
    tr.setup()
    tr.task.begin_epoch(1)
    tr.task.step(0)
    tensors, meta = copy.deepcopy(tr.task.state())
    assert tensors and meta["ema_updates"] == 1
    lr_range_test(tr, steps=12, quiet=True)
    tensors2, meta2 = tr.task.state()
    assert meta2 == meta
    assert all(torch.equal(v, tensors2[k]) for k, v in tensors.items())


@pytest.mark.slow  # two runs and a 200-step sweep: ~30 s on 2 busy cores
def test_lr_auto_picks_a_rate_and_leaves_the_run_unchanged(tmp_path):
    """optim.lr=auto: the run's config records the chosen number, the sweep is saved in the
    run, and the run is the one an explicit --lr of that number gives (same weights)."""
    common = dict(overrides=[*FAST, "train.deterministic=true"], epochs=1, quiet=True)
    auto = cnnlab.fit(runs_dir=str(tmp_path), name="auto", lr="auto", **common)
    lr = yaml.safe_load((auto.run_dir / "config.yaml").read_text())["optim"]["lr"]
    assert isinstance(lr, float) and lr > 0
    assert (auto.run_dir / "lr_find.json").is_file() and (auto.run_dir / "lr_find.png").is_file()
    plain = cnnlab.fit(runs_dir=str(tmp_path), name="plain", lr=lr, **common)
    a, _ = load_model(auto.run_dir, "last")
    b, _ = load_model(plain.run_dir, "last")
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cli(tmp_path, capsys):
    out = tmp_path / "lf"
    argv = ["lr-find", "--dataset", "synthetic", "--device", "cpu", "--quiet", "--steps", "25"]
    assert main([*argv, "--set", "data.num_train=128", "--out", str(out)]) == 0
    assert "suggested LR" in capsys.readouterr().out
    d = json.loads((out / "lr_find.json").read_text())
    assert d["method"] == "steepest" and len(d["lrs"]) == len(d["smoothed"]) == len(d["losses"])
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad"
    assert main([*argv, "--start-lr", "0", "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error: lr-find needs") and "\n" not in err
    assert not bad.exists()
    assert main([*argv, "--set", "optim.lr=fast", "--out", str(bad)]) == 2
    assert not bad.exists()


def test_nonsense_suggestions_are_refused():
    from cnnlab.train.lr_find import LRFindResult, fallback_lr, refuse_nonsense, sanity

    lrs = list(np.logspace(-7, 1, 80))
    flat = [0.69 + 0.01 * np.sin(i) for i in range(80)]  # never fell: nothing learned
    assert "never fell" in sanity(flat, flat, 1e-3)
    falling = list(np.linspace(2.3, 0.5, 80))
    assert "outside the plausible range" in sanity(falling, falling, 5.8e-7)
    assert sanity(falling, falling, 3e-3) is None
    res = LRFindResult(lrs, flat, flat, 5.8e-7, "steepest", 5.8e-7, 1e-6, False)
    out = refuse_nonsense(res, fallback_lr("adam"))
    assert out.suggestion == 1e-3 and out.refused == 5.8e-7
    assert out.warning.startswith("warning: lr-find: the loss never fell")
    assert fallback_lr("sgd") == 1e-2


def test_auto_lr_falls_back_with_a_warning(tmp_path, capsys, monkeypatch):
    """A sweep over rates too small to learn anything (1e-7 → 1e-6) gives the fallback,
    says so, and the run's config records the fallback."""
    from cnnlab.train import lr_find as L

    real = L.sweep_config
    monkeypatch.setattr(
        L, "sweep_config", lambda cfg, ds, q, a, b, steps, m: real(cfg, ds, q, 1e-7, 1e-6, 20, m)
    )
    res = cnnlab.fit(runs_dir=str(tmp_path), name="f", lr="auto", overrides=FAST, epochs=1)
    assert "warning: lr-find:" in capsys.readouterr().err
    cfg = yaml.safe_load((res.run_dir / "config.yaml").read_text())
    assert cfg["optim"]["lr"] == 1e-3


def test_auto_lr_loads_the_dataset_once(tmp_path, monkeypatch):
    """optim.lr=auto: the sweep and the run it chooses for train on one loading of the data."""
    from cnnlab.train import lr_find as L
    from cnnlab.train import trainer as T
    from cnnlab.train.callbacks import Callback

    loads, swept, trained = [], [], []
    real_load, real_sweep = T.load_dataset, L.sweep_config
    monkeypatch.setattr(
        T, "load_dataset", lambda *a, **k: (loads.append(a[0]), real_load(*a, **k))[1]
    )
    monkeypatch.setattr(
        L,
        "sweep_config",
        lambda cfg, ds, q, a, b, steps, m: (swept.append(ds), real_sweep(cfg, ds, q, a, b, 20, m))[
            1
        ],
    )

    class Seen(Callback):
        def on_fit_start(self, trainer):
            trained.append(trainer.dataset)

    cnnlab.fit(runs_dir=str(tmp_path), name="once", lr="auto", overrides=FAST, epochs=1,
               quiet=True, callbacks=[Seen()])  # fmt: skip
    assert loads == ["synthetic"]
    assert len(swept) == len(trained) == 1 and swept[0] is trained[0]
