"""The inference server: FastAPI app with dynamic micro-batching, metrics and hard input limits.

Endpoints: ``POST /v1/predict`` (multipart images, a raw image body, or JSON with base64
images / pixel arrays) → top-k + OOD score/flag; ``POST /v1/saliency`` (torch backend);
``GET /v1/model``; ``GET /healthz``; ``GET /metrics`` (Prometheus); ``/docs``; ``/`` (web page).

Every model call goes through one worker thread fed by :class:`MicroBatcher`: requests that
arrive within ``max_wait_ms`` of each other are concatenated into one forward pass of at most
``max_batch`` images. One worker keeps torch/ORT threads from fighting over the cores.

Bad input raises :class:`InputError` (a CnnlabError with an HTTP status) and becomes a 4xx
JSON ``{"error": ...}``; the body size is enforced on Content-Length and while streaming.
Weights come only from safetensors checkpoints or ONNX files (nothing is unpickled).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from cnnlab.analysis.ood import ood_flags
from cnnlab.data.images import load_image, maybe_invert, pil_to_input
from cnnlab.deploy.export import (
    example_pixels,
    export_metadata,
    onnx_bytes,
    ort_session,
    pixel_model,
    session_metadata,
)
from cnnlab.errors import CnnlabError, choices_msg

STATIC = Path(__file__).with_name("static")
ENDPOINTS = ("/v1/predict", "/v1/saliency", "/v1/model", "/healthz", "/metrics", "/")


class InputError(CnnlabError):
    """A bad request: ``status`` is the HTTP code it is answered with."""

    def __init__(self, msg: str, status: int = 400):
        super().__init__(msg)
        self.status = status


@dataclass
class ServeConfig:
    max_batch: int = 64  # images per forward pass; 1 disables micro-batching
    max_wait_ms: float = 2.0  # how long the first request of a batch waits for company
    max_body_mb: float = 8.0
    max_images: int = 64  # per request
    max_pixels: int = 4_000_000  # per image, checked from the header before decoding
    top_k: int = 3
    threads: int = 0  # torch / ORT intra-op threads (0 = library default)

    def check(self) -> ServeConfig:
        for k in ("max_batch", "max_images", "max_pixels", "top_k"):
            if int(getattr(self, k)) < 1:
                raise CnnlabError(f"--{k.replace('_', '-')} must be ≥ 1")
        if self.max_wait_ms < 0 or self.max_body_mb <= 0:
            raise CnnlabError("--max-wait-ms must be ≥ 0 and --max-body-mb > 0")
        return self


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

    def __init__(self, run, which: str = "best"):
        self.model, meta = pixel_model(run, which)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.meta = export_metadata(meta, run, "torch", "eager")
        import captum.attr  # noqa: F401  (slow first import: pay it at start, not on a request)

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).float().numpy()

    def saliency(self, x: np.ndarray, target: int) -> np.ndarray:
        """|∂ logit_target / ∂ pixels| (Simonyan et al. 2014) via Captum, max over channels."""
        from captum.attr import Saliency

        xt = torch.from_numpy(x).requires_grad_(True)
        grad = Saliency(self.model).attribute(xt, target=int(target), abs=True)  # (1, C, S, S)
        return grad.amax(1)[0].numpy()


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, src, meta: dict | None = None, threads: int = 0):
        self.sess = ort_session(src, threads)
        self.input = self.sess.get_inputs()[0].name
        self.meta = session_metadata(self.sess, src) if meta is None else meta

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {self.input: x})[0]


def open_backend(target, backend: str = "auto", threads: int = 0, which: str = "best") -> Backend:
    """A run directory / checkpoint (torch or ONNX backend) or an exported ``.onnx`` file."""
    if backend not in ("auto", "torch", "onnx"):
        raise CnnlabError(choices_msg("backend", backend, ("auto", "torch", "onnx")))
    if threads:
        torch.set_num_threads(threads)
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


# --------------------------------------------------------------------------- decoding


def decode_bytes(data: bytes, channels: int, size: int, max_pixels: int, name: str) -> np.ndarray:
    if not data:
        raise InputError(f"{name}: empty image")
    try:
        return load_image(io.BytesIO(data), channels, size, max_pixels=max_pixels, name=name)
    except InputError:
        raise
    except CnnlabError as e:  # load_image's size refusals say "limit" / "too large"
        msg = str(e)
        raise InputError(msg, 413 if "limit" in msg or "too large" in msg else 400) from None


def decode_pixels(obj, channels: int, size: int, max_pixels: int, name: str) -> np.ndarray:
    """A nested list (H, W) or (C, H, W) of numbers 0–255 → uint8 (C, size, size)."""
    if not isinstance(obj, list) or not obj:
        raise InputError(f"{name}: pixels must be a non-empty nested list (H, W) or (C, H, W)")
    try:
        a = np.asarray(obj, dtype=np.float32)
    except (ValueError, TypeError):
        raise InputError(f"{name}: pixels must be a rectangular array of numbers") from None
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3) or min(a.shape) < 1:
        raise InputError(
            f"{name}: pixels must have shape (H, W) or (C, H, W) with C 1 or 3, got {a.shape}"
        )
    if a.shape[1] * a.shape[2] > max_pixels:
        raise InputError(
            f"{name}: {a.shape[1]}×{a.shape[2]} pixels exceed the limit {max_pixels}", 413
        )
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
        raise InputError(f"{name}: pixel values must be finite numbers in [0, 255]")
    u8 = np.rint(a).astype(np.uint8)
    if u8.shape[0] == channels and u8.shape[1:] == (size, size):
        return u8
    im = Image.fromarray(u8[0] if u8.shape[0] == 1 else u8.transpose(1, 2, 0))
    return pil_to_input(im, channels, size)


def decode_b64(s, channels: int, size: int, max_pixels: int, name: str) -> np.ndarray:
    if not isinstance(s, str):
        raise InputError(f"{name}: expected a base64 string")
    if s.startswith("data:"):  # a data URL from a browser canvas
        s = s.partition(",")[2]
    try:
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{name}: not valid base64") from None
    return decode_bytes(data, channels, size, max_pixels, name)


def parse_multipart(body: bytes, content_type: str, max_files: int):
    """multipart/form-data already in memory (the body limit bounds it) → ([(filename, bytes)],
    {field: str}). python-multipart's parser with in-memory callbacks: a third of the cost of
    Starlette's form() (no spooled temp file per part), which matters on the hot path."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise InputError("multipart body without a boundary in its Content-Type")
    if not body:
        raise InputError("empty multipart body")
    files: list[tuple[str, bytes]] = []
    fields: dict[str, str] = {}
    part: dict = {}
    name, value, data = [], [], []

    def on_part_begin():
        part.clear()
        data.clear()

    def on_header_end():
        part[b"".join(name).lower()] = b"".join(value)
        name.clear()
        value.clear()

    def on_part_end():
        disp = parse_options_header(part.get(b"content-disposition", b""))[1]
        key = disp.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disp:
            if len(files) >= max_files:
                raise InputError(f"more than {max_files} images in one request (--max-images)", 413)
            files.append((disp[b"filename"].decode("utf-8", "replace") or key, b"".join(data)))
        elif len(fields) < 16:
            fields[key] = b"".join(data)[:256].decode("utf-8", "replace")

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": lambda d, a, b: name.append(d[a:b]),
        "on_header_value": lambda d, a, b: value.append(d[a:b]),
        "on_header_end": on_header_end,
        "on_part_data": lambda d, a, b: data.append(d[a:b]),
        "on_part_end": on_part_end,
    }
    try:
        p = MultipartParser(boundary, callbacks)
        p.write(body)
        p.finalize()
    except MultipartParseError as e:
        raise InputError(f"bad multipart body ({str(e)[:100]})") from None
    return files, fields


# --------------------------------------------------------------------------- the app


class _BodyTooLarge(InputError):
    pass


class Guard:
    """Pure-ASGI middleware: body size limit (header and stream), latency and status metrics."""

    def __init__(self, app, max_bytes: int, metrics: dict):
        self.app, self.max_bytes, self.m = app, max_bytes, metrics

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
        try:
            for k, v in scope.get("headers", []):
                if k == b"content-length":
                    try:
                        cl = int(v)
                    except ValueError:
                        raise InputError("invalid Content-Length header") from None
                    if cl > limit:
                        raise _BodyTooLarge(
                            f"request body of {cl} bytes exceeds the limit of {limit} bytes "
                            "(--max-body-mb)",
                            413,
                        )
            seen = 0

            async def _receive():
                nonlocal seen
                msg = await receive()
                if msg["type"] == "http.request":
                    seen += len(msg.get("body", b""))
                    if seen > limit:
                        raise _BodyTooLarge(
                            f"request body exceeds the limit of {limit} bytes (--max-body-mb)",
                            413,
                        )
                return msg

            await self.app(scope, _receive, _send)
        except InputError as e:
            if status["started"]:
                raise
            await _json_response(send, e.status, {"error": str(e)})
            status["code"] = e.status
            self.m["errors"].labels(endpoint, type(e).__name__).inc()
        finally:
            self.m["requests"].labels(endpoint, str(status["code"])).inc()
            self.m["latency"].labels(endpoint).observe(time.perf_counter() - t0)


async def _json_response(send, status: int, obj: dict) -> None:
    body = json.dumps(obj).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _metrics():
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reg = CollectorRegistry()
    return {
        "registry": reg,
        "requests": Counter(
            "cnnlab_requests", "HTTP requests", ["endpoint", "status"], registry=reg
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
    }


def create_app(backend: Backend, config: ServeConfig | None = None):
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    cfg = (config or ServeConfig()).check()
    md = backend.meta
    classes = md["classes"]
    c, s = md["input"]["shape"][1], md["input"]["shape"][2]
    mean = md["normalization"]["mean"]
    ood = md.get("ood")
    m = _metrics()
    batcher = MicroBatcher(
        lambda x: backend.predict(np.ascontiguousarray(x, np.float32)),
        cfg.max_batch,
        cfg.max_wait_ms,
        on_batch=lambda n: m["batch"].observe(n),
    )
    app = FastAPI(
        title="cnnlab inference",
        version=md.get("cnnlab_version", "?"),
        description=f"{md['model'].get('name', 'model')} on {md.get('dataset')}: "
        f"{len(classes)} classes, input {c}×{s}×{s}",
    )
    app.state.backend, app.state.config, app.state.batcher = backend, cfg, batcher

    @app.exception_handler(CnnlabError)
    async def _user_error(request, exc: CnnlabError):
        status = getattr(exc, "status", 400)
        path = request.url.path
        m["errors"].labels(path if path in ENDPOINTS else "other", type(exc).__name__).inc()
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(Exception)
    async def _server_error(request, exc: Exception):
        m["errors"].labels("other", type(exc).__name__).inc()
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); the server keeps running"},
            status_code=500,
        )

    async def read_images(request: Request) -> tuple[list[np.ndarray], dict]:
        """Every accepted way of sending images → list of uint8 (C, S, S), options."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        opts = dict(request.query_params)
        raw: list[tuple[str, bytes]] = []
        decoded: list[np.ndarray] = []
        if ctype == "multipart/form-data":
            files, fields = parse_multipart(
                await request.body(), request.headers["content-type"], cfg.max_images
            )
            raw.extend(files)
            for k, v in fields.items():
                opts.setdefault(k, v)
        elif ctype in ("application/json", ""):
            body = await request.body()
            if not body:
                raise InputError(
                    "empty request body; send images as multipart files, a raw image or JSON "
                    '{"images": [base64, ...]} / {"pixels": [[[...]]]}'
                )
            if ctype == "" and body.lstrip()[:1] not in (b"{", b"["):
                raw.append(("body", body))
            else:
                try:
                    obj = json.loads(body)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise InputError("body is not valid JSON") from None
                if not isinstance(obj, dict) or not ({"images", "pixels"} & obj.keys()):
                    raise InputError(
                        'JSON must be an object with "images" (list of base64 PNG/JPEG) '
                        'or "pixels" (list of (H, W) or (C, H, W) arrays, 0–255)'
                    )
                for key in ("images", "pixels"):
                    if key in obj and not isinstance(obj[key], list):
                        raise InputError(f'"{key}" must be a list')
                n = len(obj.get("images", [])) + len(obj.get("pixels", []))
                _check_count(n, cfg.max_images)
                for k in ("top_k", "invert"):
                    if k in obj:
                        opts[k] = obj[k]
                for i, im in enumerate(obj.get("images", [])):
                    decoded.append(decode_b64(im, c, s, cfg.max_pixels, f"images[{i}]"))
                for i, px in enumerate(obj.get("pixels", [])):
                    decoded.append(decode_pixels(px, c, s, cfg.max_pixels, f"pixels[{i}]"))
        elif ctype.startswith("image/") or ctype == "application/octet-stream":
            raw.append(("body", await request.body()))
        else:
            raise InputError(
                f"unsupported content type {ctype!r}; use multipart/form-data, "
                "application/json or image/*",
                415,
            )
        _check_count(len(raw) + len(decoded), cfg.max_images)
        big = sum(len(b) for _, b in raw) > 256_000
        for name, data in raw:
            if big:  # large images decode off the event loop
                decoded.append(
                    await run_in_threadpool(decode_bytes, data, c, s, cfg.max_pixels, name)
                )
            else:
                decoded.append(decode_bytes(data, c, s, cfg.max_pixels, name))
        return decoded, opts

    def options(opts: dict) -> tuple[int, str]:
        try:
            k = int(opts.get("top_k", cfg.top_k))
        except (TypeError, ValueError):
            raise InputError("top_k must be an integer") from None
        if k < 1:
            raise InputError("top_k must be ≥ 1")
        inv = str(opts.get("invert", "auto"))
        if inv not in ("auto", "always", "never"):
            raise InputError(choices_msg("invert mode", inv, ("auto", "always", "never")))
        return min(k, len(classes)), inv

    def to_pixels(arrs: list[np.ndarray], invert: str) -> tuple[np.ndarray, list[bool]]:
        out, flags = [], []
        for a in arrs:
            a, f = maybe_invert(a, mean, invert)
            out.append(a)
            flags.append(f)
        return np.stack(out).astype(np.float32) / 255.0, flags  # (B, C, S, S) in [0, 1]

    def describe(logits: np.ndarray, k: int, flags: list[bool]) -> list[dict]:
        z = logits - logits.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        scores = None
        if ood:
            sc, fl = ood_flags(torch.from_numpy(np.ascontiguousarray(logits)), ood)
            scores = list(zip(sc.tolist(), fl.tolist(), strict=True))
        out = []
        for i, pi in enumerate(p):
            top = np.argsort(-pi)[:k]
            r = {
                "class": classes[int(top[0])],
                "index": int(top[0]),
                "probability": float(pi[top[0]]),
                "top": [{"class": classes[int(j)], "probability": float(pi[j])} for j in top],
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

    @app.post("/v1/predict", summary="classify one or more images")
    async def predict(request: Request):
        """Send images as multipart files (any field name), a raw ``image/*`` body, or JSON
        ``{"images": [base64...], "pixels": [[[0-255...]]], "top_k": 3, "invert": "auto"}``.
        Images are decoded, converted to the model's channels and resized to its input."""
        arrs, opts = await read_images(request)
        k, inv = options(opts)
        x, flags = to_pixels(arrs, inv)
        logits = await batcher.submit(x)
        m["images"].inc(len(x))
        # JSONResponse directly: skips FastAPI's generic encoder (a hot path under load)
        return JSONResponse({"predictions": describe(logits, k, flags), "backend": backend.name})

    @app.post("/v1/saliency", summary="prediction and saliency map for one image")
    async def saliency(request: Request):
        """Gradient of the top logit with respect to the input pixels (torch backend only)."""
        if not backend.saliency_available:
            backend.saliency(None, 0)  # raises the 501 explaining why
        arrs, opts = await read_images(request)
        if len(arrs) != 1:
            raise InputError(f"saliency takes exactly one image, got {len(arrs)}")
        k, inv = options(opts)
        x, flags = to_pixels(arrs, inv)
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

    @app.get("/v1/model", summary="model metadata")
    async def model_info():
        return {
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
                "max_body_bytes": int(cfg.max_body_mb * 2**20),
            },
        }

    @app.get("/healthz", summary="liveness: the model answers")
    async def healthz():
        x = np.zeros((1, c, s, s), np.float32)
        logits = await batcher.submit(x)
        ok = bool(np.isfinite(logits).all())
        return JSONResponse(
            {"status": "ok" if ok else "model output not finite"}, 200 if ok else 503
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        return Response(generate_latest(m["registry"]), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Guard, max_bytes=int(cfg.max_body_mb * 2**20), metrics=m)
    return app


def _check_count(n: int, limit: int) -> None:
    if n == 0:
        raise InputError("no image in the request")
    if n > limit:
        raise InputError(f"{n} images in one request; the limit is {limit} (--max-images)", 413)


def serve(
    target,
    backend: str = "auto",
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    log_level: str = "warning",
    which: str = "best",
) -> None:
    import uvicorn

    cfg = (config or ServeConfig()).check()
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
        f"serving {be.meta['model'].get('name')} ({be.name} backend, max batch {cfg.max_batch}, "
        f"max wait {cfg.max_wait_ms:g} ms) on http://{host}:{port}  (docs: /docs)",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
