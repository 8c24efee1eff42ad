"""A small, fast HTTP/1.1 transport for httpx: the adapters' way to their upstreams.

Why it exists: profiling showed httpx's default transport (httpcore on anyio) to be the proxy's
bottleneck. On one core against a local nginx, httpx managed ~450-490 POST requests/s at
concurrency 1 and ~344 at concurrency 16, where aiohttp did ~2,300 and ~6,000, while httpx's
client layer alone (over a no-op transport) costs only ~154 us a request. So the adapters keep
httpx's API (they build ``httpx.Request``s and read ``httpx.Response``s, and tests mock them with
respx at the client level) and only the transport underneath is replaced by this one. With
``httpx.AsyncClient`` on uvloop pinned to one core and nginx on the other (canned chat
completion, median of six 5 s runs), the default transport did ~1,120 POST requests/s at
concurrency 1 and ~545 at concurrency 16; this one does ~1,980 and ~2,960 (streamed SSE: ~1,130
and ~610 against ~2,180 and ~3,260), spending ~70-90 us of CPU a request, system calls included.

How it works:

* plain asyncio: ``loop.create_connection`` and an ``asyncio.Protocol`` per connection, whose
  callbacks parse the response with ``httptools`` (llhttp) and wake the one waiting request
  through a future; no task, no stream object and no lock per request;
* one pool per origin (scheme, host, port): idle keep-alive connections are reused last in,
  first out, at most ``max_connections`` are open (and in use) per origin, and a request that
  finds them all busy waits its ``pool`` timeout for one (then ``httpx.PoolTimeout``);
* the response is handed to httpx as soon as its head is parsed; its body stream yields bytes
  as they arrive (Content-Length, chunked or close-delimited), which is what the SSE relay needs.
  Closing a response before its body is complete closes the connection at once (that is how the
  proxy cancels an upstream stream when its own client goes away); a complete one goes back to
  its pool;
* timeouts come from the request's ``timeout`` extension (connect, read per wait for bytes,
  write when the socket's buffer is full, pool), failures are raised as the httpx exceptions
  httpcore would raise, with messages that never contain a request header;
* an idle connection the server has closed (seen by the loop, or by one ``poll(2)`` before
  reuse) or that sat idle past ``keepalive_expiry`` is never used. If a reused connection turns
  out closed before the request could be written whole, the request is retried once on a new
  connection; an idempotent one also when it closes after the write but before any byte of an
  answer. A request fully written (a POST to an LLM API costs money) is never sent twice, and
  nothing is retried after a byte of the answer arrived.

What it does not do: HTTP/2, proxies (nor ``HTTP_PROXY``-style environment variables),
redirects (httpx's client handles those when enabled; the adapters disable them), protocol
upgrades, or content decoding (``httpx.Response`` decodes gzip and deflate itself).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import Mapping

import httpx

__all__ = ["UpstreamTransport"]

from router.transport.connection import (
    _CHUNKED_END,
    _CLOSED_BEFORE_WRITE,
    _CLOSED_WHILE_WRITING,
    _DEFAULT_PORTS,
    _DONE,
    _IDEMPOTENT,
    _IDLE,
    _JOIN_BODY_UP_TO,
    _METHODS,
    _NO_TIMEOUTS,
    _SENT,
    _UNSENT,
    _WRITE_FAILED,
    _WRITTEN,
    _Connection,
    _describe,
    _expire,
    _Failure,
)

__all__ = ["UpstreamTransport"]


class _Pool:
    """The connections to one origin and the slots (requests in flight) they are limited to."""

    __slots__ = (
        "closed",
        "conns",
        "expiry",
        "host",
        "idle",
        "in_use",
        "limit",
        "loop",
        "port",
        "server_hostname",
        "ssl",
        "waiters",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        limit: int,
        expiry: float | None,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.server_hostname = host if ssl_context is not None else None
        self.limit = limit
        self.in_use = 0  # slots taken: each one is one request, on at most one connection
        self.expiry = expiry
        # A stack: the connection released last is reused first; the oldest sit at the left.
        self.idle: collections.deque[_Connection] = collections.deque()
        self.conns: set[_Connection] = set()
        self.waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        self.closed = False

    async def acquire(self, seconds: float | None, request: httpx.Request) -> None:
        """Wait for a slot; ``release`` hands it over first come, first served."""
        waiter: asyncio.Future[bool] = self.loop.create_future()
        self.waiters.append(waiter)
        timer = None if seconds is None else self.loop.call_later(seconds, _expire, waiter)
        try:
            granted = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # granted just as we were cancelled: pass the slot on
            else:
                self._forget(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not granted:
            self._forget(waiter)
            raise httpx.PoolTimeout("Timed out waiting for a free connection.", request=request)

    def _forget(self, waiter: asyncio.Future[bool]) -> None:
        with contextlib.suppress(ValueError):
            self.waiters.remove(waiter)

    def release(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.in_use -= 1

    def take_idle(self) -> _Connection | None:
        idle = self.idle
        if not idle:
            return None
        if self.expiry is not None:
            expired = self.loop.time() - self.expiry
            while idle and idle[0].idle_since < expired:
                idle.popleft().abort()
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            conn.abort()
        return None

    def put_idle(self, conn: _Connection) -> None:
        conn.state = _IDLE
        conn.body_chunks.clear()
        if conn.reading_paused:
            conn.reading_paused = False
            assert conn.transport is not None
            conn.transport.resume_reading()
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def drop_idle(self, conn: _Connection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        conn.abort()

    async def connect(self, request: httpx.Request, seconds: float | None) -> _Connection:
        conn = _Connection(self)
        try:
            async with asyncio.timeout(seconds):
                await self.loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.server_hostname,
                )
        except TimeoutError as exc:  # our timeout, or the kernel's ETIMEDOUT
            raise httpx.ConnectTimeout("Timed out while connecting.", request=request) from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake
            raise httpx.ConnectError(_describe(exc), request=request) from exc
        self.conns.add(conn)
        return conn


class _ResponseStream(httpx.AsyncByteStream):
    """A response body, read straight from its connection's buffer as bytes arrive."""

    __slots__ = ("_closed", "_conn", "_pool", "_request", "_timeout")

    def __init__(
        self, conn: _Connection, pool: _Pool, request: httpx.Request, timeout: float | None
    ) -> None:
        self._conn = conn
        self._pool = pool
        self._request = request
        self._timeout = timeout
        self._closed = False

    def __aiter__(self) -> _ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:  # the connection may carry someone else's request by now
            raise StopAsyncIteration
        conn = self._conn
        while True:
            chunks = conn.body_chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                conn.buffered = 0
                if conn.reading_paused:
                    conn.reading_paused = False
                    if not conn.lost:
                        assert conn.transport is not None
                        conn.transport.resume_reading()
                return data
            if conn.state == _DONE:
                raise StopAsyncIteration
            failure = conn.failure
            if failure is not None:
                raise failure[0](failure[1], request=self._request)
            if not await conn.wait(self._timeout):
                raise httpx.ReadTimeout(
                    "Timed out while reading the response.", request=self._request
                )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        pool = self._pool
        if conn.state == _DONE and conn.keep_alive and conn.reusable and not pool.closed:
            pool.put_idle(conn)
            pool.release()
            return
        # An unfinished (or unusable) response: the socket must not carry another request.
        conn.abort()
        pool.release()
        await conn.wait_closed()


class UpstreamTransport(httpx.AsyncBaseTransport):
    """An HTTP/1.1 connection-pooling transport for ``httpx.AsyncClient``.

    ``max_connections`` bounds the connections (and so the requests in flight) per origin;
    ``ssl_context`` verifies https upstreams (default: ``ssl.create_default_context()``, made
    once, on the first https request); a connection idle for more than ``keepalive_expiry``
    seconds is closed instead of reused (None: kept until the server closes it), as httpx's
    own transport does after 5 s, in case a middlebox dropped it silently.
    """

    def __init__(
        self,
        max_connections: int = 256,
        ssl_context: ssl.SSLContext | None = None,
        *,
        keepalive_expiry: float | None = 5.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_connections = max_connections
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._pools: dict[tuple[bytes, bytes, int | None], _Pool] = {}

    def _pool_for(self, request: httpx.Request, key: tuple[bytes, bytes, int | None]) -> _Pool:
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
        pool = _Pool(
            asyncio.get_running_loop(),
            host.decode("ascii"),
            port or _DEFAULT_PORTS[scheme],
            context,
            self._max_connections,
            self._keepalive_expiry,
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
        if pool.in_use < pool.limit:
            pool.in_use += 1
        else:
            await pool.acquire(timeouts.get("pool"), request)
        try:
            return await self._send(pool, request, timeouts)
        except BaseException:
            pool.release()
            raise

    async def _send(
        self, pool: _Pool, request: httpx.Request, timeouts: Mapping[str, float | None]
    ) -> httpx.Response:
        head, chunked = _request_head(request)
        try:
            body: bytes | None = request.content
        except httpx.RequestNotRead:
            body = None  # a streaming body, written as it is produced
        method = request.method
        conn = pool.take_idle()
        reused = conn is not None
        while True:
            if conn is None:
                conn = await pool.connect(request, timeouts.get("connect"))
            try:
                failure, phase = await self._exchange(conn, request, head, body, chunked, timeouts)
            except BaseException:
                conn.abort()
                raise
            if failure is None:
                stream = _ResponseStream(conn, pool, request, timeouts.get("read"))
                return httpx.Response(
                    conn.status,
                    headers=conn.headers,
                    stream=stream,
                    extensions={"http_version": conn.http_version, "reason_phrase": conn.reason},
                )
            conn.abort()
            # Retry once, on a new connection, when the reused one turned out to be closed and
            # no byte of an answer came: if the request could not be written (whole), or if it
            # was but is idempotent. A streaming body can be sent again only if untouched.
            replayable = phase == _UNSENT or (
                body is not None and (phase == _WRITE_FAILED or method in _IDEMPOTENT)
            )
            if reused and replayable and not conn.received:
                reused = False
                conn = None
                continue
            raise failure[0](failure[1], request=request)

    async def _exchange(
        self,
        conn: _Connection,
        request: httpx.Request,
        head: bytes,
        body: bytes | None,
        chunked: bool,
        timeouts: Mapping[str, float | None],
    ) -> tuple[_Failure | None, int]:
        """Write the request and wait for the response head.

        Returns ``(failure, phase)``: failure is None once a head arrived; ``phase`` tells how
        far the request got (``_UNSENT``, ``_WRITE_FAILED``, ``_WRITTEN``).
        """
        conn.begin(request.method == "HEAD")
        transport = conn.transport
        assert transport is not None
        if transport.is_closing() or conn.lost:
            return (httpx.WriteError, _CLOSED_BEFORE_WRITE), _UNSENT
        if body is None:
            await self._write_stream(conn, request, head, chunked, timeouts.get("write"))
        else:
            if chunked:
                body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if body else _CHUNKED_END
            if len(body) <= _JOIN_BODY_UP_TO:
                transport.write(head + body)
            else:
                transport.write(head)
                transport.write(body)
            if conn.write_paused and not await conn.drain(timeouts.get("write")):
                raise httpx.WriteTimeout("Timed out while sending the request.", request=request)
        if (conn.lost or transport.is_closing()) and not conn.received:
            # The write itself failed (asyncio reports that by closing the transport).
            return (httpx.WriteError, _CLOSED_WHILE_WRITING), _WRITE_FAILED
        if conn.state != _SENT:
            # Answered before the request was all sent: the server may not have read it all,
            # and would take the rest for the next request.
            conn.reusable = False
        read_timeout = timeouts.get("read")
        while conn.state == _SENT:
            failure = conn.failure
            if failure is not None:
                return failure, _WRITTEN
            if not await conn.wait(read_timeout):
                raise httpx.ReadTimeout("Timed out while reading the response.", request=request)
        return None, _WRITTEN

    async def _write_stream(
        self,
        conn: _Connection,
        request: httpx.Request,
        head: bytes,
        chunked: bool,
        seconds: float | None,
    ) -> None:
        """Write the head, then a streaming body part by part (chunk-framed when chunked)."""
        transport = conn.transport
        assert transport is not None
        transport.write(head)
        stream = request.stream
        if isinstance(stream, httpx.AsyncByteStream):
            async for data in stream:
                if not await self._write_part(conn, request, data, chunked, seconds):
                    return
        else:
            for data in stream:
                if not await self._write_part(conn, request, data, chunked, seconds):
                    return
        if chunked and not (conn.lost or transport.is_closing()):
            transport.write(_CHUNKED_END)

    async def _write_part(
        self,
        conn: _Connection,
        request: httpx.Request,
        data: bytes,
        chunked: bool,
        seconds: float | None,
    ) -> bool:
        """Write one part of a streaming body; False when the connection is gone."""
        transport = conn.transport
        assert transport is not None
        if conn.lost or transport.is_closing():
            return False
        if data:
            transport.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            if conn.write_paused and not await conn.drain(seconds):
                raise httpx.WriteTimeout("Timed out while sending the request.", request=request)
        return True

    async def aclose(self) -> None:
        """Close every connection of every pool (idle ones and those carrying a response)."""
        pools = list(self._pools.values())
        self._pools.clear()
        closing: list[_Connection] = []
        for pool in pools:
            pool.closed = True
            pool.idle.clear()
            for conn in list(pool.conns):
                conn.abort()
                closing.append(conn)
        waiting = [conn.closed for conn in closing if not conn.closed.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=5.0)


def _request_head(request: httpx.Request) -> tuple[bytes, bool]:
    """The request line and headers, as given, and whether the body is sent chunked."""
    method = request.method
    verb = _METHODS.get(method) or method.encode("ascii")
    parts = [verb, b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    raw = request.headers.raw
    for name, value in raw:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    # A CR or LF inside the target, a name or a value would smuggle in other header lines.
    lines = len(raw) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b" " in verb:
        raise httpx.LocalProtocolError("Invalid character in the request head.", request=request)
    chunked = False
    if b"transfer-encoding" in head.lower():  # httpx sets it for streaming bodies
        for name, value in raw:
            if name.lower() == b"transfer-encoding":
                chunked = value.rstrip().lower().endswith(b"chunked")
    return head, chunked
