"""The inference server: FastAPI app with adaptive micro-batching, metrics and hard limits.

Endpoints: ``POST /v1/predict`` (multipart images, a raw image body, or JSON with base64
images / pixel arrays) → per image the answer ``cnnlab predict --json`` gives (top-k, the
OOD flag, TTA on request); ``POST /v1/saliency`` (torch backend);
``GET /v1/model``; ``GET /healthz``; ``GET /metrics`` (Prometheus); ``/docs`` (Swagger UI,
served offline); ``/`` (web page).

The event loop only moves bytes. Request bodies are parsed, validated and decoded in a
bounded pool of decode threads (``bodies.py``: sizes are checked from headers and list
shapes before any decoding); every model call runs on one model thread fed by the
micro-batcher (``batching.py``), which batches only requests that are already waiting (an
idle server answers at once). A prediction is ``inference``'s — the same pixels, TTA views
and answer shape as ``cnnlab predict`` (``service.py``).

The parts: ``backends.py`` (torch or ONNX Runtime), ``batching.py``, ``service.py``,
``routes.py``, ``middleware.py`` (limits, errors, the fast predict path), ``security.py``
(API key, rate limit), ``openapi.py`` and ``schema.py`` (the API's description),
``telemetry.py`` (Prometheus); here the configuration, the app and ``serve``.

Bad input raises :class:`InputError` (a CnnlabError with an HTTP status) and becomes a 4xx
JSON ``{"error": ...}`` — the one error shape, 404 and 405 included; the body size is
enforced on Content-Length and while streaming, the body must arrive within
``read_timeout_s``, and a client that hangs up mid-request is logged as one info line and
counted apart from errors. Weights come only from safetensors checkpoints or ONNX files.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from cnnlab.deploy.backends import Backend, open_backend
from cnnlab.deploy.bodies import Limits, parse_request
from cnnlab.deploy.middleware import FastPredict, Guard, add_error_handlers, json_cors
from cnnlab.deploy.routes import STATIC, add_routes
from cnnlab.deploy.security import is_loopback
from cnnlab.deploy.service import Service
from cnnlab.deploy.telemetry import server_metrics
from cnnlab.errors import CnnlabError

log = logging.getLogger("cnnlab.serve")
__all__ = ["ServeConfig", "create_app", "open_backend", "serve"]


@dataclass
class ServeConfig:
    max_batch: int = 64  # images per forward pass; 1 disables micro-batching
    max_wait_ms: float = 0.0  # extra wait for company; 0: batch only what is already waiting
    max_body_mb: float = 8.0
    max_images: int = 64  # per request
    max_pixels: int = 4_000_000  # per image, checked from the header before decoding
    max_request_pixels: int = 8_000_000  # all images of one request, from their headers
    max_json_values: int = 262_144  # numbers in a request's JSON pixel arrays
    top_k: int = 3
    threads: int = 0  # torch / ORT intra-op threads (0 = library default)
    decode_workers: int = 2  # threads that parse and decode request bodies
    decode_budget_s: float = 2.0  # CPU seconds to decode one request's images (0: none)
    read_timeout_s: float = 10.0  # the whole body must arrive within this
    header_timeout_s: float = 10.0  # a connection's request headers must arrive within this
    max_header_kb: int = 32  # request headers, counted while they arrive
    max_connections: int = 1000  # open connections (kept below the fd limit)
    max_pending: int = 16  # requests waiting for or in decoding; beyond: 503 + Retry-After
    max_inflight_mb: float = 256.0  # request bodies held at once, all requests together
    forwarded_allow_ips: str | None = None  # proxies whose X-Forwarded-For is believed
    api_key: str | None = None  # bearer token; None: no auth (loopback or --insecure)
    public_metrics: bool = False  # /metrics without the token
    cors_origins: tuple[str, ...] = ()  # no CORS headers unless origins are named
    rate_limit: float = 0.0  # requests/s per client on /v1/* (0: off), bursts of twice that

    def check(self) -> ServeConfig:
        for k in (
            "max_batch",
            "max_images",
            "max_pixels",
            "max_request_pixels",
            "max_json_values",
            "top_k",
            "decode_workers",
            "max_header_kb",
            "max_connections",
            "max_pending",
        ):
            if int(getattr(self, k)) < 1:
                raise CnnlabError(f"--{k.replace('_', '-')} must be ≥ 1")
        if self.max_wait_ms < 0 or self.max_body_mb <= 0 or self.read_timeout_s <= 0:
            raise CnnlabError("--max-wait-ms must be ≥ 0, --max-body-mb and --read-timeout > 0")
        if self.header_timeout_s <= 0 or self.max_inflight_mb < self.max_body_mb:
            raise CnnlabError("--header-timeout must be > 0 and --max-inflight-mb ≥ --max-body-mb")
        if self.decode_budget_s < 0:
            raise CnnlabError("--decode-budget must be ≥ 0 (0 = no budget)")
        if self.rate_limit < 0:
            raise CnnlabError("--rate-limit must be ≥ 0 (0 = off)")
        if self.api_key is not None and len(self.api_key) < 8:
            raise CnnlabError("the API key must have at least 8 characters")
        return self

    def limits(self) -> Limits:
        return Limits(
            self.max_images,
            self.max_pixels,
            self.max_request_pixels,
            self.max_json_values,
            self.decode_budget_s,
        )


def create_app(backend: Backend, config: ServeConfig | None = None, fast_predict: bool = True):
    """The server's ASGI app; ``fast_predict=False`` leaves ``POST /v1/predict`` to its
    documented route alone (the fast path's parity test)."""
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    from cnnlab.deploy.openapi import add_docs
    from cnnlab.deploy.security import BearerAuth, RateLimit

    cfg = (config or ServeConfig()).check()
    m = server_metrics()
    service = Service(backend, cfg, m, parse_request)
    md, c, s = backend.meta, service.c, service.s
    app = FastAPI(
        title="cnnlab inference",
        version=md.get("cnnlab_version") or "?",
        description=f"{md['model'].get('name', 'model')} on {md.get('dataset')}: "
        f"{len(service.classes)} classes, input {c}×{s}×{s}. Every error answers "
        '`{"error": "..."}`.',
        docs_url=None,
        redoc_url=None,
    )
    app.state.backend, app.state.config, app.state.service = backend, cfg, service
    add_error_handlers(app, m)
    add_routes(app, service)
    add_docs(app, cfg)
    if backend.saliency_available:  # the torch backend: the explore page needs the run
        from cnnlab.deploy.explore import add_explore_routes

        add_explore_routes(app, backend.run, backend.which, service.batcher.run_alone)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # the last added runs first: Guard → CORS → auth → rate limit → fast predict → the app
    if fast_predict:
        app.add_middleware(FastPredict, answer=service.answer, metrics=m)
    if cfg.rate_limit:
        app.add_middleware(RateLimit, rate=cfg.rate_limit)
    if cfg.api_key:
        app.add_middleware(BearerAuth, api_key=cfg.api_key, public_metrics=cfg.public_metrics)
    if cfg.cors_origins:
        app.add_middleware(
            json_cors(),
            allow_origins=list(cfg.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
        )
    app.add_middleware(
        Guard,
        max_bytes=int(cfg.max_body_mb * 2**20),
        read_timeout_s=cfg.read_timeout_s,
        metrics=m,
        max_inflight_bytes=int(cfg.max_inflight_mb * 2**20),
    )
    return app


def uvicorn_config(app, cfg: ServeConfig, host: str, port: int, log_level: str = "warning"):
    """The uvicorn configuration ``serve`` runs under: connection limits, header timeout
    and size (:mod:`cnnlab.deploy.connections`), proxy headers only from named proxies."""
    import uvicorn

    from cnnlab.deploy.connections import fd_budget, guarded_protocol

    proto = guarded_protocol(
        cfg.header_timeout_s, cfg.max_header_kb * 1024, fd_budget(cfg.max_connections)
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=proto,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=5,
        server_header=False,
        proxy_headers=cfg.forwarded_allow_ips is not None,
        forwarded_allow_ips=cfg.forwarded_allow_ips,
    )


def check_exposure(host: str, cfg: ServeConfig, insecure: bool) -> None:
    """A server reachable from other machines needs a token, or an explicit --insecure."""
    if is_loopback(host) or cfg.api_key:
        return
    if not insecure:
        raise CnnlabError(
            f"--host {host} is reachable from other machines: set an API key (--api-key or "
            "CNNLAB_API_KEY) or pass --insecure to serve without one"
        )
    log.warning(
        "serving on %s without an API key (--insecure): anyone who reaches it can use it", host
    )


def serve(
    target,
    backend: str = "auto",
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    log_level: str = "warning",
    which: str = "best",
    insecure: bool = False,
) -> None:
    import uvicorn

    cfg = (config or ServeConfig()).check()
    logging.basicConfig(format="%(levelname)s: %(name)s: %(message)s")
    level = getattr(logging, log_level.upper(), None)
    log.setLevel(level if isinstance(level, int) else logging.WARNING)
    check_exposure(host, cfg, insecure)
    try:  # a clear one-line error instead of uvicorn's log line and exit code 1
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as e:
        raise CnnlabError(
            f"cannot listen on {host}:{port} ({e.strerror}); pick another --port"
        ) from None
    be = open_backend(target, backend, cfg.threads, which)
    app = create_app(be, cfg)
    print(
        f"serving {be.meta['model'].get('name')} ({be.name} backend, max batch {cfg.max_batch}) "
        f"on http://{host}:{port}  (docs: /docs"
        + (", explore the model: /explore)" if be.saliency_available else ")"),
        flush=True,
    )
    uvicorn.Server(uvicorn_config(app, cfg, host, port, log_level)).run()
