"""The server under hostile input: each test reproduces a failure of an earlier version
(event loop frozen by decoding, 500s on odd JSON, disconnects counted as server errors,
no read timeout) against the real ASGI app or a live uvicorn server."""

import asyncio
import base64
import json
import logging
import socket
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cnnlab.deploy.serve import ServeConfig, create_app

from .conftest import http, live_server, png


@pytest.fixture
def client(backend):
    with TestClient(create_app(backend, ServeConfig()), raise_server_exceptions=False) as c:
        yield c


def post_json(client, raw: bytes):
    return client.post("/v1/predict", content=raw, headers={"content-type": "application/json"})


B64 = base64.b64encode(png()).decode()
ODD_JSON = {
    "top_k 1e999 (OverflowError)": b'{"pixels": [[[0]]], "top_k": 1e999}',
    "3000 nested [ (RecursionError)": b'{"pixels": ' + b"[" * 3000,
    "3000 nested [ closed": b'{"pixels": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    "5000-digit int in pixels": b'{"pixels": [[[' + b"9" * 5000 + b"]]]}",
    "5000-digit int as top_k": b'{"pixels": [[[0]]], "top_k": ' + b"7" * 5000 + b"}",
    "40-digit int in pixels": b'{"pixels": [[[' + b"9" * 40 + b", 1]]]}",
    "strings in pixels": b'{"pixels": [[["12", "13"], ["1", "2"]]]}',
    "booleans in pixels": b'{"pixels": [[[true, false], [false, true]]]}',
    "a boolean among numbers": b'{"pixels": [[[true, 2], [3, 4]]]}',
    "null in pixels": b'{"pixels": [[[null, 2], [3, 4]]]}',
    "object in pixels": b'{"pixels": [[[{}, 2], [3, 4]]]}',
    "top_k 2.9": json.dumps({"images": [B64], "top_k": 2.9}).encode(),
    "top_k true": json.dumps({"images": [B64], "top_k": True}).encode(),
    "top_k string": json.dumps({"images": [B64], "top_k": "3"}).encode(),
    "top_k -1": json.dumps({"images": [B64], "top_k": -1}).encode(),
    "invert 1": json.dumps({"images": [B64], "invert": 1}).encode(),
    "unknown key": json.dumps({"images": [B64], "topk": 2}).encode(),
    "invalid utf-8": b'{"images": ["\xff\xfe"]}',
    "lone surrogate": b'{"images": ["\\ud800"]}',
}


@pytest.mark.parametrize("case", list(ODD_JSON))
def test_odd_json_is_a_4xx_never_a_500(client, case):
    r = post_json(client, ODD_JSON[case])
    assert r.status_code in (400, 413, 422), (case, r.status_code, r.text)
    assert set(r.json()) == {"error"} and len(r.json()["error"]) > 5


@pytest.mark.parametrize(
    "query", ["top_k=2.9", "top_k=1e999", "top_k=" + "9" * 5000, "top_k=true", "top_k=-3"]
)
def test_odd_query_options_are_400(client, query):
    r = client.post("/v1/predict?" + query, files={"f": ("a.png", png())})
    assert r.status_code == 400, (query, r.text)


def test_integral_top_k_still_works(client):
    r = post_json(client, json.dumps({"images": [B64], "top_k": 4.0}).encode())
    assert r.status_code == 200 and len(r.json()["predictions"][0]["top"]) == 4
    r = client.post("/v1/predict?top_k=2", files={"f": ("a.png", png())})
    assert len(r.json()["predictions"][0]["top"]) == 2


def test_json_pixel_array_refused_before_conversion(backend):
    """4 M numbers: once converted (0.4-0.75 s on the event loop) before its 413."""
    app = create_app(backend, ServeConfig(max_body_mb=64))
    body = ("[" + ",".join(["0"] * 2000) + "]").encode()
    raw = b'{"pixels": [[' + b",".join([body] * 2000) + b"]]}"
    with TestClient(app) as c:
        t = time.process_time()  # the process's CPU (the app runs in its threads), not wall
        r = post_json(c, raw)
        took = time.process_time() - t
    assert r.status_code == 413 and "values" in r.json()["error"], r.text
    assert took < 1.0, took  # refused from a byte count, before parsing (was 1.6 s)


def test_request_pixel_cap_refuses_before_decoding(client):
    """64 small PNGs that each decode to 2000 × 2000: within the per-image limit, refused
    as a whole from their headers."""
    bomb = png(2000, value=0)
    assert len(bomb) < 8000
    t = time.process_time()  # the process's CPU, whatever else the machine runs
    r = client.post("/v1/predict", files=[("f", (f"{i}.png", bomb)) for i in range(64)])
    assert r.status_code == 413 and "pixels in all" in r.json()["error"], r.text
    assert time.process_time() - t < 1.0
    b64 = base64.b64encode(bomb).decode()
    r = post_json(client, json.dumps({"images": [b64] * 64}).encode())
    assert r.status_code == 413


async def _timed_requests(port: int, req: bytes, stop: float, lat: list, errors: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(n)
            lat.append(time.perf_counter() - t)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head[:40])
    finally:
        writer.close()


def _multipart(files: list[bytes], port: int) -> bytes:
    b = b"xyzzyboundary"
    body = b"".join(
        b"--" + b + b'\r\nContent-Disposition: form-data; name="f"; filename="x.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + f + b"\r\n"
        for f in files
    )
    body += b"--" + b + b"--\r\n"
    return (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={b.decode()}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _json_request(obj: dict, port: int) -> bytes:
    body = json.dumps(obj).encode()
    return (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_attack_does_not_stall_normal_clients(backend):
    """Normal clients keep p99 < 100 ms while heavy requests arrive twice a second: the
    64 × 2000² PNG request (multipart and base64 JSON) and the largest request the limits
    allow (two 2000² images: decoded for real, in the pool, off the event loop).

    On a machine so loaded that even the quiet baseline misses 100 ms, the bar is three
    times the baseline p99 (an event loop blocked by decoding stalls for seconds)."""
    bomb = png(2000, value=0)
    big = [png(2000, value=200), png(2000, value=60)]
    with live_server(create_app(backend, ServeConfig())) as (_, port):
        normal = _multipart([png(seed=1)], port)
        attacks = [
            _multipart([bomb] * 64, port),
            _json_request({"images": [base64.b64encode(bomb).decode()] * 64}, port),
            _multipart(big, port),
        ]

        async def load(seconds: float, attack: bool):
            lat, errors, statuses = [], [], []
            stop = time.perf_counter() + seconds

            async def attacker():
                while attack and time.perf_counter() < stop:
                    for r in attacks:
                        statuses.append((await asyncio.to_thread(http, port, r))[0])
                    await asyncio.sleep(0.5)

            await asyncio.gather(
                attacker(), *(_timed_requests(port, normal, stop, lat, errors) for _ in range(4))
            )
            assert not errors and len(lat) >= 5, (errors, len(lat))
            return float(np.percentile(lat, 99)) * 1000, statuses

        for r in attacks:  # warm-up
            http(port, r)
        base, _ = asyncio.run(load(1.5, attack=False))
        p99, statuses = asyncio.run(load(2.5, attack=True))
    assert statuses[:3] == [413, 413, 200], statuses
    bar = 100 if base < 33 else 3 * base
    print(f"normal p99: {base:.1f} ms quiet, {p99:.1f} ms under attack (bar {bar:.0f} ms)")
    assert p99 < bar, f"p99 {p99:.0f} ms under attack, {base:.0f} ms without (bar {bar:.0f} ms)"


def test_client_hanging_up_is_not_a_server_error(backend, caplog):
    caplog.set_level(logging.INFO, logger="cnnlab.serve")
    app = create_app(backend, ServeConfig())
    with live_server(app) as (_, port):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(
                    b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                    b"Content-Length: 100000\r\n\r\n" + png()[:50]
                )
                time.sleep(0.05)
        time.sleep(0.3)
        status, metrics = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    txt = metrics.decode()
    assert 'cnnlab_client_disconnects_total{endpoint="/v1/predict"} 3.0' in txt
    assert 'status="500"' not in txt and "cnnlab_errors_total{" not in txt
    lines = [r for r in caplog.records if "hung up" in r.getMessage()]
    assert len(lines) == 3 and all(r.levelno == logging.INFO for r in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_slow_body_times_out(backend):
    app = create_app(backend, ServeConfig(read_timeout_s=0.5))
    with live_server(app) as (_, port):
        t = time.perf_counter()
        status, body = http(
            port,
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 5000\r\n\r\n" + png()[:20],
        )
        took = time.perf_counter() - t
    # the 408 itself says the server gave up (the client would wait for ever); only the
    # lower bound is a time, and load can only lengthen it
    assert status == 408 and "read-timeout" in json.loads(body)["error"]
    assert took > 0.4


def test_404_405_have_the_error_shape(client):
    for r in (client.get("/nope"), client.get("/v1/predict"), client.delete("/healthz")):
        assert r.status_code in (404, 405) and set(r.json()) == {"error"}, r.text


def test_favicon(client):
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.content[:4] == b"\x00\x00\x01\x00"


def test_model_info_holds_no_local_path(client, tiny_trained_run):
    info = client.get("/v1/model").json()
    assert info["source_run"] == tiny_trained_run.name
    assert str(tiny_trained_run.parent) not in json.dumps(info)
