"""Helpers for the server tests: a real uvicorn server on a free loopback port."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from cnnlab.deploy.serve import open_backend


@pytest.fixture(scope="module")
def backend(tiny_trained_run):
    """The tiny run behind a torch backend (one per test module)."""
    return open_backend(tiny_trained_run)


def png(side=28, value=None, seed=0) -> bytes:
    """A grey PNG: constant ``value``, else random pixels from ``seed``."""
    a = (
        np.full((side, side), value, np.uint8)
        if value is not None
        else np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    )
    buf = io.BytesIO()
    Image.fromarray(a, "L").save(buf, "PNG")
    return buf.getvalue()


@contextlib.contextmanager
def live_server(app, make_config=None, **kw):
    """Serve ``app`` with uvicorn in a thread; yields (host, port). ``make_config(port)``
    gives the uvicorn.Config to use (default: a plain one with ``kw``)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if make_config is None:
        cfg = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **kw)
    else:
        cfg = make_config(port)
    srv = uvicorn.Server(cfg)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started, "server did not start"
    try:
        yield "127.0.0.1", port
    finally:
        srv.should_exit = True
        t.join(10)


def http(port: int, raw: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send one raw HTTP/1.1 request, return (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        while len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(head.split(b" ", 2)[1]), body


@pytest.fixture
def served():
    return live_server
