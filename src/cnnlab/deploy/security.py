"""Who may use the server: bearer-token auth and a per-client rate limit (pure ASGI).

Both answer with the server's one error shape ``{"error": ...}``. The token is compared in
constant time (:func:`hmac.compare_digest`); ``/healthz`` stays open so that probes work
without secrets, ``/metrics`` is open only when told (``--public-metrics``). The rate
limit is a token bucket per client address: ``rate`` requests per second on average,
bursts of ``burst``, and a 429 with ``Retry-After`` (whole seconds) beyond that.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import time

OPEN_PATHS = ("/healthz", "/favicon.ico")
DOC_PATHS = ("/", "/explore", "/docs", "/openapi.json")
DOC_PREFIXES = ("/static/", "/docs-assets/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def send_error(send, status: int, msg: str, headers: list | None = None) -> None:
    body = json.dumps({"error": msg}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """``Authorization: Bearer <key>`` on every path but the open ones (and the docs and web
    page, which hold no data: the page's own requests carry the key the user types)."""

    def __init__(self, app, api_key: str, public_metrics: bool = False):
        self.app, self.key = app, api_key.encode()
        self.open = OPEN_PATHS + (("/metrics",) if public_metrics else ())

    def allowed(self, scope) -> bool:
        path = scope.get("path", "")
        if scope.get("method") == "OPTIONS":  # CORS preflight carries no credentials
            return True
        if path in self.open or path in DOC_PATHS or path.startswith(DOC_PREFIXES):
            return True
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                scheme, _, token = v.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.allowed(scope):
            return await self.app(scope, receive, send)
        await send_error(
            send,
            401,
            "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
            [(b"www-authenticate", b'Bearer realm="cnnlab"')],
        )


class RateLimit:
    """Token bucket per client address on the ``/v1/`` endpoints."""

    def __init__(self, app, rate: float, burst: float | None = None, max_clients: int = 10000):
        self.app, self.rate = app, float(rate)
        self.burst = float(burst or max(1.0, 2 * rate))
        self.max_clients = max_clients
        self.buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, last time)

    def take(self, client: str, now: float | None = None) -> float:
        """0 when the request may go, else the seconds until it could."""
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            if len(self.buckets) >= self.max_clients and client not in self.buckets:
                self.buckets.clear()  # a flood of addresses: forget them all (memory bound)
            self.buckets[client] = (tokens - 1, now)
            return 0.0
        self.buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").startswith("/v1/"):
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("?", 0))[0]
        wait = self.take(client)
        if not wait:
            return await self.app(scope, receive, send)
        retry = max(1, math.ceil(wait))
        await send_error(
            send,
            429,
            f"rate limit of {self.rate:g} requests/s per client exceeded; retry in {retry} s",
            [(b"retry-after", str(retry).encode())],
        )
