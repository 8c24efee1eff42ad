"""A small HTTP/1.1 transport for httpx: the adapters' default way to their upstreams.

The adapters keep httpx's API (they build ``httpx.Request``s, read ``httpx.Response``s, and tests
mock them with respx at the client level); only the transport underneath is this one. It does
the least a proxy needs per request:

* plain asyncio: ``loop.create_connection`` and one :class:`~router.transport.connection.Connection`
  protocol per socket, whose callbacks parse the answer with ``httptools`` (llhttp) and wake the
  one waiting request through a future;
* one :class:`~router.transport.pool.OriginPool` per origin: at most ``max_connections``
  requests in flight per origin, idle keep-alive connections reused last in, first out;
* the response goes to httpx as soon as its head is parsed; its body
  (:class:`~router.transport.stream.ResponseStream`) yields bytes as they arrive
  (Content-Length, chunked or close-delimited), which is what the SSE relay needs;
* timeouts come from the request's ``timeout`` extension (connect, read per wait for bytes,
  write when the socket's buffer is full, pool); failures are raised as the httpx exceptions
  httpcore would raise, with messages that never contain a request header;
* an idle connection the server has closed (seen by the loop, or by one ``poll(2)`` before
  reuse) or that sat idle past ``keepalive_expiry`` is never used. If a reused connection turns
  out closed before the request could be written whole, the request is retried once on a new
  connection; an idempotent one also when it closes after the write but before any byte of an
  answer. A request fully written (a POST to an LLM API costs money) is never sent twice, and
  nothing is retried after a byte of the answer arrived.

What it does not do: HTTP/2, proxies, redirects (the adapters disable them), protocol upgrades,
or content decoding (``httpx.Response`` decodes gzip and deflate itself). A provider that needs
HTTP/2 or a proxy runs on httpx's own transport instead (:mod:`router.transport.egress`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Final

import httpx

from router.transport.connection import UNSENT, WRITE_FAILED, Connection
from router.transport.head import request_head
from router.transport.limits import ResponseLimits
from router.transport.pool import OriginPool
from router.transport.stream import ResponseStream

__all__ = ["UpstreamTransport"]

_NO_TIMEOUTS: Final[Mapping[str, float | None]] = {}
_DEFAULT_PORTS: Final = {b"http": 80, b"https": 443}
# RFC 9110 9.2.2: safe to send twice, so also retried when a reused connection drops the answer.
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class UpstreamTransport(httpx.AsyncBaseTransport):
    """An HTTP/1.1 connection-pooling transport for ``httpx.AsyncClient``.

    ``max_connections`` bounds the connections (and so the requests in flight) per origin;
    ``ssl_context`` verifies https upstreams and may carry a client certificate (default:
    ``ssl.create_default_context()``, made once, on the first https request); a connection idle
    for more than ``keepalive_expiry`` seconds is closed instead of reused (None: kept until the
    server closes it), as httpx's own transport does after 5 s, in case a middlebox dropped it.
    A response head (status line and headers) over ``max_header_bytes`` fails the request with
    :class:`~router.transport.limits.ResponseTooLarge`.
    """

    def __init__(
        self,
        max_connections: int = 256,
        ssl_context: ssl.SSLContext | None = None,
        *,
        keepalive_expiry: float | None = 5.0,
        max_header_bytes: int = ResponseLimits.max_header_bytes,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._max_header_bytes = max_header_bytes
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._pools: dict[tuple[bytes, bytes, int | None], OriginPool] = {}

    def pools(self) -> list[OriginPool]:
        """The pool of each origin this transport has talked to, until it is closed."""
        return list(self._pools.values())

    def _pool_for(self, request: httpx.Request, key: tuple[bytes, bytes, int | None]) -> OriginPool:
        scheme, host, port = key
        if scheme == b"https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            context: ssl.SSLContext | None = self._ssl_context
        elif scheme == b"http":
            context = None
        else:
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme.decode('ascii')}://'.",
                request=request,
            )
        if not host:
            raise httpx.UnsupportedProtocol("Request URL is missing a host.", request=request)
        pool = OriginPool(
            asyncio.get_running_loop(),
            host.decode("ascii"),
            port or _DEFAULT_PORTS[scheme],
            context,
            self._max_connections,
            self._keepalive_expiry,
            self._max_header_bytes,
        )
        self._pools[key] = pool
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout") or _NO_TIMEOUTS
        url = request.url
        key = (url.raw_scheme, url.raw_host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pool_for(request, key)
        if not pool.take_slot():
            await pool.acquire(request, timeouts.get("pool"))
        try:
            return await self._send(pool, request, timeouts)
        except BaseException:
            pool.release()
            raise

    async def _send(
        self, pool: OriginPool, request: httpx.Request, timeouts: Mapping[str, float | None]
    ) -> httpx.Response:
        head, chunked = request_head(request)
        try:
            body: bytes | None = request.content
        except httpx.RequestNotRead:
            body = None  # a streaming body, written as it is produced
        conn: Connection | None = pool.take_idle()
        reused = conn is not None
        while True:
            if conn is None:
                conn = await pool.connect(request, timeouts.get("connect"))
            try:
                failure, phase = await conn.exchange(request, head, body, chunked, timeouts)
            except BaseException:
                conn.abort()
                raise
            if failure is None:
                return conn.response(ResponseStream(conn, pool, request, timeouts.get("read")))
            conn.abort()
            # Retry once, on a new connection, when the reused one turned out to be closed and
            # no byte of an answer came: if the request could not be written (whole), or if it
            # was but is idempotent. A streaming body can be sent again only if untouched.
            replayable = phase == UNSENT or (
                body is not None and (phase == WRITE_FAILED or request.method in _IDEMPOTENT)
            )
            if reused and replayable and not conn.answered:
                reused = False
                conn = None
                continue
            raise failure[0](failure[1], request=request)

    async def aclose(self) -> None:
        """Close every connection of every pool (idle ones and those carrying a response)."""
        pools = list(self._pools.values())
        self._pools.clear()
        closing = [conn for pool in pools for conn in pool.close()]
        if closing:
            await asyncio.gather(*(conn.wait_closed() for conn in closing))
