"""The server against a handful of crafted requests (each one a reported attack, run for
real against a live uvicorn server configured as ``cnnlab serve`` configures it):
metadata floods, abandoned uploads, a full decode queue, slowloris, huge headers,
spoofed X-Forwarded-For, NaN in ood.json, and every export kind served."""

import contextlib
import io
import json
import shutil
import socket
import threading
import time

import pytest
from PIL import Image

import cnnlab.deploy.serve as serve_mod
from cnnlab.deploy.serve import ServeConfig, create_app, open_backend, uvicorn_config

from ..data.test_image_floods import ICCP, jpeg_com_flood, photo_jpeg, png_flood
from .conftest import http, live_server, png


@contextlib.contextmanager
def serving(app, cfg: ServeConfig):
    """``app`` under the uvicorn configuration of ``cnnlab serve`` on a free port."""
    with live_server(app, lambda port: uvicorn_config(app, cfg, "127.0.0.1", port)) as (_, p):
        yield p


def raw_post(port: int, body: bytes, ctype: str = "image/png", extra: str = "") -> bytes:
    return (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def metric(port: int, name: str) -> float:
    _, txt = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    for line in txt.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(port: int, name: str, value: float, timeout: float = 20) -> None:
    """Until the server's metric ``name`` reads ``value`` (ordering without sleeps)."""
    deadline = time.monotonic() + timeout
    while metric(port, name) != value:
        assert time.monotonic() < deadline, f"{name} never reached {value}"
        time.sleep(0.02)


# ------------------------------------------------------------------- decoding work


@pytest.mark.parametrize(
    "kind,body",
    [
        ("iCCP", lambda: png_flood(ICCP, 400)),
        ("COM", lambda: jpeg_com_flood(300_000)),
    ],
)
def test_metadata_flood_is_refused_before_decoding(backend, kind, body):
    """A valid 28 × 28 image with a flood of metadata: 413 from the structure guard (was
    decoded: ~0.6 ms per iCCP chunk, seconds per request at full size)."""
    data = body()
    with serving(create_app(backend, ServeConfig()), ServeConfig()) as port:
        status, out = http(port, raw_post(port, data))
    assert status == 413 and "limit" in json.loads(out)["error"], out[:200]


def test_phone_photo_is_accepted_under_the_pixel_guard(backend):
    """A 12 MP JPEG (4032 × 3024) was refused 413 by the 4 MP guard; it is decoded at
    1/8 size now. A PNG of the same pixel count is still refused from its header."""
    photo = photo_jpeg(4032, 3024)
    cfg = ServeConfig()
    with serving(create_app(backend, cfg), cfg) as port:
        status, out = http(port, raw_post(port, photo, "image/jpeg"))
        assert status == 200, out[:300]
        assert json.loads(out)["predictions"][0]["class"]
        big = io.BytesIO()
        Image.new("L", (4032, 3024)).save(big, "PNG")
        status, out = http(port, raw_post(port, big.getvalue()))
        assert status == 413 and "--max-pixels" in json.loads(out)["error"]


# ------------------------------------------------------------------- decode queue


@pytest.mark.parametrize("abandoned", [2, pytest.param(20, marks=pytest.mark.slow)])
def test_abandoned_uploads_are_dropped_and_a_full_queue_answers_503(
    backend, monkeypatch, abandoned
):
    """One decode worker held on a gate: uploads whose clients hang up are never decoded
    (they used to be, one after the other: 20 of them delayed the next predict by 12.9 s),
    and beyond --max-pending a request is answered 503 with Retry-After at once instead of
    waiting in an unbounded queue."""
    gate, calls = threading.Event(), []
    real = serve_mod.parse_request

    def gated(*a, **kw):
        calls.append(time.monotonic())
        if len(calls) == 1:
            gate.wait(20)
        return real(*a, **kw)

    monkeypatch.setattr(serve_mod, "parse_request", gated)
    cfg = ServeConfig(decode_workers=1, max_pending=3)
    app = create_app(backend, cfg)
    with serving(app, cfg) as port:
        req = raw_post(port, png())
        results = {}

        def first():
            results["first"] = http(port, req, timeout=30)

        t = threading.Thread(target=first)
        t.start()
        while not calls:
            time.sleep(0.01)
        for i in range(abandoned):  # uploads whose clients give up while they wait
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(req)
            wait_for(port, "cnnlab_decode_pending", 2.0)
            s.close()
            wait_for(port, "cnnlab_abandoned_decodes_total", i + 1.0)
        s2 = socket.create_connection(("127.0.0.1", port))  # waits in the queue (2 of 3)
        s2.sendall(req)
        wait_for(port, "cnnlab_decode_pending", 2.0)
        s3 = socket.create_connection(("127.0.0.1", port))  # 3 of 3
        s3.sendall(req)
        wait_for(port, "cnnlab_decode_pending", 3.0)
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s4:  # one too many
            s4.sendall(req)
            head = s4.recv(65536)
        assert time.monotonic() - t0 < 5  # at once, not after the queue (20 s gate)
        assert head.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in head.lower(), head
        assert b'"error"' in head
        gate.set()
        t.join(30)
        for s in (s2, s3):
            s.settimeout(10)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            s.close()
        assert results["first"][0] == 200
        assert len(calls) == 3, f"{len(calls)} decodes: the abandoned uploads were decoded"
        assert metric(port, "cnnlab_abandoned_decodes_total") == float(abandoned)


# ------------------------------------------------------------------- connections


def slowloris(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ")  # and never the rest
        socks.append(s)
    return socks


def closed_by_server(s: socket.socket, wait: float) -> bytes | None:
    """What the server sent before closing, or None if it is still open after ``wait``."""
    s.settimeout(wait)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        return data


def readable(socks: list[socket.socket]) -> set[int]:
    """Indexes of the sockets the server has answered or closed (poll: no FD_SETSIZE)."""
    import select

    poller = select.poll()
    fds = {s.fileno(): i for i, s in enumerate(socks)}
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return {fds[fd] for fd, _ in poller.poll(50)}


def _slowloris_case(backend, n: int, cap: int):
    cfg = ServeConfig(max_connections=cap, header_timeout_s=120)  # eviction, not the timeout
    with serving(create_app(backend, cfg), cfg) as port:
        socks = slowloris(port, n)
        try:
            # real clients get in: each evicts the oldest connection still in its headers
            for _ in range(5):
                status, _ = http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
                assert status == 200
            deadline = time.monotonic() + 20
            while len(closed := readable(socks)) < n - cap:
                assert time.monotonic() < deadline, (len(closed), n, cap)
        finally:
            for s in socks:
                s.close()


def test_slowloris_does_not_lock_out_real_clients(backend):
    _slowloris_case(backend, n=120, cap=40)


@pytest.mark.slow
def test_slowloris_at_scale(backend):
    _slowloris_case(backend, n=3000, cap=500)


def test_headers_must_arrive_in_time(backend):
    """A connection that starts its headers and stalls gets a 408 in the error shape; one
    that never sends a byte is closed (both used to stay open for ever)."""
    cfg = ServeConfig(header_timeout_s=0.5)
    with serving(create_app(backend, cfg), cfg) as port:
        stalled, idle = slowloris(port, 1)[0], socket.create_connection(("127.0.0.1", port))
        got = closed_by_server(stalled, 10)
        assert got is not None and got.startswith(b"HTTP/1.1 408") and b'"error"' in got
        assert closed_by_server(idle, 10) == b""
        stalled.close()
        idle.close()


def test_huge_headers_are_refused_while_they_arrive(backend):
    """A 4 MiB header (64 MiB in the report) is cut off at --max-header-kb with a 431,
    not buffered whole."""
    cfg = ServeConfig(max_header_kb=16)
    with serving(create_app(backend, cfg), cfg) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-big: ")
            sent = 0
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while sent < 4 << 20:
                    s.sendall(b"a" * 65536)
                    sent += 65536
            got = closed_by_server(s, 5)
        assert got is not None and got.startswith(b"HTTP/1.1 431"), (got or b"")[:100]
        assert sent < 4 << 20 or b'"error"' in got
        assert http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
        _, info = http(port, b"GET /v1/model HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(info)["serving"]["decoded_to"] == [1, 28, 28]  # what the page shows


def test_api_key_is_checked_before_the_body_is_read(backend):
    cfg = ServeConfig(api_key="s3cret-key-1")
    with serving(create_app(backend, cfg), cfg) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            t = time.monotonic()
            s.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                b"Content-Type: image/png\r\nContent-Length: 8000000\r\n\r\n"
            )
            head = s.recv(65536)
        # a server that waited for the body would answer 408 after --read-timeout (10 s)
        assert head.startswith(b"HTTP/1.1 401") and time.monotonic() - t < 8


def test_malformed_http_and_cors_refusals_have_the_error_shape(backend):
    cfg = ServeConfig(cors_origins=("https://ok.example",))
    with serving(create_app(backend, cfg), cfg) as port:
        status, body = http(port, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
        assert status == 400 and set(json.loads(body)) == {"error"}
        status, body = http(
            port,
            b"OPTIONS /v1/predict HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n"
            b"Access-Control-Request-Method: POST\r\n\r\n",
        )
        assert status == 400 and set(json.loads(body)) == {"error"}


def test_rate_limit_ignores_x_forwarded_for_unless_a_proxy_is_named(backend):
    """From loopback, a new X-Forwarded-For per request used to make a new client each
    time (uvicorn trusts 127.0.0.1 by default): the limit never applied."""
    cfg = ServeConfig(rate_limit=1)
    with serving(create_app(backend, cfg), cfg) as port:
        statuses = [
            http(port, raw_post(port, png(), extra=f"X-Forwarded-For: 10.0.0.{i}\r\n"))[0]
            for i in range(6)
        ]
    assert 429 in statuses, statuses


def test_long_values_are_not_echoed_whole(backend):
    cfg = ServeConfig()
    name = "x" * 1_000_000
    b = "bnd"
    body = (
        f'--{b}\r\nContent-Disposition: form-data; name="f"; filename="{name}"\r\n'
        f"Content-Type: image/png\r\n\r\nnot an image\r\n--{b}--\r\n"
    ).encode()
    with serving(create_app(backend, cfg), cfg) as port:
        status, out = http(port, raw_post(port, body, f"multipart/form-data; boundary={b}"))
    assert status == 400 and len(out) < 400, len(out)


def test_nan_ood_threshold_does_not_break_answers(tiny_trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    (run / "ood.json").write_text('{"method": "energy", "threshold": NaN, "tpr": 0.95}')
    cfg = ServeConfig()
    with serving(create_app(open_backend(run), cfg), cfg) as port:
        status, out = http(port, raw_post(port, png()))
    assert status == 200, out[:200]
    assert "ood" not in json.loads(out)["predictions"][0]


# ------------------------------------------------------------------- export kinds


@pytest.mark.parametrize(
    "layout,invert", [("NHWC", False), pytest.param("NCHW", True, marks=pytest.mark.slow)]
)
def test_uint8_export_is_served(tiny_trained_run, tmp_path, layout, invert):
    """``cnnlab serve model.uint8.onnx``: /healthz answered 500 and every image 400."""
    from cnnlab.deploy.export import export

    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    r = export(
        run, "onnx", parity_images=32, input_kind="uint8", layout=layout, invert=invert, golden=0
    )
    ref = open_backend(run)
    onnx_be = open_backend(r["export"])
    cfg = ServeConfig()
    images = [png(seed=i) for i in range(4)] + [png(value=255 - 40 * invert)]
    with (
        serving(create_app(ref, cfg), cfg) as p_ref,
        serving(create_app(onnx_be, cfg), cfg) as port,
    ):
        assert http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
        _, info = http(port, b"GET /v1/model HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(info)["serving"]["decoded_to"] == [1, 28, 28]  # what the page shows
        for im in images:
            s1, a = http(p_ref, raw_post(p_ref, im))
            s2, b = http(port, raw_post(port, im))
            assert s1 == s2 == 200, b[:200]
            pa, pb = json.loads(a)["predictions"][0], json.loads(b)["predictions"][0]
            if not invert:  # the graph and the server decide inversion alike
                assert pa["class"] == pb["class"]
                assert abs(pa["probability"] - pb["probability"]) < 1e-3


@pytest.mark.parametrize(
    "flag",
    [
        ["--max-pending", "0"],
        ["--max-connections", "0"],
        ["--max-header-kb", "0"],
        ["--header-timeout", "0"],
        ["--max-inflight-mb", "1"],  # below --max-body-mb
        ["--decode-budget", "-1"],
    ],
)
def test_bad_limits_are_one_line(tiny_trained_run, capsys, flag):
    from cnnlab.cli import main

    assert main(["serve", str(tiny_trained_run), "--port", "1", *flag]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: ") and len(err.strip().splitlines()) == 1, err


def test_request_bodies_in_memory_are_bounded(backend, monkeypatch):
    """Bodies held by requests in progress count against --max-inflight-mb: with one
    0.9 MB upload held in decoding, a second one past the budget is a 503 + Retry-After
    (each body used to stay in memory for as long as the queue took)."""
    gate, calls = threading.Event(), []
    real = serve_mod.parse_request

    def gated(*a, **kw):
        calls.append(1)
        gate.wait(20)
        return real(*a, **kw)

    monkeypatch.setattr(serve_mod, "parse_request", gated)
    big = png(950)
    assert 0.8e6 < len(big) < 1 << 20
    cfg = ServeConfig(max_body_mb=1, max_inflight_mb=1.5, decode_workers=1)
    with serving(create_app(backend, cfg), cfg) as port:
        first = socket.create_connection(("127.0.0.1", port), timeout=30)
        first.sendall(raw_post(port, big))
        while not calls:
            time.sleep(0.01)
        status, out = http(port, raw_post(port, big))
        assert status == 503 and "--max-inflight-mb" in json.loads(out)["error"]
        gate.set()
        assert first.recv(65536).startswith(b"HTTP/1.1 200")
        first.close()
        assert http(port, raw_post(port, big))[0] == 200  # the budget is given back


def test_decode_cpu_budget_cuts_a_request_short(backend):
    """Within every size limit, a request of many large images could still hold a decode
    worker for seconds: past --decode-budget of CPU the rest of it is refused."""
    from fastapi.testclient import TestClient

    files = [("f", (f"{i}.png", png(1000, seed=i))) for i in range(4)]
    with TestClient(create_app(backend, ServeConfig(decode_budget_s=0.001))) as c:
        r = c.post("/v1/predict", files=files)
    assert r.status_code == 413 and "--decode-budget" in r.json()["error"], r.text
    assert "after 1 of 4" in r.json()["error"]
    with TestClient(create_app(backend, ServeConfig())) as c:  # the default: 2 s
        assert c.post("/v1/predict", files=files).status_code == 200
