"""The fake upstream's failure modes and the low-level answers they need.

``MockOptions.fail`` picks one: ``status:<code>`` (an error answer; a 429 carries
``Retry-After: retry_after_s`` unless that option is null), ``hang`` (no answer at all until the
client leaves), ``stall`` (a stream that sends half its chunks, then nothing), ``disconnect``
(the connection drops: before the answer, or mid-stream), ``truncate`` (a stream without its
end, or half a JSON body) and ``error_event`` (streams only: the Anthropic fake sends half its
deltas, then an ``overloaded_error`` event; the other dialects have no such event and
truncate). Split from :mod:`router.mock.upstream` so that module stays about the OpenAI
endpoints; the Anthropic, Gemini and Ollama fakes import these through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

import httpx
import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

_JSON = "application/json"
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

HANG_SECONDS = 24 * 3600.0
_SIMPLE_FAILS = frozenset({"none", "hang", "stall", "disconnect", "truncate", "error_event"})
# The kinds whose stream stops half-way (stall then waits; disconnect drops the connection).
CUT_SHORT = frozenset({"disconnect", "truncate", "error_event"})


def _is_number(value: object, *, low: float = 0.0, high: float = math.inf) -> bool:
    # bool is an int subclass; JSON `true` must not pass as 1.
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
    )


def _parse_fail(fail: object) -> tuple[str, int]:
    """Split a failure mode into (kind, status); raise ValueError if unknown."""
    if isinstance(fail, str):
        if fail in _SIMPLE_FAILS:
            return fail, 0
        kind, _, code = fail.partition(":")
        if kind == "status" and code.isdigit() and 400 <= int(code) <= 599:
            return "status", int(code)
    raise ValueError(
        "fail must be none, hang, stall, disconnect, truncate, error_event or status:<400-599>, "
        f"not {fail!r}"
    )


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


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideMockDisconnects) for f in logger.filters):
        logger.addFilter(_HideMockDisconnects())


def _error(
    status: int,
    message: str,
    *,
    kind: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error in OpenAI's shape."""
    if kind is None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(orjson.dumps(body), status, headers, _JSON)


def _injected_error(status: int, retry_after: float | None = 1) -> Response:
    note = f"(mock upstream, fail=status:{status})"
    headers = None if retry_after is None else {"retry-after": f"{retry_after:g}"}
    if status == 429:
        return _error(
            429,
            f"Rate limit reached {note}.",
            kind="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if status >= 500:
        return _error(status, f"The server had an error processing your request {note}.")
    return _error(status, f"Request refused {note}.")


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _EventStream:
    """Server-sent events, written one event per body message so clients see a real stream.

    ``abort`` drops the connection after the events; ``stall`` keeps it open, sending nothing
    more, until the client goes away (an upstream that hangs mid-stream).
    """

    def __init__(
        self,
        events: list[bytes],
        paced: range,
        delay: float,
        *,
        abort: bool,
        stall: bool = False,
    ) -> None:
        self.events, self.paced, self.delay, self.abort = events, paced, delay, abort
        self.stall = stall

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        for i, event in enumerate(self.events):
            if self.delay and i in self.paced:
                await asyncio.sleep(self.delay)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        if self.stall:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_wait_for_disconnect(receive), HANG_SECONDS)
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


def _json_reply(obj: dict[str, Any], kind: str) -> ASGIApp:
    if kind == "disconnect":
        return _drop_connection
    data = orjson.dumps(obj)
    if kind == "truncate":
        # Valid HTTP, invalid JSON: the non-stream counterpart of a truncated stream.
        return Response(data[: len(data) // 2], media_type=_JSON)
    return Response(data, media_type=_JSON)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
