"""What stands around every request, as pure ASGI: :class:`Guard` (the body's size limit
on Content-Length and while streaming, the read timeout, client hang-ups, latency and
status metrics), :class:`FastPredict` (``POST /v1/predict`` answered ahead of the
framework), CORS, and the framework's errors in the server's one error shape
``{"error": ...}``: a user's mistake a 4xx, anything else a 500, the server lives on."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import parse_qsl

from cnnlab.deploy.bodies import InputError, short
from cnnlab.deploy.security import send_error
from cnnlab.errors import CnnlabError

ENDPOINTS = ("/v1/predict", "/v1/saliency", "/v1/model", "/healthz", "/metrics", "/")
log = logging.getLogger("cnnlab.serve")


class ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


class BodyReader:
    """One request's ``receive``, counted: the body must stay within ``guard.max_bytes`` and
    the bodies of all requests in progress within ``guard.max_inflight`` (``seen`` bytes of
    it are this request's), and arrive within the read timeout; a hang-up is ClientGone."""

    def __init__(self, receive, guard: Guard):
        self.inner, self.guard = receive, guard
        self.seen, self.done = 0, False
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + guard.read_timeout

    async def receive(self):
        if self.done:  # the body is in; what follows is a wait for the disconnect
            msg = await self.inner()
            if msg["type"] == "http.disconnect":
                raise ClientGone
            return msg
        try:
            left = max(0.0, self.deadline - self.loop.time())
            msg = await asyncio.wait_for(self.inner(), left)
        except asyncio.TimeoutError:  # not the builtin before 3.11
            raise InputError(
                f"request body not received within {self.guard.read_timeout:g} s (--read-timeout)",
                408,
            ) from None
        if msg["type"] == "http.disconnect":
            raise ClientGone
        if msg["type"] == "http.request":
            self.count(len(msg.get("body", b"")))
            self.done = not msg.get("more_body", False)
        return msg

    def count(self, n: int) -> None:
        g = self.guard
        self.seen += n
        g.inflight += n
        if self.seen > g.max_bytes:
            raise InputError(
                f"request body exceeds the limit of {g.max_bytes} bytes (--max-body-mb)", 413
            )
        if g.inflight > g.max_inflight:
            raise InputError(
                "server busy: too many request bodies in memory (--max-inflight-mb); retry shortly",
                503,
                retry_after=1,
            )


def check_content_length(scope, limit: int) -> None:
    """A declared body over ``limit`` is refused before a byte of it is read."""
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

        body = BodyReader(receive, self)
        try:
            check_content_length(scope, self.max_bytes)
            await self.app(scope, body.receive, _send)
        except ClientGone:
            status["code"] = 499  # nginx's "client closed request": not a server error
            self.m["disconnects"].labels(endpoint).inc()
            client = (scope.get("client") or ("?", 0))[0]
            log.info(
                "client %s hung up during %s %s after %d bytes",
                client,
                scope["method"],
                short(path),
                body.seen,
            )
        except InputError as e:
            if status["started"]:
                raise
            await send_error(send, e.status, str(e), reply_headers(e))
            status["code"] = e.status
            self.m["errors"].labels(endpoint, type(e).__name__).inc()
        finally:
            self.inflight -= body.seen
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


def add_error_handlers(app, metrics: dict) -> None:
    """The framework's errors in the server's one shape ``{"error": ...}``, counted."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(CnnlabError)
    async def _user_error(request, exc: CnnlabError):
        status, msg, _ = error_reply(exc, request.url.path, metrics)
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
        status, msg, _ = error_reply(exc, request.url.path, metrics)
        return JSONResponse({"error": msg}, status_code=status)
