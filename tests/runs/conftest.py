"""Real faults for the crash-safety tests: a small tmpfs that fills up (real ENOSPC), a
read-only remount of it (real EROFS), and `cnnlab train` in a child process to kill.

Mounting needs root (CI runs as root). Where it is refused, the disk-full tests fall back
to RLIMIT_FSIZE in a child process (the kernel's own EFBIG on a write past the limit) and
the read-only ones are skipped with one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import cnnlab

SRC = str(Path(cnnlab.__file__).resolve().parents[1])

# a tiny classifier run: 6 steps an epoch, a checkpoint every 2 (CPU, exact)
FAST = [
    "data.name=synthetic",
    "data.num_train=192",
    "data.num_test=64",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.deterministic=true",
    "train.threads=1",
    "train.diagnostics=false",
    "data.augment=crop,flip",
]


def fit_run(tmp_path, *extra, epochs=2, name="r", resume=None, callbacks=None):
    """A FAST run through the Python API (a new one named ``name``, or ``resume``)."""
    return cnnlab.fit(
        overrides=FAST + list(extra),
        epochs=epochs,
        name=None if resume else name,
        runs_dir=str(tmp_path),
        device="cpu",
        quiet=True,
        resume=resume,
        callbacks=callbacks,
    )


def cli_args(*sets: str, epochs: int = 2) -> list[str]:
    out = []
    for s in (*FAST, *sets):
        out += ["--set", s]
    return [*out, "--device", "cpu", "--epochs", str(epochs), "--quiet"]


def start(args: list[str], **env) -> subprocess.Popen:
    """`python -m cnnlab <args>` in a child process (stdout/stderr piped, text)."""
    e = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    return subprocess.Popen(
        [sys.executable, "-m", "cnnlab", *args],
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _mount(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", f"cnnlab-test-{uuid.uuid4().hex[:8]}",
         str(path)],
        capture_output=True,
    )  # fmt: skip
    return r.returncode == 0


class SmallFs:
    """A tmpfs of a given size at ``path``; ``resize``/``read_only`` remount it."""

    def __init__(self, path: Path):
        self.path = path

    def remount(self, opts: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{opts}", str(self.path)], check=True)

    def resize(self, size: str) -> None:
        self.remount(f"size={size}")

    def read_only(self, ro: bool = True) -> None:
        self.remount("ro" if ro else "rw")


@pytest.fixture
def small_fs(tmp_path):
    """A mounted 2 MiB tmpfs, or None where this process may not mount one."""
    mnt = tmp_path / "mnt"
    if not _mount(mnt, "2m"):
        yield None
        return
    try:
        yield SmallFs(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
