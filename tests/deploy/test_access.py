"""Who gets in: API key on non-loopback binds, CORS only for named origins, rate limit."""

import io
import socket

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.cli import main
from cnnlab.deploy.security import RateLimit, is_loopback
from cnnlab.deploy.serve import ServeConfig, check_exposure, create_app
from cnnlab.errors import CnnlabError

KEY = "s3cret-token-for-tests"


def png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8), "L").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow  # tens of seconds: `make test-slow`
def test_non_loopback_bind_needs_a_key_or_insecure(tiny_run, capsys, monkeypatch, caplog):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    with pytest.raises(CnnlabError, match="API key"):
        check_exposure("0.0.0.0", ServeConfig(), insecure=False)
    check_exposure("0.0.0.0", ServeConfig(api_key=KEY), insecure=False)
    check_exposure("0.0.0.0", ServeConfig(), insecure=True)
    assert "without an API key" in caplog.text
    monkeypatch.delenv("CNNLAB_API_KEY", raising=False)
    assert main(["serve", str(tiny_run), "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err
    # the key from the environment lets it get as far as binding (the port is taken)
    monkeypatch.setenv("CNNLAB_API_KEY", KEY)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main(["serve", str(tiny_run), "--host", "0.0.0.0", "--port", port]) == 2
    err = capsys.readouterr().err
    assert "cannot listen" in err and "API key" not in err
    assert main(["serve", str(tiny_run), "--api-key", "short"]) == 2


def test_bearer_token(backend):
    app = create_app(backend, ServeConfig(api_key=KEY))
    good = {"Authorization": f"Bearer {KEY}"}
    with TestClient(app) as c:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": KEY}):
            r = c.post("/v1/predict", files={"f": ("a.png", png())}, headers=headers)
            assert r.status_code == 401 and set(r.json()) == {"error"}
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/v1/model").status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/healthz").status_code == 200  # probes need no secret
        assert c.get("/docs").status_code == 200 and c.get("/").status_code == 200
        r = c.post("/v1/predict", files={"f": ("a.png", png())}, headers=good)
        assert r.status_code == 200, r.text
        assert c.get("/metrics", headers=good).status_code == 200
        spec = c.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert "401" in spec["paths"]["/v1/predict"]["post"]["responses"]
        assert "security" not in spec["paths"]["/healthz"]["get"]
    with TestClient(create_app(backend, ServeConfig(api_key=KEY, public_metrics=True))) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/v1/model").status_code == 401


def test_cors_only_for_named_origins(backend):
    origin = {"Origin": "https://example.org"}
    with TestClient(create_app(backend)) as c:
        r = c.get("/v1/model", headers=origin)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    cfg = ServeConfig(cors_origins=("https://example.org",))
    with TestClient(create_app(backend, cfg)) as c:
        r = c.get("/v1/model", headers=origin)
        assert r.headers["access-control-allow-origin"] == "https://example.org"
        r = c.get("/v1/model", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        pre = c.options(
            "/v1/predict",
            headers={**origin, "Access-Control-Request-Method": "POST"},
        )
        assert pre.status_code == 200


def test_rate_limit_answers_429_with_retry_after(backend):
    with TestClient(create_app(backend, ServeConfig(rate_limit=2))) as c:
        codes = [c.post("/v1/predict", files={"f": ("a.png", png())}) for _ in range(8)]
        limited = [r for r in codes if r.status_code == 429]
        assert limited and codes[0].status_code == 200
        r = limited[0]
        assert int(r.headers["retry-after"]) >= 1 and set(r.json()) == {"error"}
        assert c.get("/healthz").status_code == 200  # not limited


def test_token_bucket_refills():
    rl = RateLimit(None, rate=1, burst=2)
    assert rl.take("a", 0.0) == 0 and rl.take("a", 0.0) == 0
    assert rl.take("a", 0.0) == pytest.approx(1.0)
    assert rl.take("b", 0.0) == 0  # per client
    assert rl.take("a", 1.5) == 0
