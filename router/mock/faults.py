"""Fault injection for the fake upstreams: one :class:`Faults` object that every API fake uses.

:meth:`Faults.deliver` applies :class:`~router.mock.options.MockOptions` to an answer: the latency,
and, for the share ``fail_rate`` of requests, the failure mode (see :mod:`router.mock.options`).
Each API fake gives it the answer to build (``reply(kind)``, where ``kind`` is ``"none"``,
``"stall"``, ``"disconnect"``, ``"truncate"`` or ``"error_event"``) and its own error shapes
(``refuse(status)`` for ``status:<code>``, ``hung()`` for the end of a ``hang``). The building
blocks the answers use are here too: :class:`BodyStream` (a paced stream that can stall or
drop) and :func:`json_reply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from router.mock.options import MockOptions, parse_fail

JSON = "application/json"
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
HANG_SECONDS = 24 * 3600.0


class MockDisconnect(httpx.RemoteProtocolError):
    """Raised inside the app to make the server drop the connection.

    uvicorn answers an exception by closing the socket (or by a 500 if nothing was
    sent yet, which the fake avoids). It subclasses httpx.RemoteProtocolError so that
    a client mounting the app in process with httpx.ASGITransport gets the same
    exception type it would get over a real socket.
    """


class _HideMockDisconnects(logging.Filter):
    """Keeps deliberate disconnects out of uvicorn's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], MockDisconnect))


def install_log_filter() -> None:
    """Keep the fakes' deliberate disconnects out of uvicorn's error log (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideMockDisconnects) for f in logger.filters):
        logger.addFilter(_HideMockDisconnects())


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Faults:
    """The failure modes of one fake upstream, shared by its OpenAI, Anthropic, Gemini and Ollama
    routes: which request fails (a seeded random draw against ``fail_rate``) and the requests a
    ``hang`` holds, so that a server stop can release them."""

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)
        self._hangs: set[asyncio.Future[None]] = set()

    @property
    def hanging(self) -> int:
        """How many requests a ``hang`` holds right now."""
        return len(self._hangs)

    def pick(self, opts: MockOptions) -> tuple[str, int]:
        """The failure for the next request: ``(kind, status)``, ``("none", 0)`` for none."""
        if opts.fail != "none" and self._random.random() < opts.fail_rate:
            return parse_fail(opts.fail)
        return "none", 0

    async def deliver(
        self,
        request: Request,
        opts: MockOptions,
        reply: Callable[[str], ASGIApp],
        *,
        refuse: Callable[[int], ASGIApp],
        hung: Callable[[], ASGIApp],
    ) -> ASGIApp:
        """Apply latency and the failure mode; ``reply(kind)`` builds the answer otherwise."""
        kind, status = self.pick(opts)
        if kind == "hang":
            await self.hang(request.receive)
            return hung()
        if opts.latency_ms:
            await asyncio.sleep(opts.latency_ms / 1000)
        if kind == "status":
            return refuse(status)
        return reply(kind)

    async def hang(self, receive: Receive) -> None:
        """Wait until the client goes away (so a timed-out client frees the server) or
        :meth:`release_hangs` runs (so a server stop does not wait on a connected client)."""
        released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hangs.add(released)
        gone = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait(
                (released, gone), timeout=HANG_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._hangs.discard(released)
            gone.cancel()

    def release_hangs(self) -> int:
        """Make requests held by ``fail="hang"`` answer now; return how many.

        Safe to call from any thread; MockServer calls it when shutting down.
        """
        hangs = list(self._hangs)
        for future in hangs:
            future.get_loop().call_soon_threadsafe(_resolve, future)
        return len(hangs)


class BodyStream:
    """A streamed body, written one chunk per body message so clients see a real stream.

    Chunks whose index is in ``paced`` wait ``delay`` seconds first. ``abort`` drops the
    connection after the chunks; ``stall`` keeps it open, sending nothing more, until the client
    goes away (an upstream that hangs mid-stream). Server-sent events by default; ``headers``
    sets another content type (Ollama's NDJSON).
    """

    def __init__(
        self,
        chunks: list[bytes],
        paced: range,
        delay: float,
        *,
        abort: bool,
        stall: bool = False,
        headers: list[tuple[bytes, bytes]] = SSE_HEADERS,
    ) -> None:
        self.chunks, self.paced, self.delay, self.abort = chunks, paced, delay, abort
        self.stall, self.headers = stall, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        for i, chunk in enumerate(self.chunks):
            if self.delay and i in self.paced:
                await asyncio.sleep(self.delay)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if self.stall:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wait_for_disconnect(receive), HANG_SECONDS)
            return
        if self.abort:
            # Without the terminating zero-length chunk the client sees a broken stream.
            raise MockDisconnect("mock upstream dropped the stream (fail=disconnect)")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _drop_connection(scope: Scope, receive: Receive, send: Send) -> None:
    # ASGI has no "abort" message. uvicorn marks the response as started before it
    # validates the headers, so a header value it refuses makes it close the socket
    # without writing a byte (instead of its usual 500 page).
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-mock", b"\n")]})
    except Exception as exc:
        raise MockDisconnect("mock upstream dropped the connection (fail=disconnect)") from exc
    raise MockDisconnect("mock upstream dropped the connection (fail=disconnect)")


def json_reply(obj: dict[str, Any], kind: str) -> ASGIApp:
    """``obj`` as a JSON answer, or the non-stream form of failure ``kind``: a dropped
    connection (``disconnect``) or half the body (``truncate``)."""
    if kind == "disconnect":
        return _drop_connection
    data = orjson.dumps(obj)
    if kind == "truncate":
        # Valid HTTP, invalid JSON: the non-stream counterpart of a truncated stream.
        return Response(data[: len(data) // 2], media_type=JSON)
    return Response(data, media_type=JSON)
