"""cnnlab ablate: a grid × seeds in one study directory; finished runs are skipped."""

import json

import pytest

from cnnlab.cli import main
from cnnlab.errors import ConfigError
from cnnlab.studies.ablate import ablate, parse_vary, plan, run_state

TINY = [
    "model.name=mlp",
    "model.hidden=16",
    "data.name=synthetic",
    "data.num_train=64",
    "data.num_test=32",
    "train.batch_size=16",
    "train.eval_batch_size=32",
]


def test_parse_vary():
    assert parse_vary(["model.activation=relu,tanh", "optim.lr=0.1,0.01"]) == {
        "model.activation": ["relu", "tanh"],
        "optim.lr": [0.1, 0.01],
    }
    with pytest.raises(ConfigError, match="--vary needs key=v1,v2"):
        parse_vary(["model.activation"])
    with pytest.raises(ConfigError, match="repeats a value"):
        parse_vary(["optim.name=sgd,sgd"])


def test_plan_validates_every_run_first(tmp_path):
    with pytest.raises(ConfigError, match="unknown activation 'rellu'"):
        plan(vary=["model.activation=relu,rellu"], overrides=TINY, runs_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="unknown optimizer 'sgdd'"):
        plan(vary=["optim.name=sgd,sgdd"], overrides=TINY, runs_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="nothing to vary"):
        plan(vary=[], overrides=TINY)


def test_study_end_to_end_and_skip(tmp_path):
    logs = []
    st = ablate(
        vary=["model.activation=relu,tanh"],
        epochs=2,
        seeds=2,
        overrides=TINY,
        runs_dir=str(tmp_path),
        study="s1",
        log=logs.append,
    )
    assert st.trained == 4 and len(st.rows) == 2
    for f in ("results.csv", "results.json", "results.md", "curves.png", "study.json"):
        assert (st.dir / f).is_file(), f
    rows = json.loads((st.dir / "results.json").read_text())
    for r in rows:
        assert r["seeds"] == 2 and r["epochs"] == 2 and 0 <= r["test_acc_mean"] <= 1
        accs = r["test_acc_per_seed"]
        assert r["test_acc_mean"] == pytest.approx(sum(accs) / 2)
    assert "activation=relu" in (st.dir / "results.md").read_text()
    assert (st.dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    for s in st.runs:
        assert run_state(st.dir / s.name, 2) == "done"
    # the same command again: nothing is trained
    again = ablate(
        vary=["model.activation=relu,tanh"],
        epochs=2,
        seeds=2,
        overrides=TINY,
        runs_dir=str(tmp_path),
        study="s1",
        log=logs.append,
    )
    assert again.skipped == 4 and again.trained == 0
    assert [r["test_acc_mean"] for r in again.rows] == [r["test_acc_mean"] for r in st.rows]


def test_cli_ablate_and_inspect(tmp_path, capsys):
    args = ["ablate", "--vary", "optim.name=sgd,adam", "--epochs", "1", "--study", "c"]
    args += ["--runs-dir", str(tmp_path)] + [a for o in TINY for a in ("--set", o)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "optim=sgd" in out and "optim=adam" in out and "study directory" in out
    assert main(["inspect", "lenet5", "--input-size", "32", "--set", "attention=concat"]) == 0
    out = capsys.readouterr().out
    assert "SelfAttention2d" in out and "16×6×6" in out and "parameters" in out
    assert main(["ablate", "--vary", "optim.name"]) == 2
    assert "cnnlab: error: --vary needs" in capsys.readouterr().err
