"""One HTTP/1.1 client connection: an asyncio protocol that parses answers with httptools.

The connection half of :mod:`pool` (read that module's docstring for the design); kept
apart so each file stays readable. Nothing here is public.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import socket
import ssl
from collections.abc import Mapping
from typing import Any, Final, Protocol, cast

import httptools
import httpx


class _Owner(Protocol):
    """What a connection needs of the pool that owns it."""

    loop: asyncio.AbstractEventLoop
    conns: set[_Connection]

    def drop_idle(self, conn: _Connection) -> None: ...


# Connection states, for the request in flight on it.
_IDLE: Final = 0  # no request: in a pool, or just connected
_SENT: Final = 1  # request written (or being written), waiting for the response head
_BODY: Final = 2  # head parsed, body arriving
_DONE: Final = 3  # response message complete

# How far a request got before its connection failed (decides whether it may be retried).
_UNSENT: Final = 0  # not a byte written
_WRITE_FAILED: Final = 1  # the write failed part way
_WRITTEN: Final = 2  # all written

# Unread body bytes buffered in a connection before it stops reading from its socket.
_PAUSE_READING_ABOVE: Final = 1 << 20
# Bodies up to this size go out in the same write as the request head (one copy, one send).
_JOIN_BODY_UP_TO: Final = 1 << 18

_NO_RESPONSE: Final = "Server disconnected without sending a response."
_INCOMPLETE_HEAD: Final = "peer closed connection without sending complete response headers"
_INCOMPLETE_BODY: Final = "peer closed connection without sending complete message body"
_CLOSED_BEFORE_WRITE: Final = "connection closed before the request was sent"
_CLOSED_WHILE_WRITING: Final = "connection closed while sending the request"

_NO_TIMEOUTS: Final[Mapping[str, float | None]] = {}
_HTTP_11: Final = b"HTTP/1.1"
_HTTP_10: Final = b"HTTP/1.0"
_DEFAULT_PORTS: Final = {b"http": 80, b"https": 443}
_METHODS: Final = {
    name: name.encode("ascii")
    for name in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")
}
# RFC 9110 9.2.2: safe to send twice, so also retried when a reused connection drops the answer.
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_CHUNKED_END: Final = b"0\r\n\r\n"
_ERRNO: Final = re.compile(r"\[Errno (-?\d+)\]")
_HAS_POLL: Final = hasattr(select, "poll")

# A failure seen by a connection: the httpx exception type to raise, and its message.
_Failure = tuple[type[httpx.TransportError], str]


def _expire(waiter: asyncio.Future[bool]) -> None:
    """Timer callback: wake ``waiter`` with False ("timed out") unless something woke it first."""
    if not waiter.done():
        waiter.set_result(False)


def _describe(exc: BaseException) -> str:
    """An OS error as '[Errno 111] Connection refused': no address, no URL, no header."""
    if isinstance(exc, socket.gaierror | ssl.SSLError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno:
        return f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
    text = str(exc)
    found = _ERRNO.search(text)  # asyncio's "Multiple exceptions: [Errno 111] Connect call ..."
    if found is not None:
        errno = int(found.group(1))
        return f"[Errno {errno}] {os.strerror(errno)}"
    return text or type(exc).__name__


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: parses what arrives and wakes whoever waits for it.

    The callbacks only record state (head, body chunks, completion, failure) and resolve the
    single ``waiter`` future; the request coroutine and the body stream read that state.
    """

    __slots__ = (
        "body_chunks",
        "buffered",
        "close_delimited",
        "closed",
        "drain_waiter",
        "failure",
        "head_only",
        "headers",
        "http_version",
        "idle_since",
        "informational",
        "keep_alive",
        "lost",
        "parser",
        "poller",
        "pool",
        "reading_paused",
        "reason",
        "received",
        "renew_parser",
        "reusable",
        "state",
        "status",
        "transport",
        "waiter",
        "write_paused",
    )

    def __init__(self, pool: _Owner) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.state = _IDLE
        self.reusable = True  # False once anything makes a next request unsafe
        self.lost = False
        self.closed: asyncio.Future[None] = pool.loop.create_future()
        self.poller: Any = None  # select.poll over the socket, to spot a close not yet seen
        self.waiter: asyncio.Future[bool] | None = None
        self.drain_waiter: asyncio.Future[bool] | None = None
        self.write_paused = False
        self.reading_paused = False
        self.renew_parser = False
        self.idle_since = 0.0  # loop.time() when last put back in the pool
        self.http_version = _HTTP_11
        self.body_chunks: list[bytes] = []
        self._reset(head_only=False)

    # -- used by the transport and the body stream ------------------------------------------

    def begin(self, head_only: bool) -> None:
        """Reset the per-request state before a request is written."""
        if self.renew_parser:  # after a HEAD answer, llhttp still expects its announced body
            self.parser = httptools.HttpResponseParser(self)
            self.renew_parser = False
        self._reset(head_only)
        self.state = _SENT

    def _reset(self, head_only: bool) -> None:
        """The per-request state, as it is before a request."""
        self.received = False
        self.head_only = head_only
        self.informational = False
        self.close_delimited = False
        self.keep_alive = True
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_chunks.clear()
        self.buffered = 0
        self.failure: _Failure | None = None

    def usable(self) -> bool:
        """Whether this idle connection may carry a request (the server has not closed it)."""
        if not self.reusable or self.lost:
            return False
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        # A FIN (or RST, or stray bytes) already in the kernel but not yet seen by the loop
        # makes the socket readable: one poll(2) catches what a callback would report later.
        poller = self.poller
        return poller is None or not poller.poll(0)

    async def wait(self, seconds: float | None) -> bool:
        """Sleep until a callback reports progress; False when ``seconds`` passed first."""
        loop = self.pool.loop
        waiter: asyncio.Future[bool] = loop.create_future()
        self.waiter = waiter
        if seconds is None:
            try:
                return await waiter
            finally:
                self.waiter = None
        timer = loop.call_later(seconds, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self.waiter = None

    async def drain(self, seconds: float | None) -> bool:
        """Wait while the transport's write buffer is full; False on timeout."""
        loop = self.pool.loop
        while self.write_paused and not self.lost:
            waiter: asyncio.Future[bool] = loop.create_future()
            self.drain_waiter = waiter
            timer = None if seconds is None else loop.call_later(seconds, _expire, waiter)
            try:
                if not await waiter:
                    return False
            finally:
                if timer is not None:
                    timer.cancel()
                self.drain_waiter = None
        return True

    def abort(self) -> None:
        """Close the socket now, discarding anything unsent or unread."""
        self.reusable = False
        transport = self.transport
        if transport is not None and not self.lost:
            transport.abort()

    async def wait_closed(self, seconds: float = 5.0) -> None:
        if self.transport is not None and not self.closed.done():
            # asyncio.wait: being cancelled here must not cancel the shared future.
            await asyncio.wait((self.closed,), timeout=seconds)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(True)

    def _fail(self, failure: _Failure) -> None:
        """The response in flight cannot be completed: record why and stop reading."""
        self.reusable = False
        state = self.state
        if state in (_SENT, _BODY):
            if self.failure is None:
                self.failure = failure
            self._wake()
        if self.transport is not None and not self.lost:
            self.transport.abort()

    def _peer_closed(self, exc: BaseException | None) -> None:
        self.reusable = False
        state = self.state
        if state in (_SENT, _BODY):
            if self.failure is None:
                if exc is not None:
                    self.failure = (httpx.ReadError, _describe(exc))
                elif state == _BODY:
                    if self.close_delimited:
                        self.state = _DONE  # the body of such a response ends at EOF
                    else:
                        self.failure = (httpx.RemoteProtocolError, _INCOMPLETE_BODY)
                elif self.received:
                    self.failure = (httpx.RemoteProtocolError, _INCOMPLETE_HEAD)
                else:
                    self.failure = (httpx.RemoteProtocolError, _NO_RESPONSE)
            self._wake()
        elif state == _IDLE:
            self.pool.drop_idle(self)
        drain_waiter = self.drain_waiter
        if drain_waiter is not None and not drain_waiter.done():
            drain_waiter.set_result(True)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if _HAS_POLL and sock is not None:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            self.poller = poller

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state not in (_SENT, _BODY):
            # Bytes nobody asked for: whatever they are, the connection cannot be trusted.
            self.reusable = False
            if state == _IDLE:
                self.pool.drop_idle(self)
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail((httpx.RemoteProtocolError, "unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            if self.state == _DONE:
                self.reusable = False  # garbage after a complete response
            else:
                self._fail((httpx.RemoteProtocolError, f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        self._peer_closed(None)
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._peer_closed(exc)
        self.pool.conns.discard(self)
        self.poller = None
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain_waiter = self.drain_waiter
        if drain_waiter is not None and not drain_waiter.done():
            drain_waiter.set_result(True)

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.state != _SENT:
            self.reusable = False  # a second response to one request

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.state != _SENT:
            self.reusable = False
            return
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:  # 1xx: an interim answer; the final one follows as another message
            self.informational = True
            self.reason = b""
            self.headers = []
            return
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        if parser.get_http_version() == "1.0":
            self.http_version = _HTTP_10
        else:
            self.http_version = _HTTP_11
        if self.head_only:
            # No body follows, whatever Content-Length says; llhttp cannot be told that.
            self.renew_parser = True
            self.state = _DONE
            self._wake()
            return
        if status != 204 and status != 304:
            # Without Content-Length or a final chunked coding the body ends at EOF.
            length = False
            chunked: bool | None = None
            for name, value in self.headers:
                size = len(name)
                if size == 14:
                    if name.lower() == b"content-length":
                        length = True
                elif size == 17 and name.lower() == b"transfer-encoding":
                    chunked = value.rstrip().lower().endswith(b"chunked")
            if chunked is False or (chunked is None and not length):
                self.close_delimited = True
                self.keep_alive = False
        self.state = _BODY
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.state != _BODY:
            self.reusable = False  # e.g. a body after a HEAD answer
            return
        self.body_chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _PAUSE_READING_ABOVE and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        if self.state == _BODY:
            self.state = _DONE
            self._wake()
