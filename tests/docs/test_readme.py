"""The README's tour runs verbatim in an empty folder.

The tour is the fenced block opened with ```` ```bash tour ````. Each line runs as written
(``cnnlab`` as ``python -m cnnlab``), except: ``cnnlab serve ... &`` starts in the background
with ``--port`` set to a free port, and ``curl URL`` is an HTTP GET of that URL on the same
port (curl may be missing); the server is stopped at the end.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def tour_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^```bash tour\n(.*?)^```", text, re.S | re.M)
    assert m, "README.md has no ```bash tour block"
    return [ln.strip() for ln in m.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 60) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_tour_lines_are_the_promised_steps():
    words = [shlex.split(ln)[1] for ln in tour_lines() if ln.startswith("cnnlab ")]
    assert words == ["train", "eval", "explain", "export", "serve"]


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 220


def test_readme_tour_runs(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    server, port = None, free_port()
    try:
        for line in tour_lines():
            args = shlex.split(line.rstrip("&").strip())
            if args[0] == "curl":
                url = next(a for a in args if a.startswith(("localhost", "http")))
                url = re.sub(r"^(http://)?localhost:\d+", f"http://127.0.0.1:{port}", url)
                status, body = get(url)
                assert status == 200 and b"ok" in body, (line, body)
                continue
            assert args[0] == "cnnlab", line
            cmd = [sys.executable, "-m", "cnnlab", *args[1:]]
            if line.endswith("&"):
                assert args[1] == "serve", line
                server = subprocess.Popen(
                    [*cmd, "--port", str(port)],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                continue
            out = subprocess.run(
                cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert out.returncode == 0, f"{line}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        assert server is not None and server.poll() is None, "the server should still be up"
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
