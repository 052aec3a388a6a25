"""Run folders turned against their owner: a planted ``.lock`` symlink, a run name that
leaves --runs-dir through a planted link, a full disk at run creation, and the files'
modes and read-only runs as documented."""

from __future__ import annotations

import pytest

from cnnlab.cli import main
from cnnlab.errors import CnnlabError

from .conftest import cli_args, fit_run


def test_lock_symlink_is_refused_and_its_target_left_alone(tmp_path):
    """A resume used to open <run>/.lock through a planted link, write its pid into the
    target and empty it at exit."""
    runs = tmp_path / "runs"
    fit_run(runs, epochs=1)
    victim = tmp_path / "precious.txt"
    victim.write_text("do not touch\n")
    lock = runs / "r" / ".lock"
    lock.unlink()
    lock.symlink_to(victim)
    with pytest.raises(CnnlabError, match="symbolic link"):
        fit_run(runs, epochs=2, resume=str(runs / "r"))
    assert victim.read_text() == "do not touch\n"


def test_run_name_cannot_leave_runs_dir_through_a_link(tmp_path, capsys):
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    runs.mkdir()
    outside.mkdir()
    (runs / "link").symlink_to(outside)
    rc = main(["train", *cli_args(epochs=1), "--runs-dir", str(runs), "--name", "link/x"])
    assert rc == 2 and "outside --runs-dir" in capsys.readouterr().err
    assert list(outside.iterdir()) == []
    # a --runs-dir that is itself a link is fine: names are checked against where it points
    (tmp_path / "runs-link").symlink_to(runs)
    rc = main(
        ["train", *cli_args(epochs=1), "--runs-dir", str(tmp_path / "runs-link"), "--name", "ok"]
    )
    assert rc == 0 and (runs / "ok" / "config.yaml").is_file()


def test_checkpoints_are_0644_as_documented(tmp_path):
    res = fit_run(tmp_path, epochs=1)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (res.run_dir / "checkpoints").glob("*")}
    assert modes and set(modes.values()) == {0o644}, modes


def _fill(path) -> None:
    """Fill the file system at ``path`` to the last byte (a real ENOSPC)."""
    with open(path / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_full_disk_at_run_creation_leaves_nothing(small_fs, capsys):
    """It used to leave the folder with only .lock: the same --name was then refused as
    existing, and --resume refused it as not a run."""
    if small_fs is None:
        pytest.skip("mounting a tmpfs is not allowed here (needs root)")
    runs = small_fs.path / "runs"
    runs.mkdir()
    _fill(small_fs.path)
    rc = main(["train", *cli_args(epochs=1), "--runs-dir", str(runs), "--name", "f"])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err  # no Python warnings beside it
    assert not (runs / "f").exists()
    (small_fs.path / "filler").unlink()
    small_fs.resize("20m")
    assert main(["train", *cli_args(epochs=1), "--runs-dir", str(runs), "--name", "f"]) == 0


def test_eval_runs_on_a_read_only_run(small_fs, capsys):
    """eval used to fail writing eval.json, with a hint naming --runs-dir (it has none)."""
    if small_fs is None:
        pytest.skip("mounting a tmpfs is not allowed here (needs root)")
    small_fs.resize("20m")
    runs = small_fs.path / "runs"
    assert main(["train", *cli_args(epochs=1), "--runs-dir", str(runs), "--name", "r"]) == 0
    capsys.readouterr()
    small_fs.read_only()
    try:
        assert main(["eval", str(runs / "r")]) == 0
        out, err = capsys.readouterr()
        assert "accuracy" in out and "not saved" in err and "--out-dir" in err
        assert "--runs-dir" not in err
        assert main(["eval", str(runs / "r"), "--out-dir", str(small_fs.path / "x")]) == 2
        assert "--out-dir" in capsys.readouterr().err
    finally:
        small_fs.read_only(False)
