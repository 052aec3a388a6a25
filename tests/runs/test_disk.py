"""A real full disk and a real read-only file system: one line, exit 2, nothing lost."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest

from cnnlab.cli import main
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics

from .conftest import SRC, cli_args


def loadable(run) -> list:
    good = []
    for name in ("last", "prev"):
        try:
            good.append(load_checkpoint(run / "checkpoints" / f"{name}.safetensors"))
        except Exception:  # noqa: BLE001 - counted below
            pass
    return good


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "Warning" not in ln]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("cnnlab: error: "), err
    return lines[0]


@pytest.mark.slow
def test_real_full_disk_is_one_line_and_resumes_once_there_is_space(small_fs, tmp_path, capsys):
    # gradients.jsonl on (the default), a checkpoint every 2 steps: the 2 MiB fill up
    args = cli_args("train.diagnostics=true", "train.checkpoint_every_steps=2", epochs=6)
    if small_fs is None:  # no mount allowed: the kernel's file size limit gives EFBIG
        code = (
            "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000)); "
            "from cnnlab.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        runs = tmp_path / "runs"
        p = subprocess.run(
            [sys.executable, "-c", code, "train", *args, "--runs-dir", str(runs), "--name", "f"],
            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=SRC),
        )  # fmt: skip
        assert p.returncode == 2, p.stderr
        assert "file size limit" in one_error_line(p.stderr)  # at the first checkpoint
        assert main(["train", "--resume", str(runs / "f"), "--quiet"]) == 0  # as advised
        assert [m["epoch"] for m in read_metrics(runs / "f")] == list(range(1, 7))
        return
    runs = small_fs.path / "runs"
    rc = main(["train", *args, "--runs-dir", str(runs), "--name", "f"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and "No space left on device" in line and "--resume" in line
    run = runs / "f"
    good = loadable(run)
    assert good, "neither last nor prev survived the full disk"
    epochs = [m["epoch"] for m in read_metrics(run)]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) < 6
    # every epoch line has its checkpoint: the newest checkpoint is at or past the last line
    assert max(int(c.meta["epoch"]) for c in good) >= (epochs[-1] if epochs else 0)
    small_fs.resize("64m")  # space again: the run continues where it stopped
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert [m["epoch"] for m in read_metrics(run)] == list(range(1, 7))


@pytest.mark.slow
def test_resume_on_a_read_only_file_system_is_one_line(small_fs, capsys):
    if small_fs is None:
        pytest.skip("cannot mount a tmpfs here (needs root); the read-only case needs one")
    runs = small_fs.path / "runs"
    small_fs.resize("64m")
    assert main(["train", *cli_args(epochs=1), "--runs-dir", str(runs), "--name", "ro"]) == 0
    run = runs / "ro"
    junk = run / "checkpoints" / ".last.safetensors.ab12.tmp"  # left by a killed write
    junk.write_bytes(b"partial")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    small_fs.read_only()
    rc = main(["train", "--resume", str(run), "--epochs", "2", "--quiet"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and "read-only" in line.lower()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    small_fs.read_only(False)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2] and not junk.exists()


assert resource and signal  # used in the fallback's child code
