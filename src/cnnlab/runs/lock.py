"""One writer per run directory: an OS file lock held for the life of a run.

``<run>/.lock`` is locked with ``flock`` (exclusive, non-blocking) by the process that
writes the run — the single process, or rank 0 under DDP — and records its pid, host and
start time. The OS drops the lock when that process ends in any way (``kill -9``
included), so a lock file left behind is stale exactly when its lock is free: the next
run takes it over without asking. A second writer is refused with one line naming the
holder. (``flock`` on a network file system is only as good as that file system's
locking; on a local disk it is exact.)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path

from cnnlab.errors import CheckpointError
from cnnlab.runs.files import io_error

LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text()[:1000])
        pid, host = int(info["pid"]), str(info["host"])[:100]
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {pid} on {host} (since {since})"
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return "another process"


class RunLock:
    """``with RunLock(run_dir):`` — or ``acquire()`` / ``release()``."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        try:  # never through a link: a planted .lock -> elsewhere would be written and emptied
            fd = os.open(
                self.path,
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                0o644,
            )
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise CheckpointError(
                    f"{self.path} is a symbolic link, not the run's lock file: remove it "
                    "(cnnlab never makes one) and run again"
                ) from None
            raise CheckpointError(io_error(self.path, e, "lock the run directory at")) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CheckpointError(f"{self.path} is not a regular file: remove it and run again")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CheckpointError(
                    f"run {self.path.parent} is in use by {_holder(self.path)}: "
                    "wait for it to finish or stop it (Ctrl-C) before writing to this run"
                ) from None
            raise CheckpointError(io_error(self.path, e, "lock")) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        try:  # who holds it, for the message above (a stale file is simply overwritten)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            pass
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)  # no holder; the file stays (removing it would race a waiter)
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor drops the lock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
