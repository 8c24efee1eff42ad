"""One HTTP/1.1 client connection: an asyncio protocol that parses answers with httptools.

The protocol callbacks only record what arrived (head, body chunks, completion, failure) and
resolve the one future a request waits on; no task, stream object or lock per request. Everything
else reaches a connection through its methods: the pool parks and reuses it, the transport runs
one exchange on it (``exchange``), the response stream reads its body (``next_body``).

A connection moves through four states per request: idle (no request, or just connected), sent
(request written or being written, waiting for the response head), body (head parsed, body
arriving) and done (response complete). Anything out of that order, and any failure, makes it
unfit to carry another request.
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

from router.transport.head import CHUNKED_END, chunk
from router.transport.limits import ResponseTooLarge, body_limit_message

__all__ = ["UNSENT", "WRITE_FAILED", "WRITTEN", "Connection", "Failure", "describe", "expire"]

# Connection states, for the request in flight on it.
_IDLE: Final = 0
_SENT: Final = 1
_BODY: Final = 2
_DONE: Final = 3

# How far a request got before its connection failed (decides whether it may be retried).
UNSENT: Final = 0  # not a byte written
WRITE_FAILED: Final = 1  # the write failed part way
WRITTEN: Final = 2  # all written

# Unread body bytes buffered in a connection before it stops reading from its socket.
_PAUSE_READING_ABOVE: Final = 1 << 20
# Bodies up to this size go out in the same write as the request head (one copy, one send).
_JOIN_BODY_UP_TO: Final = 1 << 18

_NO_RESPONSE: Final = "Server disconnected without sending a response."
_INCOMPLETE_HEAD: Final = "peer closed connection without sending complete response headers"
_INCOMPLETE_BODY: Final = "peer closed connection without sending complete message body"
_CLOSED_BEFORE_WRITE: Final = "connection closed before the request was sent"
_CLOSED_WHILE_WRITING: Final = "connection closed while sending the request"

_HTTP_11: Final = b"HTTP/1.1"
_HTTP_10: Final = b"HTTP/1.0"
_ERRNO: Final = re.compile(r"\[Errno (-?\d+)\]")
_HAS_POLL: Final = hasattr(select, "poll")

# A failure seen by a connection: the httpx exception type to raise, and its message.
Failure = tuple[type[httpx.TransportError], str]


class Owner(Protocol):
    """What a connection needs of the pool that owns it."""

    loop: asyncio.AbstractEventLoop
    max_header_bytes: int

    def drop_idle(self, conn: Connection) -> None:
        """``conn``, idle, was closed by its peer: take it out of the pool."""

    def forget(self, conn: Connection) -> None:
        """``conn``'s socket is closed."""


def expire(waiter: asyncio.Future[bool]) -> None:
    """Timer callback: wake ``waiter`` with False ("timed out") unless something woke it first."""
    if not waiter.done():
        waiter.set_result(False)


def describe(exc: BaseException) -> str:
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


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: parses what arrives and wakes whoever waits for it."""

    __slots__ = (
        "_body_chunks",
        "_buffered",
        "_close_delimited",
        "_closed",
        "_drain_waiter",
        "_failure",
        "_head_bytes",
        "_head_only",
        "_headers",
        "_http_version",
        "_idle_since",
        "_informational",
        "_keep_alive",
        "_lost",
        "_owner",
        "_parser",
        "_poller",
        "_reading_paused",
        "_reason",
        "_received",
        "_renew_parser",
        "_reusable",
        "_state",
        "_status",
        "_transport",
        "_waiter",
        "_write_paused",
    )

    def __init__(self, owner: Owner) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._state = _IDLE
        self._reusable = True  # False once anything makes a next request unsafe
        self._lost = False
        self._closed: asyncio.Future[None] = owner.loop.create_future()
        self._poller: Any = None  # select.poll over the socket, to spot a close not yet seen
        self._waiter: asyncio.Future[bool] | None = None
        self._drain_waiter: asyncio.Future[bool] | None = None
        self._write_paused = False
        self._reading_paused = False
        self._renew_parser = False
        self._idle_since = 0.0
        self._http_version = _HTTP_11
        self._body_chunks: list[bytes] = []
        self._reset(head_only=False)

    # -- for the pool -------------------------------------------------------------------------

    @property
    def idle_since(self) -> float:
        """``loop.time()`` when the connection was last parked."""
        return self._idle_since

    def usable(self) -> bool:
        """Whether this idle connection may carry a request (the server has not closed it)."""
        if not self._reusable or self._lost:
            return False
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        # A FIN (or RST, or stray bytes) already in the kernel but not yet seen by the loop
        # makes the socket readable: one poll(2) catches what a callback would report later.
        poller = self._poller
        return poller is None or not poller.poll(0)

    def finished_cleanly(self) -> bool:
        """Whether the response is complete and the connection may carry another request."""
        return self._state == _DONE and self._keep_alive and self._reusable

    def park(self, now: float) -> None:
        """Become idle after a complete response, ready for the next request."""
        self._state = _IDLE
        self._body_chunks.clear()
        self._resume_reading()
        self._idle_since = now

    def abort(self) -> None:
        """Close the socket now, discarding anything unsent or unread."""
        self._reusable = False
        transport = self._transport
        if transport is not None and not self._lost:
            transport.abort()

    async def wait_closed(self, seconds: float = 5.0) -> None:
        """Wait (at most ``seconds``) until the socket is closed."""
        if self._transport is not None and not self._closed.done():
            # asyncio.wait: being cancelled here must not cancel the shared future.
            await asyncio.wait((self._closed,), timeout=seconds)

    # -- for the transport: one request and its response head ---------------------------------

    @property
    def answered(self) -> bool:
        """Whether any byte of an answer to the current request arrived."""
        return self._received

    async def exchange(
        self,
        request: httpx.Request,
        head: bytes,
        body: bytes | None,
        chunked: bool,
        timeouts: Mapping[str, float | None],
    ) -> tuple[Failure | None, int]:
        """Write the request (``body`` None: its stream) and wait for the response head.

        Returns ``(failure, phase)``: failure is None once a head arrived; ``phase`` tells how
        far the request got (``UNSENT``, ``WRITE_FAILED``, ``WRITTEN``). Timeouts raise.
        """
        self._begin(request.method == "HEAD")
        transport = self._transport
        assert transport is not None
        if transport.is_closing() or self._lost:
            return (httpx.WriteError, _CLOSED_BEFORE_WRITE), UNSENT
        write_timeout = timeouts.get("write")
        if body is None:
            await self._write_stream(request, head, chunked, write_timeout)
        else:
            if chunked:
                body = chunk(body) + CHUNKED_END if body else CHUNKED_END
            if len(body) <= _JOIN_BODY_UP_TO:
                transport.write(head + body)
            else:
                transport.write(head)
                transport.write(body)
            await self._drain(request, write_timeout)
        if (self._lost or transport.is_closing()) and not self._received:
            # The write itself failed (asyncio reports that by closing the transport).
            return (httpx.WriteError, _CLOSED_WHILE_WRITING), WRITE_FAILED
        if self._state != _SENT:
            # Answered before the request was all sent: the server may not have read it all,
            # and would take the rest for the next request.
            self._reusable = False
        read_timeout = timeouts.get("read")
        while self._state == _SENT:
            if self._failure is not None:
                return self._failure, WRITTEN
            if not await self._wait(read_timeout):
                raise httpx.ReadTimeout("Timed out while reading the response.", request=request)
        return None, WRITTEN

    def response(self, stream: httpx.AsyncByteStream) -> httpx.Response:
        """The response whose head was parsed, with ``stream`` as its body."""
        return httpx.Response(
            self._status,
            headers=self._headers,
            stream=stream,
            extensions={"http_version": self._http_version, "reason_phrase": self._reason},
        )

    # -- for the response stream --------------------------------------------------------------

    async def next_body(self, request: httpx.Request, seconds: float | None) -> bytes | None:
        """The body bytes that arrived since the last call (waiting for some); None at the end.

        Waits at most ``seconds`` for each arrival (then ``httpx.ReadTimeout``); a broken
        response raises the httpx error that says why.
        """
        while True:
            chunks = self._body_chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                self._resume_reading()
                return data
            if self._state == _DONE:
                return None
            failure = self._failure
            if failure is not None:
                raise failure[0](failure[1], request=request)
            if not await self._wait(seconds):
                raise httpx.ReadTimeout("Timed out while reading the response.", request=request)

    # -- inside -------------------------------------------------------------------------------

    def _begin(self, head_only: bool) -> None:
        """Reset the per-request state before a request is written."""
        if self._renew_parser:  # after a HEAD answer, llhttp still expects its announced body
            self._parser = httptools.HttpResponseParser(self)
            self._renew_parser = False
        self._reset(head_only)
        self._state = _SENT

    def _reset(self, head_only: bool) -> None:
        """The per-request state, as it is before a request."""
        self._received = False
        self._head_bytes = 0
        self._head_only = head_only
        self._informational = False
        self._close_delimited = False
        self._keep_alive = True
        self._status = 0
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body_chunks.clear()
        self._buffered = 0
        self._failure: Failure | None = None

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if not self._lost:
                assert self._transport is not None
                self._transport.resume_reading()

    async def _write_stream(
        self, request: httpx.Request, head: bytes, chunked: bool, seconds: float | None
    ) -> None:
        """Write the head, then a streaming body part by part (chunk-framed when chunked)."""
        transport = self._transport
        assert transport is not None
        transport.write(head)
        stream = request.stream
        if isinstance(stream, httpx.AsyncByteStream):
            async for data in stream:
                if not await self._write_part(request, data, chunked, seconds):
                    return
        else:
            for data in stream:
                if not await self._write_part(request, data, chunked, seconds):
                    return
        if chunked and not (self._lost or transport.is_closing()):
            transport.write(CHUNKED_END)

    async def _write_part(
        self, request: httpx.Request, data: bytes, chunked: bool, seconds: float | None
    ) -> bool:
        """Write one part of a streaming body; False when the connection is gone."""
        transport = self._transport
        assert transport is not None
        if self._lost or transport.is_closing():
            return False
        if data:
            transport.write(chunk(data) if chunked else data)
            await self._drain(request, seconds)
        return True

    async def _wait(self, seconds: float | None) -> bool:
        """Sleep until a callback reports progress; False when ``seconds`` passed first."""
        loop = self._owner.loop
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiter = waiter
        if seconds is None:
            try:
                return await waiter
            finally:
                self._waiter = None
        timer = loop.call_later(seconds, expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _drain(self, request: httpx.Request, seconds: float | None) -> None:
        """Wait while the transport's write buffer is full; ``httpx.WriteTimeout`` after
        ``seconds``."""
        loop = self._owner.loop
        while self._write_paused and not self._lost:
            waiter: asyncio.Future[bool] = loop.create_future()
            self._drain_waiter = waiter
            timer = None if seconds is None else loop.call_later(seconds, expire, waiter)
            try:
                if not await waiter:
                    raise httpx.WriteTimeout(
                        "Timed out while sending the request.", request=request
                    )
            finally:
                if timer is not None:
                    timer.cancel()
                self._drain_waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(True)

    def _fail(self, failure: Failure) -> None:
        """The response in flight cannot be completed: record why and stop reading."""
        self._reusable = False
        if self._state in (_SENT, _BODY):
            if self._failure is None:
                self._failure = failure
            self._wake()
        if self._transport is not None and not self._lost:
            self._transport.abort()

    def _peer_closed(self, exc: BaseException | None) -> None:
        self._reusable = False
        state = self._state
        if state in (_SENT, _BODY):
            if self._failure is None:
                if exc is not None:
                    self._failure = (httpx.ReadError, describe(exc))
                elif state == _BODY:
                    if self._close_delimited:
                        self._state = _DONE  # the body of such a response ends at EOF
                    else:
                        self._failure = (httpx.RemoteProtocolError, _INCOMPLETE_BODY)
                elif self._received:
                    self._failure = (httpx.RemoteProtocolError, _INCOMPLETE_HEAD)
                else:
                    self._failure = (httpx.RemoteProtocolError, _NO_RESPONSE)
            self._wake()
        elif state == _IDLE:
            self._owner.drop_idle(self)
        drain_waiter = self._drain_waiter
        if drain_waiter is not None and not drain_waiter.done():
            drain_waiter.set_result(True)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if _HAS_POLL and sock is not None:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            self._poller = poller

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state not in (_SENT, _BODY):
            # Bytes nobody asked for: whatever they are, the connection cannot be trusted.
            self._reusable = False
            if state == _IDLE:
                self._owner.drop_idle(self)
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail((httpx.RemoteProtocolError, "unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            if self._state == _DONE:
                self._reusable = False  # garbage after a complete response
            else:
                self._fail((httpx.RemoteProtocolError, f"invalid HTTP response: {exc}"))
        if state == _SENT:
            # llhttp keeps a header it has not seen the end of, so the head is bounded here,
            # by what arrived while no head was complete (at most one read beyond the limit).
            self._head_bytes += len(data)
            limit = self._owner.max_header_bytes
            if self._head_bytes > limit and self._state == _SENT:
                self._fail(
                    (
                        ResponseTooLarge,
                        body_limit_message(
                            "the response head is", limit, "upstream.max_header_bytes"
                        ),
                    )
                )

    def eof_received(self) -> bool | None:
        self._peer_closed(None)
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._peer_closed(exc)
        self._owner.forget(self)
        self._poller = None
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain_waiter = self._drain_waiter
        if drain_waiter is not None and not drain_waiter.done():
            drain_waiter.set_result(True)

    # -- httptools callbacks: the response as it is parsed -------------------------------------

    def on_message_begin(self) -> None:
        if self._state != _SENT:
            self._reusable = False  # a second response to one request

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._state != _SENT:
            self._reusable = False
            return
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:  # 1xx: an interim answer; the final one follows as another message
            self._informational = True
            self._reason = b""
            self._headers = []
            return
        self._status = status
        self._keep_alive = parser.should_keep_alive()
        self._http_version = _HTTP_10 if parser.get_http_version() == "1.0" else _HTTP_11
        if self._head_only:
            # No body follows, whatever Content-Length says; llhttp cannot be told that.
            self._renew_parser = True
            self._state = _DONE
            self._wake()
            return
        if status != 204 and status != 304 and self._body_ends_at_eof():
            self._close_delimited = True
            self._keep_alive = False
        self._state = _BODY
        self._wake()

    def _body_ends_at_eof(self) -> bool:
        """Whether the body has neither Content-Length nor a final chunked coding."""
        length = False
        chunked: bool | None = None
        for name, value in self._headers:
            size = len(name)
            if size == 14:
                if name.lower() == b"content-length":
                    length = True
            elif size == 17 and name.lower() == b"transfer-encoding":
                chunked = value.rstrip().lower().endswith(b"chunked")
        return chunked is False or (chunked is None and not length)

    def on_body(self, body: bytes) -> None:
        if self._state != _BODY:
            self._reusable = False  # e.g. a body after a HEAD answer
            return
        self._body_chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _PAUSE_READING_ABOVE and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self._state == _BODY:
            self._state = _DONE
            self._wake()
