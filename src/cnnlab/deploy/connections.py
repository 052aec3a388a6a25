"""Connections before they are requests: the limits uvicorn leaves open, on its httptools
protocol.

uvicorn times out an idle keep-alive connection, but not a new one that never finishes its
headers, and its httptools parser buffers headers of any size. One client could therefore
hold thousands of half-open connections (slowloris) until the process runs out of file
descriptors, or send a 64 MiB header. :func:`guarded_protocol` adds:

- a header-read timeout, from the connection's first byte (or the end of its previous
  response) to the end of the request's headers: 408 and close;
- a header size limit: 431 and close, counted while the headers arrive;
- a connection budget: at the limit, a new connection evicts the oldest one still waiting
  for its headers (a slowloris connection, or an idle keep-alive one), so half-open
  connections cannot lock real clients out; only when every connection is busy with a
  request is the new one answered 503;
- malformed HTTP answered in the server's one error shape, ``{"error": ...}``.

:func:`fd_budget` raises the soft file-descriptor limit to the hard one and keeps the
connection budget below it, leaving room for the model, the log and the decode threads.
"""

from __future__ import annotations

import json
import logging
import resource
from collections import OrderedDict

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("cnnlab.serve")
FD_RESERVE = 64  # descriptors kept for everything but client connections

REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def error_bytes(status: int, msg: str, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 error response in the server's shape, closing the connection."""
    body = json.dumps({"error": msg}).encode()
    head = [
        b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error")),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    if retry_after is not None:
        head.append(b"retry-after: %d" % retry_after)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def fd_budget(max_connections: int) -> int:
    """The connections this process can hold: the soft descriptor limit raised to the hard
    one (as far as the OS allows), less :data:`FD_RESERVE`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return max(1, min(max_connections, soft - FD_RESERVE))


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above. Its limits and its queue of
    connections waiting for headers belong to one server: :func:`guarded_protocol` makes
    the subclass that holds them."""

    limits: dict = {}  # header_timeout_s, max_header_bytes, max_connections
    waiting: OrderedDict  # connections in their header phase, oldest first

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._timer = None
        self._header_bytes = 0
        if len(self.connections) > self.limits["max_connections"]:
            victim = next(iter(self.waiting), None)
            if victim is None:  # every connection is busy with a request
                self._reply(503, "server at its connection limit; retry shortly", 1)
                return
            victim._close_quietly()
        self._arm()

    def _arm(self) -> None:
        self.waiting[self] = None
        self.waiting.move_to_end(self)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.limits["header_timeout_s"], self._header_timeout)

    def _disarm(self) -> None:
        self.waiting.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_quietly(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    def _reply(self, status: int, msg: str, retry_after: int | None = None) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(error_bytes(status, msg, retry_after))
            self.transport.close()

    def _header_timeout(self) -> None:
        self._timer = None
        if self._header_bytes:  # a request started and stalled: say so
            s = self.limits["header_timeout_s"]
            self._reply(408, f"request headers not received within {s:g} s")
        else:  # an idle connection: close it as the keep-alive timeout does
            self._close_quietly()

    def data_received(self, data: bytes) -> None:
        in_headers = self in self.waiting
        super().data_received(data)
        if in_headers and self in self.waiting and not self.transport.is_closing():
            self._header_bytes += len(data)
            limit = self.limits["max_header_bytes"]
            if self._header_bytes > limit:
                self._reply(431, f"request headers exceed the limit of {limit} bytes")

    def on_headers_complete(self) -> None:
        self._disarm()
        self._header_bytes = 0
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline and self.cycle.keep_alive:
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._reply(400, "malformed HTTP request")


def guarded_protocol(header_timeout_s: float, max_header_bytes: int, max_connections: int):
    """A :class:`GuardedProtocol` class with these limits (one class per server: it holds
    the server's queue of connections waiting for headers)."""

    class ServerProtocol(GuardedProtocol):
        limits = {
            "header_timeout_s": header_timeout_s,
            "max_header_bytes": max_header_bytes,
            "max_connections": max_connections,
        }
        waiting = OrderedDict()

    return ServerProtocol
