"""Hostile upstreams against the real gateway (uvicorn on loopback): answers over the response
limits fail their attempt as ``upstream_response_too_large``, fall back before the first byte,
end a stream with the error event after it, and never stall other requests (issue 16, item 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router.app import create_app
from router.mock.upstream import MockUpstream
from tests.helpers import ADMIN, add_provider, last_request, make_settings, serve_asgi, sse_data
from tests.transport.servers import RawServer, read_request

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}
Writer = asyncio.StreamWriter
Reply = Callable[[Writer], Awaitable[None]]
MiB = 1024 * 1024


class Hostile(RawServer):
    """Answers every request with ``reply``; counts the bytes it managed to send."""

    def __init__(self, reply: Callable[[Hostile, Writer], Awaitable[None]]) -> None:
        async def handle(reader: asyncio.StreamReader, writer: Writer) -> None:
            while await read_request(reader) is not None:
                with contextlib.suppress(ConnectionError):
                    await reply(self, writer)
                    await writer.drain()

        super().__init__(handle)
        self.sent = 0

    async def forever(self, writer: Writer, piece: bytes) -> None:
        while True:
            writer.write(piece)
            self.sent += len(piece)
            await writer.drain()


async def huge_json(server: Hostile, writer: Writer) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2147483648\r\n\r\n" + b'{"choices": [{"message": {"content": "'
    )
    await server.forever(writer, b"a" * 65536)


_BOMB = gzip.compress(b" " * (64 * MiB), compresslevel=1)


async def gzip_bomb(server: Hostile, writer: Writer) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(_BOMB) + _BOMB
    )
    server.sent += len(_BOMB)


async def endless_headers(server: Hostile, writer: Writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n")
    await server.forever(writer, b"X-Junk: " + b"j" * 4000 + b"\r\n")


def chunked(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


_FIRST = b'data: {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}\n\n'  # noqa: E501
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


async def endless_first_event(server: Hostile, writer: Writer) -> None:
    writer.write(_SSE_HEAD + chunked(b"data: "))
    await server.forever(writer, chunked(b"x" * 65536))


async def endless_second_event(server: Hostile, writer: Writer) -> None:
    writer.write(_SSE_HEAD + chunked(_FIRST) + chunked(b'data: {"choices": "'))
    await server.forever(writer, chunked(b"x" * 65536))


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(make_settings(tmp_path, **settings))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client, app


LIMITS = {"upstream_max_body_bytes": 2 * MiB, "upstream_max_event_bytes": 256 * 1024}


@pytest.mark.parametrize(
    ("reply", "stream", "setting"),
    [
        (huge_json, False, "upstream.max_body_bytes"),
        (gzip_bomb, False, "upstream.max_body_bytes"),
        (endless_headers, False, "upstream.max_header_bytes"),
        (endless_first_event, True, "upstream.max_event_bytes"),
    ],
    ids=["2GiB-json", "gzip-bomb", "endless-headers", "endless-first-event"],
)
async def test_an_answer_over_a_limit_falls_back_before_the_first_byte(
    tmp_path: Path,
    reply: Callable[[Hostile, Writer], Awaitable[None]],
    stream: bool,
    setting: str,
) -> None:
    healthy = MockUpstream()
    async with (
        Hostile(reply) as hostile,
        serve_asgi(healthy.app()) as healthy_url,
        gateway(tmp_path, **LIMITS) as (client, app),
    ):
        await add_provider(client, "hostile", f"{hostile.url}/v1", ["gpt-test"], priority=10)
        await add_provider(client, "healthy", f"{healthy_url}/v1", ["gpt-test"], priority=1)
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        row = await last_request(client, app)

    assert response.status_code == 200, response.text
    assert response.headers["x-provider-router-provider"] == "healthy"
    if stream:
        assert sse_data(response.content)[-1] == "[DONE]"
    first = row["attempt_details"][0]
    assert (first["provider_id"], first["status"]) == ("hostile", "error")
    assert setting in first["error"]
    # The hostile upstream was cut off within a few MiB, not read to its end.
    assert hostile.sent < 32 * MiB


async def test_with_no_provider_left_the_client_gets_upstream_response_too_large(
    tmp_path: Path,
) -> None:
    async with Hostile(huge_json) as hostile, gateway(tmp_path, **LIMITS) as (client, _):
        await add_provider(client, "hostile", f"{hostile.url}/v1", ["gpt-test"])
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_response_too_large"
    assert "over the limit of 2 MiB (upstream.max_body_bytes)" in error["message"]


async def test_an_endless_event_mid_stream_ends_it_with_the_error_event_and_stalls_nothing(
    tmp_path: Path,
) -> None:
    async with Hostile(endless_second_event) as hostile, gateway(tmp_path) as (client, app):
        await add_provider(client, "hostile", f"{hostile.url}/v1", ["gpt-test"])
        latencies: list[float] = []
        done = asyncio.Event()

        async def ping() -> None:
            while not done.is_set():
                started = time.perf_counter()
                assert (await client.get("/health")).status_code == 200
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)

        pinger = asyncio.ensure_future(ping())
        try:
            response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        finally:
            done.set()
            await pinger
        row = await last_request(client, app)
        provider = (await client.get("/v1/providers/hostile", headers=ADMIN)).json()

    # The default 1 MiB event limit ends the stream: the first event, then the error event.
    events = sse_data(response.content)
    assert events[0] == _FIRST.decode()[len("data: ") : -2]
    error = orjson.loads(events[-1])["error"]
    assert error["code"] == "upstream_response_too_large"
    assert "upstream.max_event_bytes" in error["message"]
    assert "[DONE]" not in events
    assert (row["status"], row["status_code"]) == ("error", 502)
    assert hostile.sent < 32 * MiB
    # Other requests were served meanwhile (before the fix: seconds, growing with the event).
    assert latencies and max(latencies) < 1.0, latencies
    assert provider["id"] == "hostile"
