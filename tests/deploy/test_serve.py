import asyncio
import base64
import io

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.analysis.ood import save_ood
from cnnlab.cli import main
from cnnlab.deploy import export as ex
from cnnlab.deploy.batching import MicroBatcher
from cnnlab.deploy.serve import ServeConfig, create_app, open_backend


def png(size=28, mode="L", seed=0, fmt="PNG") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def client(tiny_run):
    with TestClient(
        create_app(open_backend(tiny_run), ServeConfig(max_body_mb=1, max_images=4))
    ) as c:
        yield c


def same_top(a, b):
    """Equal classes and probabilities (to float noise: batch composition changes the kernels)."""
    assert [t["class"] for t in a] == [t["class"] for t in b]
    for x, y in zip(a, b):
        assert x["probability"] == pytest.approx(y["probability"], abs=1e-5)


def check_prediction(p, k=3):
    assert len(p["top"]) == k and p["class"] == p["top"][0]["class"]
    probs = [t["probability"] for t in p["top"]]
    assert probs == sorted(probs, reverse=True) and 0 <= probs[-1] <= probs[0] <= 1


def test_predict_every_input_kind(client):
    a, b = png(seed=1), png(seed=2, mode="RGB", size=50, fmt="JPEG")  # any size/mode
    r = client.post("/v1/predict", files=[("file", ("a.png", a)), ("file", ("b.jpg", b))])
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2
    for p in preds:
        check_prediction(p)
    # the same image by every route gives the same answer
    raw = client.post("/v1/predict", content=a, headers={"content-type": "image/png"}).json()
    b64 = client.post("/v1/predict", json={"images": [base64.b64encode(a).decode()]}).json()
    url = client.post(
        "/v1/predict", json={"images": ["data:image/png;base64," + base64.b64encode(a).decode()]}
    ).json()
    pix = np.asarray(Image.open(io.BytesIO(a))).tolist()
    arr = client.post("/v1/predict", json={"pixels": [pix], "top_k": 10}).json()
    for other in (raw, b64, url):
        same_top(other["predictions"][0]["top"], preds[0]["top"])
    full = arr["predictions"][0]["top"]
    same_top(full[:3], preds[0]["top"])
    assert len(full) == 10
    assert sum(t["probability"] for t in full) == pytest.approx(1, abs=1e-5)
    assert "ood" not in preds[0]  # no stored threshold in this run


def test_ood_flag_when_the_run_has_a_threshold(tiny_run):
    save_ood(tiny_run, "energy", 1e9)  # everything falls below: flagged
    with TestClient(create_app(open_backend(tiny_run))) as c:
        p = c.post("/v1/predict", files={"f": ("a.png", png())}).json()["predictions"][0]
        assert p["ood"]["flag"] is True and p["ood"]["method"] == "energy"
        assert c.get("/v1/model").json()["ood"]["threshold"] == 1e9


def bomb_png(side=30000) -> bytes:
    """A PNG whose header claims side×side pixels (900 MB decoded) in a few hundred bytes:
    a real 8×8 image with its IHDR size rewritten (CRC fixed), the shape of a decompression bomb."""
    import struct
    import zlib

    data = bytearray(png(size=8))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", side, side)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


@pytest.fixture(scope="module")
def bomb():
    return bomb_png()


BAD = {
    "not an image": dict(files={"f": ("x.png", b"hello, not an image")}),
    "truncated image": dict(files={"f": ("x.png", png(size=64)[:120])}),
    "empty body": dict(content=b"", headers={"content-type": "application/json"}),
    "empty image": dict(files={"f": ("x.png", b"")}),
    "bad json": dict(content=b"{not json", headers={"content-type": "application/json"}),
    "json list": dict(json=[1, 2, 3]),
    "json no images": dict(json={"picture": "x"}),
    "images not list": dict(json={"images": "abc"}),
    "images empty": dict(json={"images": []}),
    "bad base64": dict(json={"images": ["***"]}),
    "base64 not str": dict(json={"images": [123]}),
    "ragged pixels": dict(json={"pixels": [[[1, 2], [3]]]}),
    "pixels 4d": dict(json={"pixels": [[[[[1]]]]]}),
    "pixels out of range": dict(json={"pixels": [[[0, 300], [1, 2]]]}),
    "pixels nan": dict(
        content=b'{"pixels": [[[NaN, 1], [1, 2]]]}', headers={"content-type": "application/json"}
    ),
    "pixels strings": dict(json={"pixels": [[["a", "b"], ["c", "d"]]]}),
    "too many images": dict(files=[("f", ("x.png", png()))] * 5),
    "bad top_k": dict(json={"images": [base64.b64encode(png()).decode()], "top_k": "x"}),
    "zero top_k": dict(json={"images": [base64.b64encode(png()).decode()], "top_k": 0}),
    "bad invert": dict(json={"images": [base64.b64encode(png()).decode()], "invert": "maybe"}),
    "wrong content type": dict(content=b"abc", headers={"content-type": "text/plain"}),
    "multipart no boundary": dict(content=b"abc", headers={"content-type": "multipart/form-data"}),
    "multipart garbage": dict(
        content=b"--x\r\nnot a header\r\n\r\n\x00\x01",
        headers={"content-type": "multipart/form-data; boundary=x"},
    ),
    "multipart no file": dict(data={"top_k": "3"}, files={}),
    "too many pixels (json)": dict(json={"pixels": [np.zeros((1100, 1100), np.uint8).tolist()]}),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_json_error(client, case):
    r = client.post("/v1/predict", **BAD[case])
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    msg = r.json()["error"]
    assert isinstance(msg, str) and len(msg) > 5
    assert client.get("/healthz").status_code == 200  # still alive


def test_decompression_bomb_and_pixel_limit(tiny_run, bomb):
    app = create_app(open_backend(tiny_run), ServeConfig(max_pixels=1_000_000))
    with TestClient(app) as c:
        # beyond PIL's own bomb guard (2 × MAX_IMAGE_PIXELS)
        r = c.post("/v1/predict", files={"f": ("bomb.png", bomb)})
        assert r.status_code == 413 and "too large" in r.json()["error"]
        # under PIL's guard, over the server's limit: refused from the header, never decoded
        small_bomb = bomb_png(5000)
        assert Image.open(io.BytesIO(small_bomb)).size == (5000, 5000)
        r = c.post("/v1/predict", files={"f": ("bomb.png", small_bomb)})
        assert r.status_code == 413 and "5000×5000" in r.json()["error"]
        big = png(size=1200)  # honest but over the pixel limit
        assert c.post("/v1/predict", files={"f": ("big.png", big)}).status_code == 413


def test_oversized_body_on_header_and_while_streaming(client):
    blob = b"x" * (2 * 2**20)  # limit is 1 MiB
    r = client.post("/v1/predict", content=blob, headers={"content-type": "image/png"})
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b"y" * 65536

    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413, r.text
    r = client.post("/v1/predict", files={"f": ("x.png", blob)})
    assert r.status_code == 413
    assert client.get("/healthz").json() == {"status": "ok"}


def test_model_health_metrics_docs_page(client):
    m = client.get("/v1/model").json()
    assert m["classes"][0] == "class0" and m["input"]["shape"] == ["batch", 1, 28, 28]
    assert m["backend"] == "torch" and m["saliency"] is True
    client.post("/v1/predict", files={"f": ("a.png", png())})
    client.post("/v1/predict", files={"f": ("a.png", b"junk")})
    txt = client.get("/metrics").text
    assert 'cnnlab_requests_total{endpoint="/v1/predict",status="200"} 1.0' in txt
    assert 'cnnlab_requests_total{endpoint="/v1/predict",status="400"} 1.0' in txt
    assert "cnnlab_request_latency_seconds_bucket" in txt and "cnnlab_batch_size_count" in txt
    assert 'cnnlab_errors_total{endpoint="/v1/predict",kind="InputError"} 1.0' in txt
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/predict" in spec["paths"] and "/v1/saliency" in spec["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "cdn" not in page.text.lower() and "http" not in client.get("/static/app.js").text


def test_saliency(client):
    r = client.post("/v1/saliency", files={"f": ("a.png", png())})
    assert r.status_code == 200, r.text
    body = r.json()
    sal = np.array(body["saliency"])
    assert sal.shape == (28, 28) and sal.max() == pytest.approx(1) and sal.min() >= 0
    check_prediction(body["prediction"])
    r = client.post("/v1/saliency", files=[("f", ("a.png", png())), ("f", ("b.png", png()))])
    assert r.status_code == 400


def test_onnx_backend_matches_torch(tiny_run):
    out = tiny_run / "m.onnx"
    ex.export(tiny_run, "onnx", out=out, parity_images=16)
    img = png(seed=3)
    with TestClient(create_app(open_backend(tiny_run))) as c:
        ref = c.post("/v1/predict?top_k=10", files={"f": ("a.png", img)}).json()["predictions"][0]
    for target in (out, tiny_run):  # an exported file, or a run exported in memory
        with TestClient(create_app(open_backend(target, "onnx"))) as c:
            assert c.get("/v1/model").json()["backend"] == "onnx"
            got = c.post("/v1/predict?top_k=10", files={"f": ("a.png", img)}).json()["predictions"][
                0
            ]
            same_top(got["top"], ref["top"])
            r = c.post("/v1/saliency", files={"f": ("a.png", img)})
            assert r.status_code == 501 and "torch backend" in r.json()["error"]


def test_micro_batching_gathers_concurrent_requests(tiny_run):
    app = create_app(open_backend(tiny_run), ServeConfig(max_batch=8, max_wait_ms=200))
    imgs = [png(seed=i) for i in range(12)]

    async def go():
        tr = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=tr, base_url="http://t") as c:
            rs = await asyncio.gather(
                *(c.post("/v1/predict", files={"f": ("a.png", im)}) for im in imgs)
            )
            singles = [
                (await c.post("/v1/predict", files={"f": ("a.png", im)})).json() for im in imgs[:3]
            ]
            return rs, singles, (await c.get("/metrics")).text

    rs, singles, metrics = asyncio.run(go())
    assert all(r.status_code == 200 for r in rs)
    for r, s in zip(rs[:3], singles):  # batching does not change answers
        assert r.json()["predictions"][0]["class"] == s["predictions"][0]["class"]
    vals = dict(
        line.split() for line in metrics.splitlines() if line.startswith("cnnlab_batch_size_")
    )
    # 12 concurrent images + 3 sequential ones in far fewer than 15 forwards, none above 8
    assert float(vals["cnnlab_batch_size_sum"]) == 15
    assert float(vals["cnnlab_batch_size_count"]) <= 3 + 4
    assert float(vals['cnnlab_batch_size_bucket{le="8.0"}']) == float(
        vals["cnnlab_batch_size_count"]
    )


def test_micro_batcher_splits_results_and_survives_model_errors():
    seen = []

    def fn(x):
        seen.append(len(x))
        if (x < 0).any():
            raise RuntimeError("boom")
        return x.reshape(len(x), -1)[:, :2] * 2

    b = MicroBatcher(fn, max_batch=4, max_wait_ms=50)

    async def go():
        xs = [np.full((n, 1, 2, 2), i, np.float32) for i, n in enumerate((1, 2, 1, 3))]
        outs = await asyncio.gather(*(b.submit(x) for x in xs))
        bad = await asyncio.gather(
            b.submit(-np.ones((1, 1, 2, 2), np.float32)), return_exceptions=True
        )
        after = await b.submit(np.ones((1, 1, 2, 2), np.float32))
        return xs, outs, bad, after

    xs, outs, bad, after = asyncio.run(go())
    for x, o in zip(xs, outs):
        assert o.shape == (len(x), 2) and (o == 2 * x[0, 0, 0, 0]).all()
    assert max(seen[:2]) <= 4 and sum(seen[:2]) == 7  # 4 + 3, the 3-image request carried over
    assert isinstance(bad[0], RuntimeError) and (after == 2).all()


def test_serve_cli_errors(tiny_run, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    (tmp_path / "x.pkl").write_bytes(b"\x80\x04")
    assert main(["serve", str(tmp_path / "x.pkl")]) == 2
    assert main(["serve", str(tiny_run), "--max-batch", "0"]) == 2
    assert main(["serve", str(tiny_run), "--port", "70000"]) == 2
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main(["serve", str(tiny_run), "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.count("cnnlab: error:") == 5 and f"127.0.0.1:{port}" in err
    with open(tmp_path / "m.onnx", "wb") as f:
        f.write(b"not onnx")
    assert main(["serve", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.startswith("cnnlab: error:")


def test_fast_path_answers_as_the_documented_route(tiny_run):
    """POST /v1/predict is answered by FastPredict ahead of the framework; the documented
    route alone gives the same answers, errors included."""
    backend, cfg = open_backend(tiny_run), ServeConfig(max_body_mb=1, max_images=4)
    cases = [
        (png(), "image/png", ""),
        (png(40, "RGB"), "image/png", "?top_k=2&invert=auto"),
        (png(), "image/png", "?top_k=2&top_k=1"),  # a repeated name: the last, as Starlette
        (b"not an image", "image/png", ""),  # 400
        (png(), "text/plain", ""),  # 415
        (png(), "image/png", "?nosuch=1"),  # unknown option: 400
        (b'{"pixels": [[[0]]], "top_k": 1e999}', "application/json", ""),
        (b"x" * (2 << 20), "image/png", ""),  # 413
    ]
    answers = []
    for fast in (True, False):
        with TestClient(create_app(backend, cfg, fast_predict=fast)) as c:
            got = []
            for body, ctype, qs in cases:
                r = c.post("/v1/predict" + qs, content=body, headers={"content-type": ctype})
                got.append((r.status_code, r.json()))
            answers.append(got)
    assert answers[0] == answers[1]
    assert [a[0] for a in answers[0]] == [200, 200, 200, 400, 415, 400, 400, 413]
    assert len(answers[0][1][1]["predictions"][0]["top"]) == 2
