"""Slow and idle clients are timed out, and open connections are capped (issue 16.3).

Every test talks to a real uvicorn server on a loopback socket, run as ``serve`` runs it
(:class:`router.connections.ClientServer` with its protocol), and one runs ``serve`` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from router.app import create_app
from router.connections import ClientLimits, ClientServer, configure
from router.mock.upstream import MockUpstream
from router.server import fd_warning
from router.settings import Settings
from tests.helpers import (
    add_provider,
    free_port,
    last_request,
    make_settings,
    serve_asgi,
    start,
    wait_until_up,
)

CHAT = orjson.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, limits: ClientLimits
) -> AsyncIterator[tuple[str, int, httpx.AsyncClient, Any]]:
    """The app under ``ClientServer`` with ``limits``, a fake upstream behind it; yields the
    URL, the port, a client and the app."""
    upstream = MockUpstream()
    app = create_app(make_settings(tmp_path))

    def server(config: uvicorn.Config) -> uvicorn.Server:
        return ClientServer(configure(config, limits))

    async with (
        serve_asgi(upstream.app()) as fake,
        serve_asgi(app, server_factory=server) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        await add_provider(client, "mock", f"{fake}/v1", ["gpt-test"])
        yield url, int(url.rsplit(":", 1)[1]), client, app


def head(port: int, length: int = len(CHAT)) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def trickle(port: int, data: bytes, every_s: float) -> tuple[float, bytes]:
    """Send ``data`` a byte every ``every_s`` (the whole of it at most); return how long the
    server kept the connection open and what it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    answer = b""

    async def send_slowly() -> None:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every_s)
        await asyncio.sleep(3600)

    sender = asyncio.create_task(send_slowly())
    try:
        while chunk := await reader.read(65536):
            answer += chunk
    except ConnectionError:
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
    return time.monotonic() - started, answer


async def test_heads_sent_a_byte_at_a_time_are_closed_at_the_head_limit(tmp_path: Path) -> None:
    limits = ClientLimits(header_timeout_s=1.0, body_timeout_s=30.0)
    async with gateway(tmp_path, limits) as (_, port, client, _app):
        slow = [trickle(port, head(port), 0.5) for _ in range(20)]
        results = await asyncio.wait_for(asyncio.gather(*slow), 20)
        # The server still answers everyone else.
        ok = await client.post("/v1/chat/completions", content=CHAT,
                               headers={"content-type": "application/json"})  # fmt: skip
    assert ok.status_code == 200
    for held, answer in results:
        # The head would take a minute at this pace; the limit is 1 s (a sweep every 100 ms).
        assert 0.9 < held < 5, held
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert b'"request_timeout"' in answer


async def test_a_connection_that_sends_nothing_is_closed_at_the_head_limit(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, ClientLimits(header_timeout_s=1.0)) as (_, port, _client, _app):
        held, answer = await asyncio.wait_for(trickle(port, b"", 1), 20)
    assert 0.9 < held < 5
    assert answer.startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("case", ["trickled body", "content-length larger than the body"])
async def test_a_late_body_is_cut_at_the_body_limit(tmp_path: Path, case: str) -> None:
    limits = ClientLimits(header_timeout_s=1.0, body_timeout_s=1.5)
    async with gateway(tmp_path, limits) as (_, port, client, app):
        if case == "trickled body":
            # The head at once, then the body a byte every 500 ms (about 40 s for all of it).
            held, answer = await asyncio.wait_for(trickle_body(port), 20)
        else:
            held, answer = await asyncio.wait_for(short_body(port), 20)
        row = await last_request(client, app)
    assert 1.4 < held < 6, held
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert b"server.body_timeout_ms" in answer
    # The endpoint saw the client gone, and recorded it; nothing went upstream.
    assert row["status"] == "client_closed"
    assert row["attempts"] == 0


async def trickle_body(port: int) -> tuple[float, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head(port))
    await writer.drain()

    async def send_slowly() -> None:
        for i in range(len(CHAT)):
            writer.write(CHAT[i : i + 1])
            await asyncio.sleep(0.5)

    sender = asyncio.create_task(send_slowly())
    started = time.monotonic()
    try:
        answer = await reader.read()
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
    return time.monotonic() - started, answer


async def short_body(port: int) -> tuple[float, bytes]:
    """Announce a body of 1,000 bytes, send 10, then wait."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head(port, 1000) + CHAT[:10])
    await writer.drain()
    started = time.monotonic()
    answer = await reader.read()
    writer.close()
    return time.monotonic() - started, answer


async def test_a_keep_alive_connection_serves_request_after_request(tmp_path: Path) -> None:
    limits = ClientLimits(header_timeout_s=1.0, body_timeout_s=1.0)
    async with gateway(tmp_path, limits) as (_, port, _client, _app):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        statuses = []
        for _ in range(3):
            writer.write(head(port) + CHAT)
            await writer.drain()
            status = await reader.readline()
            statuses.append(status.split()[1])
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            # Slower than either limit between requests: idle time is not a late head.
            await asyncio.sleep(1.5)
        writer.close()
    assert statuses == [b"200"] * 3


async def test_connections_past_the_cap_get_503_and_are_closed(tmp_path: Path) -> None:
    limits = ClientLimits(header_timeout_s=30.0, max_connections=5)
    async with gateway(tmp_path, limits) as (url, port, _client, _app):
        # httpx's client above holds one keep-alive connection; four more fill the cap.
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        refused_reader, refused_writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(refused_reader.read(), 10)
        refused_writer.close()
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=url) as fresh:
            after = await fresh.get("/health")
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
    assert b"retry-after: 1" in answer
    body = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "gateway_overloaded"
    assert after.status_code == 200


async def test_serve_applies_the_limits_from_its_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[server]\nheader_timeout_ms = 1000\nbody_timeout_ms = 1000\n")
    port = free_port()
    server = start("serve", "--config", str(config), "--port", str(port),
                   "--database", f"sqlite:///{tmp_path / 'router.db'}", cwd=tmp_path)  # fmt: skip
    try:
        await asyncio.to_thread(wait_until_up, f"http://127.0.0.1:{port}/health", server)
        held, answer = await asyncio.wait_for(trickle(port, head(port), 0.5), 20)
    finally:
        server.terminate()
        server.wait(20)
        if server.stdout:
            server.stdout.close()
    assert 0.9 < held < 5, held
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_an_open_file_limit_below_the_connection_cap_is_warned_about() -> None:
    settings = Settings(max_client_connections=1000)
    warning = fd_warning(settings, soft_limit=1024)
    assert warning is not None and "server.max_connections" in warning and "1128" in warning
    assert fd_warning(settings, soft_limit=4096) is None
