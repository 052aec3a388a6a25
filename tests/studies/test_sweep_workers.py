"""Several `cnnlab sweep` processes on one study: on a real PostgreSQL server (several
machines' case) and on SQLite (one machine's). The budget is the study's total, met
exactly; a worker SIGKILLed mid-trial has its trial failed by the heartbeat and run again
by the others. Network file systems are refused for SQLite with one line."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import ConfigError
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics
from cnnlab.studies import storage as db  # the study's database

SRC = str(Path(cnnlab.__file__).resolve().parents[1])
# each trial: 2 epochs of 3 steps (128 synthetic images less the validation tenth, batch 32)
SETS = [f"data.{k}" for k in ("name=synthetic", "num_train=128", "num_test=32")] + [
    f"train.{k}" for k in ("batch_size=32", "device=cpu", "epochs=2", "threads=1")
]
# the space as a user writes it
SPACE = """\
optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
model.activation: {type: categorical, choices: [relu, tanh]}
"""
HEARTBEAT = 4  # seconds of silence before a worker's trial is failed and queued again


def start_workers(tmp: Path, storage: str | None, budget: int, n: int = 3, fault=None):
    """``n`` sweep processes started at once on study "shared"; ``fault`` (a CNNLAB_FAULT
    spec) makes the first one SIGKILL itself there, mid-trial."""
    space = tmp / "space.yaml"
    space.write_text(SPACE)
    argv = [sys.executable, "-m", "cnnlab", "sweep", "--space", str(space), "--study", "shared",
            "--trials", str(budget), "--runs-dir", str(tmp / "runs"),
            "--heartbeat", str(HEARTBEAT)]  # fmt: skip
    argv += ["--storage", storage] if storage else []
    argv += sum((["--set", s] for s in SETS), [])
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = []
    for i in range(n):
        e = dict(env, CNNLAB_FAULT=fault) if (fault and i == 0) else env
        procs.append(
            subprocess.Popen(argv, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    return procs, argv


def finish(procs, timeout=300):
    out = []
    for p in procs:
        o, e = p.communicate(timeout=timeout)
        out.append((p.returncode, o, e))
    return out


def check_study(st, budget: int, runs: Path) -> list:
    """Exactly ``budget`` finished trials, none duplicated, each with its run directory whole."""
    S = optuna.trial.TrialState
    done = [t for t in st.get_trials() if t.state in (S.COMPLETE, S.PRUNED)]
    assert len(done) == budget
    assert not st.get_trials(states=(S.RUNNING, S.WAITING))
    assert len({t.number for t in done}) == budget
    # distinct configurations (workers started at once do not replay one another's draws)
    assert len({tuple(sorted(t.params.items())) for t in done}) == budget
    assert sum(bool(t.user_attrs.get("baseline")) for t in st.get_trials()) <= 2  # + a retry
    for t in done:
        d = runs / "shared" / "trials" / f"trial-{t.number:03d}"
        epochs = t.user_attrs.get("epochs", len(t.intermediate_values))
        assert [m["epoch"] for m in read_metrics(d)] == list(range(1, epochs + 1))
        load_checkpoint(d / "checkpoints" / "last.safetensors")  # present, checksum holds
    return done


def report_best(argv, capsys) -> str:
    """The best line `cnnlab sweep --report` prints (in this process: the same command)."""
    i = argv.index("sweep")
    rep = [a for a in argv[i:] if a != "--space"]
    rep = [a for a in rep if not a.endswith("space.yaml")] + ["--report"]
    capsys.readouterr()
    assert main(rep) == 0
    out = capsys.readouterr().out
    return next(line for line in out.splitlines() if line.startswith("best: trial"))


def campaign(tmp: Path, storage: str | None, url: str, capsys):
    t0 = time.monotonic()
    # three workers at once, a total budget of 4
    procs, argv = start_workers(tmp, storage, 4)
    for rc, _, err in finish(procs):
        assert rc == 0, err[-2000:]
    st = optuna.load_study(study_name="shared", storage=url)
    done = check_study(st, 4, tmp / "runs")
    assert len({t.user_attrs.get("worker") for t in done}) >= 2  # the work was shared
    best = st.best_trial
    line = report_best(argv, capsys)
    assert line.startswith(f"best: trial {best.number} val acc {best.value:.4f} ")
    t1 = time.monotonic()
    # the budget raised to 8; the first worker is SIGKILLed at its 4th step (mid-trial)
    procs, argv = start_workers(tmp, storage, 8, fault="step:4")
    res = finish(procs)
    assert res[0][0] == -signal.SIGKILL
    for rc, _, err in res[1:]:
        assert rc == 0, err[-2000:]
    st = optuna.load_study(study_name="shared", storage=url)
    done = check_study(st, 8, tmp / "runs")
    dead = f"{socket.gethostname()}:{procs[0].pid}"
    killed = [t for t in st.trials if t.user_attrs.get("worker") == dead]
    killed = [t for t in killed if t.state.name == "FAIL" and not t.user_attrs.get("surplus")]
    assert len(killed) == 1  # its trial, failed by the heartbeat...
    retry = [t for t in done if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retry) == 1 and retry[0].params == killed[0].params  # ...and run again
    assert retry[0].user_attrs["worker"] != dead
    line = report_best(argv, capsys)
    assert line.startswith(f"best: trial {st.best_trial.number} val acc {st.best_value:.4f} ")
    return t1 - t0, time.monotonic() - t1


@pytest.mark.slow
def test_three_workers_share_a_postgresql_study_and_survive_a_sigkill(
    tmp_path, postgres_url, capsys
):
    clean, killed = campaign(tmp_path, postgres_url, postgres_url, capsys)
    with capsys.disabled():
        print(
            f"PostgreSQL: 3 workers, 4 trials {clean:.0f} s; 8 trials with a SIGKILL {killed:.0f} s"
        )


@pytest.mark.slow
def test_three_workers_share_a_sqlite_study_on_one_machine(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'runs' / 'shared' / 'study.db'}"
    clean, killed = campaign(tmp_path, None, url, capsys)
    with capsys.disabled():
        print(f"SQLite: 3 workers, 4 trials {clean:.0f} s; 8 trials with a SIGKILL {killed:.0f} s")


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/shared\\040runs nfs4 rw,relatime,vers=4.2 0 0
//nas/share /mnt/cifs cifs rw 0 0
tmpfs /mnt/shared\\040runs/local tmpfs rw 0 0
"""


def test_filesystem_of_reads_the_longest_mount_point():
    assert db.filesystem_of(Path("/home/u/runs"), MOUNTS) == ("ext4", "/")
    assert db.filesystem_of(Path("/mnt/shared runs/s"), MOUNTS) == ("nfs4", "/mnt/shared runs")
    assert db.filesystem_of(Path("/mnt/shared runs/local/x"), MOUNTS)[0] == "tmpfs"
    assert db.filesystem_of(Path("/mnt/cifsx"), MOUNTS)[0] == "ext4"  # a prefix, not inside
    assert db.filesystem_of(Path("/mnt/cifs/a.db"), MOUNTS)[0] == "cifs"


def test_sqlite_on_a_network_file_system_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(db, "filesystem_of", lambda p, mounts=None: ("nfs4", "/mnt/shared"))
    with pytest.raises(ConfigError, match="network file system .nfs4 at /mnt/shared.*postgresql"):
        db.storage_for(None, tmp_path / "s")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    argv = ["sweep", "--space", str(space), "--study", "s", "--runs-dir", str(tmp_path / "r")]
    assert main([*argv, *sum((["--set", s] for s in SETS), [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(
        r"cnnlab: error: the SQLite study .* \(nfs4 at /mnt/shared\)", err[0]
    )
    assert not (tmp_path / "r").exists()  # nothing left on disk


def test_report_of_a_missing_study_is_one_clear_error(tmp_path, capsys):
    assert main(["sweep", "--report", "--study", "nope", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnlab: error: no study 'nope'")
    assert main(["sweep", "--study", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "--space is required" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written
