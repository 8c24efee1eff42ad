"""Response limits and credential scrubbing over real sockets, against hostile raw servers.

Each server here misbehaves the way issue 16 found upstreams can: endless headers, a body far
over any sane size, a gzip bomb, an SSE event that never ends, an echo of the key it received.
The client is the one every adapter uses (``providers.http.UpstreamClient``), on the own
transport; every test runs on asyncio's loop and on uvloop (conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from providers.http import UpstreamClient
from router.redact import Scrubber
from router.transport.limits import ResponseLimits, ResponseTooLarge
from tests.transport.servers import RawServer, read_request

KEY = "sk-Q7x9LmP2w"  # 12 characters, the length a scrub-by-shape would not catch
Writer = asyncio.StreamWriter
Reply = Callable[[Writer], Awaitable[None]]


def serving(reply: Reply) -> RawServer:
    """A raw server that reads one request per connection and answers it with ``reply``."""

    async def handle(reader: asyncio.StreamReader, writer: Writer) -> None:
        if await read_request(reader) is None:
            return
        with contextlib.suppress(ConnectionError):
            await reply(writer)
            await writer.drain()

    return RawServer(handle)


@contextlib.asynccontextmanager
async def client_on(
    reply: Reply, limits: ResponseLimits | None = None, secrets: tuple[str, ...] = (KEY,)
) -> AsyncIterator[tuple[UpstreamClient, RawServer]]:
    async with serving(reply) as server:
        client = UpstreamClient(
            server.url,
            {"authorization": f"Bearer {KEY}"},
            httpx.Timeout(10),
            limits=limits,
            secrets=secrets,
        )
        try:
            yield client, server
        finally:
            await client.aclose()


async def endless(writer: Writer, head: bytes, piece: bytes, sent: list[int]) -> None:
    """Write ``head``, then ``piece`` until the client goes away; count what went out."""
    writer.write(head)
    while True:
        writer.write(piece)
        sent[0] += len(piece)
        await writer.drain()


# -- headers -----------------------------------------------------------------------------------


async def test_a_response_head_over_the_limit_fails_early_instead_of_growing() -> None:
    sent = [0]
    junk = b"X-Junk: " + b"a" * 1000 + b"\r\n"
    reply = lambda w: endless(w, b"HTTP/1.1 200 OK\r\n", junk, sent)  # noqa: E731
    async with client_on(reply, ResponseLimits(max_header_bytes=64 * 1024)) as (client, _):
        with pytest.raises(ResponseTooLarge, match=r"head is over the limit of 64 KiB"):
            await client.get("/")
    # The connection was dropped within a few reads of the limit, not at 64 MiB.
    assert sent[0] < 8 * 1024 * 1024


async def test_one_endless_header_line_is_bounded_too() -> None:
    sent = [0]
    reply = lambda w: endless(w, b"HTTP/1.1 200 OK\r\nX-Long: ", b"b" * 4096, sent)  # noqa: E731
    async with client_on(reply, ResponseLimits(max_header_bytes=16 * 1024)) as (client, _):
        with pytest.raises(ResponseTooLarge, match=r"upstream\.max_header_bytes"):
            await client.get("/")
    assert sent[0] < 8 * 1024 * 1024


async def test_headers_within_the_limit_pass() -> None:
    async def reply(writer: Writer) -> None:
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + headers + b"\r\nok")

    async with client_on(reply, ResponseLimits(max_header_bytes=64 * 1024)) as (client, _):
        response = await client.get("/")
    assert response.content == b"ok"
    assert response.headers["x-h99"] == "v" * 100


# -- bodies ------------------------------------------------------------------------------------


async def test_a_body_over_the_limit_fails_without_reading_it_all() -> None:
    sent = [0]
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n"
    )
    reply = lambda w: endless(w, head, b"x" * 65536, sent)  # noqa: E731
    limits = ResponseLimits(max_body_bytes=1024 * 1024)
    async with client_on(reply, limits) as (client, _):
        with pytest.raises(ResponseTooLarge, match=r"body is over the limit of 1 MiB"):
            await client.post("/chat/completions", b"{}")
    assert sent[0] < 16 * 1024 * 1024


async def test_a_gzip_bomb_stops_at_the_limit_after_decompression() -> None:
    bomb = gzip.compress(b"\0" * (256 * 1024 * 1024), compresslevel=1)
    assert len(bomb) < 2 * 1024 * 1024

    async def reply(writer: Writer) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb
        )

    limits = ResponseLimits(max_body_bytes=4 * 1024 * 1024)
    async with client_on(reply, limits) as (client, _):
        with pytest.raises(ResponseTooLarge, match=r"upstream\.max_body_bytes"):
            await client.post("/chat/completions", b"{}")


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        (b"gzip", gzip.compress),
        (b"deflate", zlib.compress),
        (b"deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
    ],
    ids=["gzip", "deflate", "raw-deflate"],
)
async def test_compressed_bodies_within_the_limit_are_decoded(
    coding: bytes, compress: Callable[[bytes], bytes]
) -> None:
    text = b'{"answer": "' + b"words " * 200_000 + KEY.encode() + b'"}'
    packed = compress(text)

    async def reply(writer: Writer) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: " + coding
            + b"\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed
        )  # fmt: skip

    async with client_on(reply) as (client, _):
        response = await client.get("/")
    assert "content-encoding" not in response.headers
    assert response.content == text.replace(KEY.encode(), b"[redacted]")


# -- streams -----------------------------------------------------------------------------------

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunked(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


async def read_stream(client: UpstreamClient, path: str = "/chat/completions") -> bytes:
    response = await client.post(path, b"{}", stream=True)
    try:
        return b"".join([part async for part in response.aiter_bytes()])
    finally:
        await response.aclose()


async def test_an_sse_event_that_never_ends_is_cut_at_the_event_limit() -> None:
    sent = [0]

    async def reply(writer: Writer) -> None:
        writer.write(SSE_HEAD + chunked(b'data: {"ok": 1}\n\n'))
        await endless(writer, chunked(b"data: "), chunked(b"x" * 16384), sent)

    limits = ResponseLimits(max_event_bytes=256 * 1024)
    async with client_on(reply, limits) as (client, _):
        response = await client.post("/chat/completions", b"{}", stream=True)
        received = []
        with pytest.raises(ResponseTooLarge, match=r"an event of the stream is over .* 256 KiB"):
            async for part in response.aiter_bytes():
                received.append(part)
        await response.aclose()
    # The complete first event came through before the endless one was refused.
    assert b"".join(received).startswith(b'data: {"ok": 1}\n\n')
    assert sent[0] < 16 * 1024 * 1024


async def test_a_long_stream_of_small_events_is_not_bounded_as_a_whole() -> None:
    event = b'data: {"choices": [{"delta": {"content": "' + b"z" * 100 + b'"}}]}\r\n\r\n'

    async def reply(writer: Writer) -> None:
        writer.write(SSE_HEAD + b"".join(chunked(event * 10) for _ in range(300)))
        writer.write(b"0\r\n\r\n")

    limits = ResponseLimits(max_body_bytes=64 * 1024, max_event_bytes=4096)
    async with client_on(reply, limits) as (client, _):
        body = await read_stream(client)
    assert len(body) == len(event) * 3000 > 64 * 1024


async def test_an_event_boundary_split_between_two_pieces_still_counts() -> None:
    # Each event is 3000 bytes; the blank line ending it arrives split across two chunks.
    event = b"data: " + b"e" * 2992 + b"\n"

    async def reply(writer: Writer) -> None:
        writer.write(SSE_HEAD)
        for _ in range(20):
            writer.write(chunked(event))
            await writer.drain()
            await asyncio.sleep(0.001)
            writer.write(chunked(b"\n"))
        writer.write(b"0\r\n\r\n")

    async with client_on(reply, ResponseLimits(max_event_bytes=4096)) as (client, _):
        body = await read_stream(client)
    assert body.count(b"\n\n") == 20


async def test_a_newline_delimited_json_line_is_bounded_per_line() -> None:
    sent = [0]
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n"
    )

    async def reply(writer: Writer) -> None:
        writer.write(head + chunked(b'{"done": false}\n' * 100))
        await endless(writer, b"", chunked(b"y" * 8192), sent)

    async with client_on(reply, ResponseLimits(max_event_bytes=64 * 1024)) as (client, _):
        with pytest.raises(ResponseTooLarge, match=r"upstream\.max_event_bytes"):
            await read_stream(client, "/api/chat")


# -- scrubbing ---------------------------------------------------------------------------------


async def test_a_key_echoed_in_a_body_and_a_header_is_scrubbed() -> None:
    async def reply(writer: Writer) -> None:
        body = b'{"error": {"message": "Incorrect API key provided: ' + KEY.encode() + b'."}}'
        writer.write(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nX-Echo: "
            + KEY.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )  # fmt: skip

    async with client_on(reply) as (client, _):
        response = await client.get("/models")
    assert response.status_code == 401
    assert KEY.encode() not in response.content
    assert b"Incorrect API key provided: [redacted]." in response.content
    assert response.headers["x-echo"] == "[redacted]"


@pytest.mark.parametrize("cut", [1, 3, 6, 11])
async def test_a_key_split_across_stream_chunks_is_scrubbed(cut: int) -> None:
    key = KEY.encode()
    event = b'data: {"error": {"message": "bad key ' + key + b'"}}\n\n'
    at = event.index(key) + cut

    async def reply(writer: Writer) -> None:
        writer.write(SSE_HEAD + chunked(b'data: {"n": 1}\n\n') + chunked(event[:at]))
        await writer.drain()
        await asyncio.sleep(0.05)  # two reads on the client's side
        writer.write(chunked(event[at:]) + chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    async with client_on(reply) as (client, _):
        body = await read_stream(client)
    assert key not in body
    assert body == (
        b'data: {"n": 1}\n\ndata: {"error": {"message": "bad key [redacted]"}}\n\ndata: [DONE]\n\n'
    )


async def test_a_prefix_of_the_key_that_is_not_the_key_is_given_back() -> None:
    async def reply(writer: Writer) -> None:
        writer.write(SSE_HEAD + chunked(b"data: sk-Q7") + chunked(b"x\n\n") + b"0\r\n\r\n")

    async with client_on(reply) as (client, _):
        assert await read_stream(client) == b"data: sk-Q7x\n\n"


def test_the_scrubber_ignores_placeholder_keys_and_catches_json_escaped_ones() -> None:
    assert not Scrubber(["ollama", "EMPTY"])  # no real key is that short
    scrubber = Scrubber(["abc/def\\ghi"])
    assert scrubber.bytes(b'{"k": "abc/def\\\\ghi"}') == b'{"k": "[redacted]"}'
    assert scrubber.text("key abc/def\\ghi!") == "key [redacted]!"
