"""The inference server: FastAPI app with adaptive micro-batching, metrics and hard limits.

Endpoints: ``POST /v1/predict`` (multipart images, a raw image body, or JSON with base64
images / pixel arrays) → top-k + OOD score/flag; ``POST /v1/saliency`` (torch backend);
``GET /v1/model``; ``GET /healthz``; ``GET /metrics`` (Prometheus); ``/docs`` (Swagger UI,
served offline); ``/`` (web page).

The event loop only moves bytes. Request bodies are parsed, validated and decoded in a
bounded pool of decode threads (``bodies.py``: sizes are checked from headers and list
shapes before any decoding); every model call runs on one model thread fed by
:class:`MicroBatcher`, which batches only requests that are already waiting (an idle
server answers at once). One model thread keeps torch/ORT threads from fighting over the
cores.

Bad input raises :class:`InputError` (a CnnlabError with an HTTP status) and becomes a 4xx
JSON ``{"error": ...}`` — the one error shape, 404 and 405 included; the body size is
enforced on Content-Length and while streaming, the body must arrive within
``read_timeout_s``, and a client that hangs up mid-request is logged as one info line and
counted apart from errors. Weights come only from safetensors checkpoints or ONNX files.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
from fastapi import Request

from cnnlab.deploy.bodies import InputError, Limits, parse_request, short, to_batch
from cnnlab.deploy.onnx_runtime import ort_session, session_metadata, to_layout
from cnnlab.deploy.security import is_loopback, send_error
from cnnlab.errors import CnnlabError, choices_msg

STATIC = Path(__file__).with_name("static")
ENDPOINTS = ("/v1/predict", "/v1/saliency", "/v1/model", "/healthz", "/metrics", "/")
log = logging.getLogger("cnnlab.serve")
__all__ = ["InputError", "MicroBatcher", "ServeConfig", "create_app", "open_backend", "serve"]


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


# --------------------------------------------------------------------------- backends


class Backend:
    """A model that maps float pixels in [0,1] (B, C, S, S) to logits (B, K) as numpy."""

    name = "?"
    meta: dict
    saliency_available = False

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def saliency(self, x: np.ndarray, target: int) -> np.ndarray:
        raise InputError(
            f"saliency needs the torch backend (this server runs {self.name}); "
            "start it with --backend torch",
            501,
        )


class TorchBackend(Backend):
    name = "torch"
    saliency_available = True

    # torch loads with this backend only: an exported .onnx is served without it (a
    # serving-only install has no torch at all)
    def __init__(self, run, which: str = "best"):
        from cnnlab.deploy.export import export_metadata, pixel_model

        self.run, self.which = run, which  # the explore page reads the run itself
        self.model, meta = pixel_model(run, which)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.meta = export_metadata(meta, run, "torch", "eager")
        # captum (and the matplotlib it pulls in, ~35 MB resident) loads on the first
        # saliency request, not at start: a server that only classifies never pays for it

    def predict(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).float().numpy()

    def saliency(self, x: np.ndarray, target: int) -> np.ndarray:
        """|∂ logit_target / ∂ pixels| (Simonyan et al. 2014) via Captum, max over channels."""
        import torch
        from captum.attr import Saliency

        xt = torch.from_numpy(x).requires_grad_(True)
        grad = Saliency(self.model).attribute(xt, target=int(target), abs=True)  # (1, C, S, S)
        return grad.amax(1)[0].numpy()


class OnnxBackend(Backend):
    """Any ONNX file ``cnnlab export`` writes: float pixels (B, C, S, S) in [0, 1], or the
    ``--input uint8`` graph (8-bit images in its layout; it converts, resizes and scales
    itself, and gives logits first)."""

    name = "onnx"

    def __init__(self, src, meta: dict | None = None, threads: int = 0):
        self.sess = ort_session(src, threads)
        self.input = self.sess.get_inputs()[0].name
        self.meta = session_metadata(self.sess, src) if meta is None else meta
        inp = self.meta.get("input", {})
        self.uint8_layout = inp.get("layout", "NCHW") if inp.get("dtype") == "uint8" else None

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.uint8_layout is not None:  # the server's pixels are exact multiples of 1/255
            x = to_layout(np.rint(x * 255).astype(np.uint8), self.uint8_layout)
        return self.sess.run(None, {self.input: x})[0]


def served_input(md: dict) -> tuple[int, int, bool]:
    """(channels, size) the server decodes images to for this model, and whether the
    model inverts light-background images itself (a uint8 export made with --invert)."""
    inp = md["input"]
    if inp.get("dtype") != "uint8":
        return int(inp["shape"][1]), int(inp["shape"][2]), False
    c = inp["shape"][3] if inp.get("layout") == "NHWC" else inp["shape"][1]
    inverts = any(
        st.get("op") == "invert" and st.get("in_graph") for st in md.get("preprocessing", [])
    )
    return int(c), int(inp["model_size"][0]), inverts


def open_backend(target, backend: str = "auto", threads: int = 0, which: str = "best") -> Backend:
    """A run directory / checkpoint (torch or ONNX backend) or an exported ``.onnx`` file."""
    if backend not in ("auto", "torch", "onnx"):
        raise CnnlabError(choices_msg("backend", backend, ("auto", "torch", "onnx")))
    p = Path(target)
    if p.suffix == ".onnx":
        if backend == "torch":
            raise CnnlabError(f"{target} is an ONNX file; serve it with --backend onnx")
        if not p.is_file():
            raise CnnlabError(f"{target}: ONNX file not found")
        return OnnxBackend(p, threads=threads)
    if p.is_file() and p.suffix != ".safetensors":
        raise CnnlabError(
            f"{target}: serve a run directory, a .safetensors checkpoint or a .onnx export"
        )
    import torch  # a run (not an export) needs torch whichever backend serves it

    from cnnlab.deploy.export import example_pixels, export_metadata, onnx_bytes, pixel_model

    if threads:
        torch.set_num_threads(threads)
    if backend in ("auto", "torch"):
        return TorchBackend(target, which)
    # ONNX from a run: export in memory (the same graph `cnnlab export` writes)
    wrapper, meta = pixel_model(target, which)
    data, exporter = onnx_bytes(wrapper, example_pixels(meta), "auto")
    return OnnxBackend(data, export_metadata(meta, target, "onnx", exporter), threads)


# --------------------------------------------------------------------------- batching


class MicroBatcher:
    """Gather concurrent requests into one forward pass (``max_batch`` images at most,
    the first request waits at most ``max_wait_ms``); run it on one worker thread."""

    def __init__(self, fn, max_batch: int, max_wait_ms: float, on_batch=None):
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000
        self.on_batch = on_batch
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="cnnlab-model")
        self._loop = None
        self._queue: asyncio.Queue | None = None
        self._task = None

    def _ensure(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run())

    async def submit(self, x: np.ndarray) -> np.ndarray:
        self._ensure()
        fut = self._loop.create_future()
        await self._queue.put((x, fut))
        return await fut

    async def run_alone(self, fn, *args):
        """Run another model call (saliency) on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _run(self) -> None:
        q, loop = self._queue, self._loop
        carry = None
        while True:
            first = carry if carry is not None else await q.get()
            carry = None
            if first[1].done():  # its client is gone (the request was cancelled)
                continue
            items, n = [first], len(first[0])
            deadline = loop.time() + self.max_wait
            while n < self.max_batch:
                if q.empty():
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(q.get(), left)
                    except asyncio.TimeoutError:  # not the builtin before 3.11
                        break
                else:
                    nxt = q.get_nowait()
                if nxt[1].done():
                    continue
                if n + len(nxt[0]) > self.max_batch:
                    carry = nxt  # starts the next batch
                    break
                items.append(nxt)
                n += len(nxt[0])
            x = items[0][0] if len(items) == 1 else np.concatenate([it[0] for it in items])
            try:
                logits = await loop.run_in_executor(self.executor, self.fn, x)
            except Exception as e:  # a model failure answers these requests, not the server
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            if self.on_batch:
                self.on_batch(len(x))
            i = 0
            for xi, fut in items:
                if not fut.done():
                    fut.set_result(logits[i : i + len(xi)])
                i += len(xi)


# --------------------------------------------------------------------------- the app


class ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


class Guard:
    """Pure-ASGI middleware around everything: body size limit (header and stream), read
    timeout, client disconnects, latency and status metrics."""

    def __init__(
        self,
        app,
        max_bytes: int,
        read_timeout_s: float,
        metrics: dict,
        max_inflight_bytes: int | None = None,
    ):
        self.app, self.max_bytes, self.m = app, max_bytes, metrics
        self.read_timeout = read_timeout_s
        self.max_inflight = max_inflight_bytes or 32 * max_bytes
        self.inflight = 0  # body bytes held by requests in progress, all together

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        status = {"code": 500, "started": False}

        async def _send(msg):
            if msg["type"] == "http.response.start":
                status["code"], status["started"] = msg["status"], True
            await send(msg)

        limit = self.max_bytes
        seen, done = 0, False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout

        async def _receive():
            nonlocal seen, done
            if done:  # the body is in; what follows is a wait for the disconnect
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise ClientGone
                return msg
            try:
                msg = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:  # not the builtin before 3.11
                raise InputError(
                    f"request body not received within {self.read_timeout:g} s (--read-timeout)",
                    408,
                ) from None
            if msg["type"] == "http.disconnect":
                raise ClientGone
            if msg["type"] == "http.request":
                n = len(msg.get("body", b""))
                seen += n
                self.inflight += n
                done = not msg.get("more_body", False)
                if seen > limit:
                    raise InputError(
                        f"request body exceeds the limit of {limit} bytes (--max-body-mb)", 413
                    )
                if self.inflight > self.max_inflight:
                    raise InputError(
                        "server busy: too many request bodies in memory (--max-inflight-mb); "
                        "retry shortly",
                        503,
                        retry_after=1,
                    )
            return msg

        try:
            for k, v in scope.get("headers", []):
                if k == b"content-length":
                    try:
                        cl = int(v)
                    except ValueError:
                        raise InputError("invalid Content-Length header") from None
                    if cl > limit:
                        raise InputError(
                            f"request body of {cl} bytes exceeds the limit of {limit} bytes "
                            "(--max-body-mb)",
                            413,
                        )
            await self.app(scope, _receive, _send)
        except ClientGone:
            status["code"] = 499  # nginx's "client closed request": not a server error
            self.m["disconnects"].labels(endpoint).inc()
            client = (scope.get("client") or ("?", 0))[0]
            log.info(
                "client %s hung up during %s %s after %d bytes",
                client,
                scope["method"],
                short(path),
                seen,
            )
        except InputError as e:
            if status["started"]:
                raise
            await send_error(send, e.status, str(e), reply_headers(e))
            status["code"] = e.status
            self.m["errors"].labels(endpoint, type(e).__name__).inc()
        finally:
            self.inflight -= seen
            self.m["requests"].labels(endpoint, str(status["code"])).inc()
            self.m["latency"].labels(endpoint).observe(time.perf_counter() - t0)


def reply_headers(exc: Exception) -> list[tuple[bytes, bytes]]:
    """The headers an error answer carries: ``connection: close`` where the body was left
    unread (408, 413, and a 503 for memory), ``retry-after`` on a busy server's 503."""
    status = getattr(exc, "status", 400)
    out = [(b"connection", b"close")] if status in (408, 413, 503) else []
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        out.append((b"retry-after", str(retry).encode()))
    return out


def error_reply(exc: Exception, path: str, metrics: dict) -> tuple[int, str, bool]:
    """How the server answers an exception raised by a request on ``path``: the status (a
    user's mistake its own, 400 by default; anything else 500), the message, and whether the
    connection must close (a body left unread, too large or too slow: 408, 413). Counted in
    ``cnnlab_errors_total``."""
    metrics["errors"].labels(path if path in ENDPOINTS else "other", type(exc).__name__).inc()
    if isinstance(exc, CnnlabError):
        status = getattr(exc, "status", 400)
        return status, str(exc), status in (408, 413, 503)
    return 500, f"internal error ({type(exc).__name__}); the server keeps running", False


class FastPredict:
    """``POST /v1/predict`` answered straight from ASGI, ahead of the framework's routing,
    request and response objects (which cost more than the model: a bare ASGI answer runs
    at ~12k requests/s here, the routed one at ~700). Same parsing (the query string as
    Starlette reads it), the same ``answer`` as the documented route, the same error shape
    and metrics; the limits, timeouts and disconnects of ``Guard`` (outside) apply, as do
    CORS, the API key and the rate limit. Every other request goes to the app."""

    def __init__(self, app, answer, metrics: dict):
        self.app, self.answer, self.m = app, answer, metrics

    async def __call__(self, scope, receive, send):
        if not (
            scope["type"] == "http"
            and scope.get("path") == "/v1/predict"
            and scope.get("method") == "POST"
        ):
            return await self.app(scope, receive, send)
        ctype = ""
        for k, v in scope.get("headers", []):
            if k == b"content-type":
                ctype = v.decode("latin-1")
        qs = scope.get("query_string", b"").decode("latin-1")
        query = dict(parse_qsl(qs, keep_blank_values=True))
        chunks, more = [], True
        while more:  # Guard's receive: size limit, read timeout, client gone
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        try:
            out = await self.answer(b"".join(chunks), ctype, query, receive)
        except ClientGone:
            raise
        except Exception as e:  # noqa: BLE001 - as the app's handlers: one shape, counted
            if not isinstance(e, CnnlabError):  # a model failure: a 500, the server lives on
                log.exception("predict failed")
            status, msg, _ = error_reply(e, "/v1/predict", self.m)
            return await send_error(send, status, msg, reply_headers(e))
        body = json.dumps(out, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        body = body.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _metrics():
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    reg = CollectorRegistry()
    return {
        "registry": reg,
        "requests": Counter(
            "cnnlab_requests",
            "HTTP requests by status (499: client hung up)",
            ["endpoint", "status"],
            registry=reg,
        ),
        "latency": Histogram(
            "cnnlab_request_latency_seconds",
            "request latency",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=reg,
        ),
        "batch": Histogram(
            "cnnlab_batch_size",
            "images per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=reg,
        ),
        "images": Counter("cnnlab_images", "images classified", registry=reg),
        "errors": Counter(
            "cnnlab_errors", "requests answered with an error", ["endpoint", "kind"], registry=reg
        ),
        "pending": Gauge(
            "cnnlab_decode_pending",
            "requests waiting for or in the decode pool (at --max-pending: 503)",
            registry=reg,
        ),
        "abandoned": Counter(
            "cnnlab_abandoned_decodes",
            "requests dropped from the decode queue because their client hung up",
            registry=reg,
        ),
        "disconnects": Counter(
            "cnnlab_client_disconnects",
            "requests whose client hung up before sending its body (not errors)",
            ["endpoint"],
            registry=reg,
        ),
    }


def docs_assets() -> Path | None:
    """Swagger UI's files from the fastapi-offline package (no CDN), if it is installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    p = Path(fastapi_offline.__file__).with_name("static")
    return p if (p / "swagger-ui-bundle.js").is_file() else None


def create_app(backend: Backend, config: ServeConfig | None = None, fast_predict: bool = True):
    """The server's ASGI app; ``fast_predict=False`` leaves ``POST /v1/predict`` to its
    documented route alone (the fast path's parity test)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.exceptions import HTTPException

    from cnnlab.analysis.ood import ood_flags
    from cnnlab.deploy import schema as sc
    from cnnlab.deploy.security import BearerAuth, RateLimit

    cfg = (config or ServeConfig()).check()
    limits = cfg.limits()
    md = backend.meta
    classes = md["classes"]
    c, s, graph_inverts = served_input(md)
    mean = md["normalization"]["mean"]
    ood = usable_ood(md.get("ood"))
    m = _metrics()
    batcher = MicroBatcher(
        lambda x: backend.predict(np.ascontiguousarray(x, np.float32)),
        cfg.max_batch,
        cfg.max_wait_ms,
        on_batch=lambda n: m["batch"].observe(n),
    )
    decode_pool = ThreadPoolExecutor(cfg.decode_workers, thread_name_prefix="cnnlab-decode")
    app = FastAPI(
        title="cnnlab inference",
        version=md.get("cnnlab_version") or "?",
        description=f"{md['model'].get('name', 'model')} on {md.get('dataset')}: "
        f"{len(classes)} classes, input {c}×{s}×{s}. Every error answers "
        '`{"error": "..."}`.',
        docs_url=None,
        redoc_url=None,
    )
    app.state.backend, app.state.config, app.state.batcher = backend, cfg, batcher
    app.state.decode_pool = decode_pool

    @app.exception_handler(CnnlabError)
    async def _user_error(request, exc: CnnlabError):
        status, msg, _ = error_reply(exc, request.url.path, m)
        headers = {k.decode(): v.decode() for k, v in reply_headers(exc)} or None
        return JSONResponse({"error": msg}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):  # 404, 405: the same error shape
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, 422)

    @app.exception_handler(Exception)
    async def _server_error(request, exc: Exception):
        status, msg, _ = error_reply(exc, request.url.path, m)
        return JSONResponse({"error": msg}, status_code=status)

    def decode(body: bytes, ctype: str, query: dict):
        p = parse_request(body, ctype, query, limits, c, s)
        x, flags = to_batch(p.images, mean, "never" if graph_inverts else p.invert)
        return x, flags, min(p.top_k or cfg.top_k, len(classes))

    pending = {"n": 0}  # requests waiting for or in the decode pool

    async def decoded(body: bytes, ctype: str, query: dict, receive=None):
        """The body parsed, decoded and batched in the decode pool (one hop off the loop)
        → float pixels (B, C, S, S), inversion flags, top-k. At most ``max_pending``
        requests wait for the pool (then 503 + Retry-After); with ``receive``, a client
        that hangs up while its request waits is dropped from the queue (ClientGone)."""
        if pending["n"] >= cfg.max_pending:
            raise InputError(
                f"server busy: {pending['n']} requests waiting to be decoded (--max-pending); "
                "retry in 1 s",
                503,
                retry_after=1,
            )
        pending["n"] += 1
        m["pending"].set(pending["n"])
        try:
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(decode_pool, decode, body, ctype, query)
            del body  # the pool holds it; a dropped request frees it
            if receive is None:
                return await work
            gone = asyncio.ensure_future(receive())  # returns only if the client hangs up
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                gone.cancel()
                return work.result()
            if gone.exception() is None:  # not a hang-up after all
                return await work
            work.cancel()  # not started: never decoded; started: its result is dropped
            m["abandoned"].inc()
            raise gone.exception()  # ClientGone
        finally:
            pending["n"] -= 1
            m["pending"].set(pending["n"])

    async def parts(request: Request) -> tuple[bytes, str, dict]:
        query = dict(request.query_params.items())  # unknown names: 400 (check_query)
        return await request.body(), request.headers.get("content-type", ""), query

    async def answer(body: bytes, ctype: str, query: dict, receive=None) -> dict:
        """A /v1/predict answer: decoded, classified in the micro-batcher, described."""
        x, flags, k = await decoded(body, ctype, query, receive)
        logits = await batcher.submit(x)
        m["images"].inc(len(x))
        return {"predictions": describe(logits, k, flags), "backend": backend.name}

    def describe(logits: np.ndarray, k: int, flags: list[bool]) -> list[dict]:
        z = logits - logits.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        scores = None
        if ood:
            sc_, fl = ood_flags(np.asarray(logits), ood)
            scores = list(zip(sc_.tolist(), fl.tolist(), strict=True))
        out = []
        # whole-batch numpy, then plain Python: per-row numpy calls cost more than the model
        tops = np.argsort(-p, axis=1)[:, :k].tolist()
        for i, (pi, top) in enumerate(zip(p.tolist(), tops, strict=True)):
            r = {
                "class": classes[top[0]],
                "index": top[0],
                "probability": pi[top[0]],
                "top": [{"class": classes[j], "probability": pi[j]} for j in top],
                "inverted": flags[i],
            }
            if scores is not None:
                r["ood"] = {
                    "method": ood["method"],
                    "score": float(scores[i][0]),
                    "threshold": float(ood["threshold"]),
                    "flag": bool(scores[i][1]),
                }
            out.append(r)
        return out

    body_doc = {"requestBody": sc.predict_body(cfg.max_images), "parameters": sc.QUERY_OPTIONS}
    input_errors = sc.error_responses(400, 408, 413, 415)

    @app.post(
        "/v1/predict",
        summary="classify one or more images",
        response_model=sc.PredictResponse,
        responses=input_errors,
        openapi_extra=body_doc,
    )
    async def predict(request: Request):
        """Send images as multipart files (any field name), a raw ``image/*`` body, or JSON
        ``{"images": [base64...], "pixels": [[[0-255...]]], "top_k": 3, "invert": "auto"}``.
        Images are decoded, converted to the model's channels and resized to its input."""
        # (served by FastPredict ahead of the framework; this route documents it and answers
        # the same way where the fast path is not in front, e.g. in the app without Guard)
        # served by FastPredict ahead of the framework; this route documents it (and answers
        # the same way where nothing is in front of it)
        return JSONResponse(await answer(*await parts(request)))

    @app.post(
        "/v1/saliency",
        summary="prediction and saliency map for one image",
        response_model=sc.SaliencyResponse,
        responses={**input_errors, **sc.error_responses(501)},
        openapi_extra=body_doc,
        include_in_schema=backend.saliency_available,
    )
    async def saliency(request: Request):
        """Gradient of the top logit with respect to the input pixels (torch backend only)."""
        if not backend.saliency_available:
            backend.saliency(None, 0)  # raises the 501 explaining why
        x, flags, k = await decoded(*await parts(request))
        if len(x) != 1:
            raise InputError(f"saliency takes exactly one image, got {len(x)}")
        logits = await batcher.submit(x)
        pred = describe(logits, k, flags)[0]
        sal = await batcher.run_alone(backend.saliency, x, pred["index"])
        sal = sal / max(float(sal.max()), 1e-12)
        return JSONResponse(
            {
                "prediction": pred,
                "saliency": np.round(sal, 4).tolist(),
                "size": s,
                "method": "saliency |d logit / d pixels| (Captum)",
            }
        )

    model_info = {
        **{k: md.get(k) for k in ("classes", "input", "normalization", "model", "dataset")},
        **{k: md.get(k) for k in ("source_run", "epoch", "test_acc", "cnnlab_version")},
        "backend": backend.name,
        "ood": ood,
        "saliency": backend.saliency_available,
        "serving": {
            "max_batch": cfg.max_batch,
            "max_wait_ms": cfg.max_wait_ms,
            "max_images": cfg.max_images,
            "max_pixels": cfg.max_pixels,
            "max_request_pixels": cfg.max_request_pixels,
            "max_json_values": cfg.max_json_values,
            "max_body_bytes": int(cfg.max_body_mb * 2**20),
            "read_timeout_s": cfg.read_timeout_s,
            "header_timeout_s": cfg.header_timeout_s,
            "max_header_bytes": cfg.max_header_kb * 1024,
            "max_pending": cfg.max_pending,
            "decode_budget_s": cfg.decode_budget_s,
            "decoded_to": [c, s, s],  # what images become before the model, any export kind
            "rate_limit": cfg.rate_limit,
        },
    }

    @app.get("/v1/model", summary="model metadata", response_model=sc.ModelInfo)
    async def get_model_info():
        return JSONResponse(model_info)

    @app.get(
        "/healthz",
        summary="liveness: the model answers",
        response_model=sc.Health,
        responses=sc.error_responses(503),
    )
    async def healthz():
        x = np.zeros((1, c, s, s), np.float32)
        logits = await batcher.submit(x)
        ok = bool(np.isfinite(logits).all())
        return JSONResponse(
            {"status": "ok" if ok else "model output not finite"}, 200 if ok else 503
        )

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses=sc.PROMETHEUS,
    )
    async def metrics():
        return Response(generate_latest(m["registry"]), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")

    assets = docs_assets()

    @app.get("/docs", include_in_schema=False)
    async def docs():
        if assets is None:
            raise InputError(
                "Swagger UI needs the fastapi-offline package; /openapi.json works", 404
            )
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="cnnlab inference — API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )

    def openapi():
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            if cfg.api_key:
                spec.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
                for path, ops in spec["paths"].items():
                    if path == "/healthz" or (path == "/metrics" and cfg.public_metrics):
                        continue
                    for op in ops.values():
                        op["security"] = [{"bearer": []}]
                        op["responses"]["401"] = {
                            "description": "missing or wrong API key",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ErrorBody"}
                                }
                            },
                        }
            if cfg.rate_limit:
                for path, ops in spec["paths"].items():
                    if path.startswith("/v1/"):
                        for op in ops.values():
                            op["responses"]["429"] = {
                                "description": "rate limit exceeded (see Retry-After)",
                                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                                "content": {
                                    "application/json": {
                                        "schema": {"$ref": "#/components/schemas/ErrorBody"}
                                    }
                                },
                            }
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi
    if isinstance(backend, TorchBackend):  # the explore page needs the run's own weights
        from cnnlab.deploy.explore import add_explore_routes

        add_explore_routes(app, backend.run, backend.which, batcher.run_alone)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if assets is not None:
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
    # the last added runs first: Guard → CORS → auth → rate limit → fast predict → the app
    if fast_predict:
        app.add_middleware(FastPredict, answer=answer, metrics=m)
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


def usable_ood(ood: dict | None) -> dict | None:
    """The stored OOD detector if its numbers are finite; a NaN or infinite threshold (a
    hand-edited ood.json) is dropped with a warning instead of breaking every answer."""
    if not ood:
        return None
    try:
        ok = math.isfinite(float(ood["threshold"])) and math.isfinite(
            float(ood.get("temperature", 1.0))
        )
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        log.warning("ignoring the OOD detector: its threshold is not a finite number")
        return None
    return ood


def json_cors():
    """Starlette's CORS middleware with its refusals in the server's error shape."""
    from fastapi.responses import JSONResponse
    from starlette.middleware.cors import CORSMiddleware

    class JsonCORS(CORSMiddleware):
        def preflight_response(self, request_headers):
            r = super().preflight_response(request_headers)
            if r.status_code < 400:
                return r
            headers = {k: v for k, v in r.headers.items() if k.startswith("access-control")}
            return JSONResponse(
                {"error": r.body.decode("utf-8", "replace")}, r.status_code, headers=headers
            )

    return JsonCORS


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
        + (", explore the model: /explore)" if isinstance(be, TorchBackend) else ")"),
        flush=True,
    )
    uvicorn.Server(uvicorn_config(app, cfg, host, port, log_level)).run()
