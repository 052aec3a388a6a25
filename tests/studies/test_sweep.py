import json

import optuna
import pytest
import yaml

from cnnlab.config import Config, load_recipe
from cnnlab.errors import ConfigError
from cnnlab.studies import sweep
from cnnlab.studies.sweep import check_space, run_sweep

FAST = [
    "data.name=synthetic",
    "data.num_train=128",
    "data.num_test=32",
    "train.batch_size=32",
    "train.device=cpu",
    "train.epochs=1",
]
SPACE = {
    "optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "model.activation": {"type": "categorical", "choices": ["relu", "tanh"]},
}


def test_sweep_resumes_after_interruption(tmp_path):
    calls = []

    def interrupt_second(trial, cfg):
        calls.append(trial.number)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the second trial

    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            None,
            SPACE,
            3,
            study="s",
            runs_dir=str(tmp_path),
            overrides=FAST,
            objective_hook=interrupt_second,
        )
    db = tmp_path / "s" / "study.db"
    st = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    assert sum(t.state.name == "COMPLETE" for t in st.trials) == 1
    res = run_sweep(None, SPACE, 3, study="s", runs_dir=str(tmp_path), overrides=FAST)
    states = [r["state"] for r in res["trials"]]
    assert states.count("COMPLETE") + states.count("PRUNED") == 3  # 1 before + 2 after resume
    assert (tmp_path / "s" / "trials.csv").is_file()
    lrs = [r["optim.lr"] for r in res["trials"] if r["state"] == "COMPLETE"]
    assert len(set(lrs)) == len(lrs)  # the resumed sampler does not replay earlier trials
    best = load_recipe(tmp_path / "s" / "best.yaml")
    assert best.optim.lr == pytest.approx(res["best"]["params"]["optim.lr"])
    # the recipe + the best params; not the sweep's per-trial budget or validation split
    assert best.train.epochs == 20 and best.data.val_fraction == Config().data.val_fraction
    # again: nothing left to do, no new trial
    res2 = run_sweep(None, SPACE, 3, study="s", runs_dir=str(tmp_path), overrides=FAST)
    assert len(res2["trials"]) == len(res["trials"])


def test_negative_confirm_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="--confirm needs a number of seeds"):
        run_sweep(None, SPACE, 1, study="n", runs_dir=str(tmp_path), overrides=FAST, confirm=-1)


def test_space_errors(tmp_path):
    with pytest.raises(ConfigError, match="type"):
        check_space({"optim.lr": {"low": 1, "high": 2}})
    with pytest.raises(ConfigError, match="low < high"):
        check_space({"optim.lr": {"type": "float", "low": 1, "high": 1}})
    with pytest.raises(ConfigError, match="unknown config key"):
        check_space({"optim.nope": {"type": "float", "low": 1, "high": 2}})
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(SPACE))
    from cnnlab.studies.sweep import load_space

    assert load_space(p) == SPACE


def test_sweep_tries_the_recipe_first_and_says_when_nothing_beat_it(tmp_path, monkeypatch,
                                                                    capsys):  # fmt: skip
    from cnnlab import progress
    from cnnlab.studies.sweep import baseline_params

    # the overall bar, as plain lines (piped): trials counted over the study
    monkeypatch.setenv("CNNLAB_PROGRESS", "plain")
    monkeypatch.setattr(progress, "PLAIN_AFTER_S", 0.0)
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    from cnnlab.train.api import build_config

    base = build_config(None, None, FAST)
    params = baseline_params(base, SPACE)
    # the recipe's values (lenet5's builder default activation included) lie in the space
    assert params == {"optim.lr": base.optim.lr, "model.activation": "tanh"}
    # a value outside the space: no baseline trial (TPE must not see an impossible value)
    assert baseline_params(base, dict(SPACE, **{"optim.lr": {"type": "float", "low": 0.5,
                                                             "high": 0.9}})) is None  # fmt: skip
    res = run_sweep(None, SPACE, 2, study="b", runs_dir=str(tmp_path), overrides=FAST)
    first = res["trials"][0]
    assert first["baseline"] and first["optim.lr"] == pytest.approx(base.optim.lr)
    assert not any(r["baseline"] for r in res["trials"][1:])
    if res["best"]["trial"] == 0:
        assert "the recipe's own values" in (tmp_path / "b" / "best.yaml").read_text()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("sweep trials")]
    # it moves while the trials run (the ETA rule itself: tests/test_cli.py)
    assert len(lines) >= 3 and not any("done in" in ln for ln in lines[:-1])
    assert "best val acc" in lines[-1] and ": 2/2 done in" in lines[-1]
    # --no-baseline
    res = run_sweep(None, SPACE, 1, study="c", runs_dir=str(tmp_path), overrides=FAST,
                    baseline=False)  # fmt: skip
    assert not res["trials"][0]["baseline"]


def test_a_signal_stops_the_whole_sweep_and_it_resumes(tmp_path, monkeypatch):
    import os
    import signal

    from cnnlab.errors import CnnlabError
    from cnnlab.train.callbacks import Callback

    class TermAtStep2(Callback):
        def on_step(self, trainer, step, loss):
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    tr = sweep  # fit as the sweep calls it
    real = tr.fit
    n = {"calls": 0}

    def train(cfg, **kw):
        n["calls"] += 1
        if n["calls"] == 2:  # the second trial is interrupted
            kw["callbacks"] = list(kw.get("callbacks") or []) + [TermAtStep2()]
        return real(cfg, **kw)

    monkeypatch.setattr(tr, "fit", train)
    with pytest.raises(CnnlabError, match="sweep stopped by a signal during trial 1"):
        run_sweep(None, SPACE, 4, study="i", runs_dir=str(tmp_path), overrides=FAST)
    assert n["calls"] == 2  # no trial started after the signal
    monkeypatch.setattr(tr, "fit", real)
    res = run_sweep(None, SPACE, 3, study="i", runs_dir=str(tmp_path), overrides=FAST)
    states = [r["state"] for r in res["trials"]]
    assert states[1] == "FAIL" and states.count("COMPLETE") + states.count("PRUNED") == 3


def test_confirm_runs_recipe_and_best_over_seeds_and_resumes(tmp_path, monkeypatch):
    import json

    space = {"optim.lr": {"type": "float", "low": 1e-4, "high": 3e-4, "log": True}}  # no baseline
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"train": {"epochs": 2}}))
    over = FAST  # the trials' budget: 1 epoch
    res = run_sweep(str(recipe), space, 2, study="cf", runs_dir=str(tmp_path), overrides=over,
                    confirm=2)  # fmt: skip
    c = res["confirm"]
    d = tmp_path / "cf"
    assert json.loads((d / "confirm.json").read_text()) == c
    best = f"trial-{res['best']['trial']}"
    assert set(c["configs"]) == {"recipe", best} and c["seeds"] == 2
    # the full budget: the recipe's 2 epochs on every image, not the trials' 1 epoch
    assert c["epochs"] == 2
    for name in ("recipe", best):
        r = c["configs"][name]
        assert len(r["test_acc"]) == 2 and r["min"] <= r["mean"] <= r["max"]
        for seed in (0, 1):
            run = d / "confirm" / f"{name}-seed{seed}"
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            assert cfg["train"]["seed"] == seed and cfg["train"]["epochs"] == 2
            assert cfg["data"]["val_fraction"] == Config().data.val_fraction
            assert cfg["data"]["name"] == "synthetic"  # every other --set is kept
    lr = yaml.safe_load((d / "confirm" / f"{best}-seed0" / "config.yaml").read_text())
    assert lr["optim"]["lr"] == pytest.approx(res["best"]["params"]["optim.lr"])
    assert c["verdict"]
    # again: every confirming run is reused, none retrained
    tr = sweep  # fit as the sweep calls it
    monkeypatch.setattr(tr, "fit", lambda *a, **k: pytest.fail("retrained"))
    again = run_sweep(str(recipe), space, 2, study="cf", runs_dir=str(tmp_path), overrides=over,
                      confirm=2)  # fmt: skip
    assert again["confirm"] == c


def test_confirm_top_picks_trials_above_the_recipe_and_states_the_difference(tmp_path, monkeypatch):
    """--confirm-top K confirms the K best trials that beat the recipe's own trial on
    validation; each gets its mean difference to the recipe and that difference's standard
    error; the verdict follows the best mean."""
    from types import SimpleNamespace

    from cnnlab.config import Config
    from cnnlab.studies.sweep import confirm_best

    dist = {"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    st = optuna.create_study(direction="maximize")
    for lr, val, baseline in ((1e-3, 0.90, True), (0.5, 0.92, False), (0.2, 0.89, False),
                              (0.3, 0.91, False)):  # fmt: skip
        st.add_trial(optuna.trial.create_trial(params={"optim.lr": lr}, distributions=dist,
                                               value=val, user_attrs={"baseline": baseline}))  # fmt: skip
    base = Config()
    base.optim.lr = 1e-3
    base.train.epochs = 1
    # full-run test accuracy by config: lr 0.5 always beats the recipe, lr 0.3 overlaps it
    acc = {1e-3: (0.90, 0.91, 0.92), 0.5: (0.95, 0.96, 0.97), 0.3: (0.905, 0.93, 0.90)}
    ran = []

    def fake_train(cfg, quiet=True):
        ran.append((cfg.optim.lr, cfg.train.seed))
        a = acc[cfg.optim.lr][cfg.train.seed]
        return SimpleNamespace(history=[{"test_acc": a}], interrupted=False)

    monkeypatch.setattr(sweep, "fit", fake_train)
    c = confirm_best(st, base, tmp_path, seeds=3, top=3)
    assert list(c["configs"]) == ["recipe", "trial-1", "trial-3"]  # trial 2 < the recipe
    assert 0.2 not in {lr for lr, _ in ran} and len(ran) == 9
    v1 = c["verdicts"]["trial-1"]
    assert v1["difference"] == pytest.approx(0.05)
    assert v1["stderr"] == pytest.approx(((0.01**2 + 0.01**2) / 3) ** 0.5)
    assert "beats the recipe on every seed" in v1["verdict"]
    assert "overlap" in c["verdicts"]["trial-3"]["verdict"]
    assert c["best"] == "trial-1" and c["verdict"] == v1["verdict"]
    assert json.loads((tmp_path / "confirm.json").read_text()) == c


def test_confirm_when_no_trial_beats_the_recipe(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from cnnlab.config import Config
    from cnnlab.studies.sweep import confirm_best

    dist = {"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    st = optuna.create_study(direction="maximize")
    st.add_trial(optuna.trial.create_trial(params={"optim.lr": 1e-3}, distributions=dist,
                                           value=0.9, user_attrs={"baseline": True}))  # fmt: skip
    st.add_trial(optuna.trial.create_trial(params={"optim.lr": 0.5}, distributions=dist,
                                           value=0.8, user_attrs={}))  # fmt: skip
    fake = SimpleNamespace(history=[{"test_acc": 0.9}], interrupted=False)
    monkeypatch.setattr(sweep, "fit", lambda cfg, quiet=True: fake)
    c = confirm_best(st, Config(), tmp_path, seeds=1, top=2)
    assert list(c["configs"]) == ["recipe"] and "recipe stands" in c["verdict"]
    assert c["configs"]["recipe"]["std"] == 0.0


def test_confirm_top_below_one_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="--confirm-top"):
        run_sweep(None, SPACE, 1, study="n", runs_dir=str(tmp_path), overrides=FAST, confirm=1,
                  confirm_top=0)  # fmt: skip


def test_local_sqlite_workers_claim_trials_one_at_a_time(tmp_path):
    """SQLite runs Optuna's claim of a queued trial (read WAITING, write RUNNING) outside
    one transaction; the claim lock makes a second local worker wait for the first."""
    import subprocess
    import sys

    db = tmp_path / "study.db"
    assert sweep.sqlite_file(None, tmp_path) == db
    assert sweep.sqlite_file(f"sqlite:///{db}", tmp_path) == db
    assert sweep.sqlite_file("postgresql://u@h/db", tmp_path) is None
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except OSError: sys.exit(3)\n"
    )
    other = [sys.executable, "-c", probe, str(db) + ".claim"]
    claim = sweep.ClaimLock(db)
    with claim:
        assert subprocess.run(other).returncode == 3  # held: another worker waits
        claim.release()  # the objective's first line
        assert subprocess.run(other).returncode == 0
    with sweep.ClaimLock(None):  # a database server locks rows itself
        assert not (tmp_path / "None.claim").exists()
