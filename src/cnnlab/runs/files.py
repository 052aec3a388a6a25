"""Atomic, fsynced file writes for everything a run directory holds; a failed write leaves
the old file whole and raises one clear CheckpointError (no traceback for a full disk)."""

from __future__ import annotations

import errno
import os
import signal
import tempfile
import time
from pathlib import Path

from cnnlab.errors import CheckpointError

FILE_MODE = 0o644  # mkstemp makes 0600 files; a run directory is meant to be shared/read
_FAULT_COUNTS: dict[str, int] = {}  # fault(): how often each point was reached


def fault(point: str, before=None) -> None:
    """Test hook for the crash tests: ``CNNLAB_FAULT=<point>:<n>`` SIGKILLs this process the
    n-th time ``point`` is reached; ``CNNLAB_FAULT_SLEEP=<s>`` sleeps inside every
    checkpoint write so an external kill can land there. Inert unless those are set."""
    spec = os.environ.get("CNNLAB_FAULT")
    if point == "ckpt-write" and os.environ.get("CNNLAB_FAULT_SLEEP"):
        time.sleep(float(os.environ["CNNLAB_FAULT_SLEEP"]))
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name != point:
        return
    _FAULT_COUNTS[point] = _FAULT_COUNTS.get(point, 0) + 1
    if _FAULT_COUNTS[point] == int(n or 1):
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)


def io_error(path, e: OSError, what: str = "write") -> str:
    """One line for a failed file operation: which file, why, in words."""
    why = e.strerror or str(e)
    hint = {
        errno.ENOSPC: "free some disk space",
        errno.EROFS: "the file system is read-only; choose another --runs-dir",
        errno.EACCES: "no permission; choose another --runs-dir",
        errno.EPERM: "no permission; choose another --runs-dir",
        errno.ENOENT: "the directory is missing",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EFBIG: "the file size limit is reached",
    }.get(e.errno, "check the path and the disk")
    return f"cannot {what} {path}: {why} ({hint})"


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``path`` all or nothing (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        unlink_quietly(tmp)
        raise CheckpointError(io_error(path, e)) from None
    except BaseException:
        unlink_quietly(tmp)
        raise


def unlink_quietly(tmp) -> None:
    if tmp is None:
        return
    try:
        os.unlink(tmp)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())
