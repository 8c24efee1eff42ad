"""Bounds on what an upstream may send: the size of its response head, of a whole body (after
decompression) and of one event of a stream.

A hostile or broken upstream must not be able to grow the proxy's memory without end, nor make
one request's parsing stall every other one. :class:`ResponseLimits` holds the bounds (the
``upstream.max_*`` settings); the transport checks the head as it is parsed
(:mod:`router.transport.connection`), and :class:`GuardedBody` checks the body, whichever
transport carried it:

* the ``Content-Encoding`` (gzip, deflate) is undone here, a bounded piece at a time, so a small
  compressed body that inflates to gigabytes stops at the limit instead of being inflated whole;
* a streamed answer of ``text/event-stream`` (or newline-delimited JSON) is bounded per event:
  the bytes since the last event boundary; any other body, in total;
* every byte passes through the provider's :class:`~router.redact.Scrubber` on the way.

Past a limit the read raises :class:`ResponseTooLarge` (an ``httpx.RemoteProtocolError``, so
adapters translate it where they translate every other broken answer), naming the setting.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import httpx

from router.redact import Scrubber, StreamScrubber
from router.settings import Settings

__all__ = ["GuardedBody", "ResponseLimits", "ResponseTooLarge", "body_limit_message", "guard"]

# The most one decompression step produces: what a bomb can add to memory at once.
_INFLATE_STEP: Final = 256 * 1024
_EVENT_TYPES: Final = (b"text/event-stream",)
_LINE_TYPES: Final = (b"application/x-ndjson", b"application/jsonl", b"application/json-seq")


@dataclass(frozen=True)
class ResponseLimits:
    """How large an upstream's answer may be (bytes): its head (status line and headers), a
    whole body after decompression, and one event of a stream."""

    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 32 * 1024 * 1024
    max_event_bytes: int = 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> ResponseLimits:
        """The ``upstream.max_header_bytes``, ``max_body_bytes`` and ``max_event_bytes``."""
        return cls(
            settings.upstream_max_header_bytes,
            settings.upstream_max_body_bytes,
            settings.upstream_max_event_bytes,
        )


class ResponseTooLarge(httpx.RemoteProtocolError):
    """An upstream's answer passed one of the :class:`ResponseLimits`."""


def _size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def body_limit_message(what: str, limit: int, setting: str) -> str:
    """'the response headers are over the limit of 64 KiB (upstream.max_header_bytes)'."""
    return f"{what} over the limit of {_size(limit)} ({setting})"


class _Inflater:
    """gzip or deflate undone a bounded step at a time."""

    __slots__ = ("_deflate", "_inflater", "_started")

    def __init__(self, encoding: bytes) -> None:
        self._deflate = encoding == b"deflate"
        # gzip: the gzip wrapper; deflate: the zlib wrapper, or raw deflate (tried on failure).
        wbits = zlib.MAX_WBITS if self._deflate else zlib.MAX_WBITS | 16
        self._inflater = zlib.decompressobj(wbits)
        self._started = False

    def first(self, data: bytes) -> bytes:
        """What ``data`` inflates to, at most ``_INFLATE_STEP`` bytes; ``more`` gives the rest."""
        try:
            piece = self._inflater.decompress(data, _INFLATE_STEP)
        except zlib.error:
            if not self._deflate or self._started:
                raise httpx.DecodingError("the upstream's compressed body is corrupt") from None
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            self._deflate = False
            return self.first(data)
        self._started = True
        return piece

    def more(self) -> bytes:
        """The next piece of input already given but not yet inflated (b"" when none)."""
        tail = self._inflater.unconsumed_tail
        if not tail:
            return b""
        try:
            return self._inflater.decompress(tail, _INFLATE_STEP)
        except zlib.error:
            raise httpx.DecodingError("the upstream's compressed body is corrupt") from None


def _encoding(response: httpx.Response) -> bytes | None:
    """The body's Content-Encoding when it is one this module undoes (gzip, deflate)."""
    for name, value in response.headers.raw:
        if len(name) == 16 and name.lower() == b"content-encoding":
            coding = value.strip().lower()
            if coding in (b"gzip", b"x-gzip"):
                return b"gzip"
            if coding == b"deflate":
                return b"deflate"
            return None
    return None


def _separator(response: httpx.Response) -> bytes | None:
    """What ends one event of this (streamed) body: a blank line for SSE, a newline for NDJSON,
    None when the body is not a sequence of events (then the whole body is bounded)."""
    content_type = response.headers.get("content-type", "").encode("latin-1").lower()
    if content_type.startswith(_EVENT_TYPES):
        return b"\n\n"
    if content_type.startswith(_LINE_TYPES):
        return b"\n"
    return None


class GuardedBody(httpx.AsyncByteStream):
    """A response's body decoded, bounded and scrubbed, read from its transport's stream.

    ``streamed`` bodies of events are bounded per event, everything else in total. Closing it
    closes the transport's stream.
    """

    __slots__ = (
        "_inflater",
        "_limit",
        "_request",
        "_scrubber",
        "_separator",
        "_setting",
        "_since",
        "_source",
        "_tail",
    )

    def __init__(
        self,
        upstream: httpx.Response,
        limits: ResponseLimits,
        scrubber: Scrubber | None,
        *,
        streamed: bool,
    ) -> None:
        source = upstream.stream
        assert isinstance(source, httpx.AsyncByteStream), "an async transport's response"
        self._source = source
        self._request = upstream.request
        encoding = _encoding(upstream)
        self._inflater = _Inflater(encoding) if encoding is not None else None
        separator = _separator(upstream) if streamed else None
        self._separator = separator
        if separator is None:
            self._limit, self._setting = limits.max_body_bytes, "upstream.max_body_bytes"
        else:
            self._limit, self._setting = limits.max_event_bytes, "upstream.max_event_bytes"
        self._scrubber: StreamScrubber | None = None if scrubber is None else scrubber.stream()
        self._since = 0  # bytes counted against the limit so far (since the last boundary)
        self._tail = b""  # the last byte of the previous piece, for a boundary split in two

    @property
    def decoded(self) -> bool:
        """Whether this body undoes the upstream's Content-Encoding."""
        return self._inflater is not None

    def _count(self, piece: bytes) -> None:
        separator = self._separator
        if separator is None:
            self._since += len(piece)
        else:
            cut = piece.rfind(separator)
            if separator == b"\n\n":
                cut = max(cut, piece.rfind(b"\n\r\n"))
            if cut >= 0:
                self._since = len(piece) - cut - len(separator)
            elif self._tail == b"\n" and piece[:1] in (b"\n", b"\r"):
                self._since = len(piece)  # the boundary was split between two pieces
            else:
                self._since += len(piece)
            self._tail = piece[-1:]
        if self._since > self._limit:
            what = "an event of the stream is" if separator is not None else "the response body is"
            raise ResponseTooLarge(
                body_limit_message(what, self._limit, self._setting), request=self._request
            )

    async def __aiter__(self) -> AsyncIterator[bytes]:
        inflater = self._inflater
        scrubber = self._scrubber
        async for raw in self._source:
            if inflater is None:
                self._count(raw)
                yield scrubber.feed(raw) if scrubber is not None else raw
                continue
            piece = inflater.first(raw)
            while piece:
                self._count(piece)
                yield scrubber.feed(piece) if scrubber is not None else piece
                piece = inflater.more()
        if scrubber is not None:
            rest = scrubber.end()
            if rest:
                yield rest

    async def aclose(self) -> None:
        await self._source.aclose()


def guard(
    response: httpx.Response, limits: ResponseLimits, scrubber: Scrubber | None, *, streamed: bool
) -> None:
    """Make ``response`` (its head just parsed, its body unread) yield its body decoded,
    bounded and scrubbed: its stream becomes a :class:`GuardedBody` over the transport's, and
    its headers lose the Content-Encoding that was undone and any credential they echo."""
    body = GuardedBody(response, limits, scrubber, streamed=streamed)
    response.stream = body
    headers = response.headers
    if body.decoded:
        del headers["content-encoding"]
    if scrubber is not None:
        raw = headers.raw
        if scrubber.found(b"\n".join([value for _, value in raw])):
            for name, value in raw:
                headers[name.decode("latin-1")] = scrubber.bytes(value).decode("latin-1")
