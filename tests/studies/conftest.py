"""A real PostgreSQL server for the shared-study tests: initdb in a temporary folder, a
free local port, started as an unprivileged user (the server refuses root), stopped at
the end of the session."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    dirs = [Path(found).parent] if found else []
    dirs += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for d in dirs:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """``postgresql://cnnlab@127.0.0.1:<port>/postgres`` of a server running for the session."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql)")
    prefix: list[str] = []
    user = None
    if os.geteuid() == 0:  # postgres will not run as root: drop to an ordinary account
        for name in ("postgres", "nobody"):
            try:
                user = pwd.getpwnam(name)
                break
            except KeyError:
                pass
        assert user is not None, "no unprivileged account (postgres, nobody) to run the server"
        prefix = ["runuser", "-u", user.pw_name, "--"]
    top = Path(tempfile.mkdtemp(prefix="cnnlab-pg-"))  # not under pytest's 0700 root folder
    data, log = top / "data", top / "server.log"
    if user is not None:
        os.chown(top, user.pw_uid, user.pw_gid)
    port = free_port()

    def run(*cmd):
        p = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"{cmd[0]} failed: {p.stdout[-1500:]}{p.stderr[-1500:]}"

    opts = f"-p {port} -k {top} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    run(str(bindir / "initdb"), "-D", str(data), "-U", "cnnlab", "--auth=trust", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "start")
    try:
        yield f"postgresql://cnnlab@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(top, ignore_errors=True)
