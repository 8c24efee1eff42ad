"""Streaming, disconnects and timeouts over real sockets: uvicorn runs the proxy and the fakes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from router.app import create_app
from router.gateway.handler import Receive, Scope, Send
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import add_provider, last_request, make_settings, serve_asgi, sse_chunks

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}


@contextlib.asynccontextmanager
async def proxy(tmp_path: Path) -> AsyncIterator[tuple[str, httpx.AsyncClient, Any]]:
    app = create_app(make_settings(tmp_path))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield url, client, app


async def test_stream_chunks_reach_the_client_as_they_arrive(tmp_path: Path) -> None:
    upstream = MockUpstream(MockOptions(chunks=5, chunk_delay_ms=200))
    async with serve_asgi(upstream.app()) as mock_url, proxy(tmp_path) as (_, client, app):
        await add_provider(client, "mock", f"{mock_url}/v1", ["gpt-test"])
        arrivals: list[tuple[float, bytes]] = []
        body = {**CHAT, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    arrivals.append((time.monotonic(), line.encode()))
        row = await last_request(client, app)

    contents = [a for a in arrivals if b'"content"' in a[1] and b'"content":""' not in a[1]]
    assert len(contents) == 5
    # Five chunks 200 ms apart: relayed as they come, the first is ~800 ms ahead of the last.
    assert contents[-1][0] - contents[0][0] > 0.5
    assert arrivals[-1][1] == b"data: [DONE]"
    assert (row["status"], row["stream"], row["completion_tokens"]) == ("success", True, 5)
    assert row["ttft_ms"] < row["latency_ms"] - 500


async def test_client_disconnect_closes_the_upstream_request_at_once(tmp_path: Path) -> None:
    upstream_gone = asyncio.Event()
    chunks_sent = 0

    async def slow_stream(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal chunks_sent
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            upstream_gone.set()

        watcher = asyncio.ensure_future(watch())
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        event = {"choices": [{"index": 0, "delta": {"content": "tick"}, "finish_reason": None}]}
        try:
            for _ in range(100):
                body = b"data: " + orjson.dumps(event) + b"\n\n"
                await send({"type": "http.response.body", "body": body, "more_body": True})
                chunks_sent += 1
                await asyncio.sleep(0.1)
                if upstream_gone.is_set():
                    return
        finally:
            watcher.cancel()

    async with serve_asgi(slow_stream) as up_url, proxy(tmp_path) as (_, client, app):
        await add_provider(client, "slow", f"{up_url}/v1", ["gpt-test"])
        async with client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}
        ) as response:
            async for line in response.aiter_lines():
                if "tick" in line:
                    break
        # Leaving the block closed our connection to the proxy mid-stream.
        await asyncio.wait_for(upstream_gone.wait(), timeout=3)
        row = await last_request(client, app)

    assert chunks_sent < 50
    assert (row["status"], row["status_code"]) == ("client_closed", 499)


async def test_an_upstream_that_hangs_times_out_and_falls_back(tmp_path: Path) -> None:
    hanging = MockUpstream(MockOptions(fail="hang"))
    healthy = MockUpstream(MockOptions())
    async with (
        serve_asgi(hanging.app()) as hang_url,
        serve_asgi(healthy.app()) as ok_url,
        proxy(tmp_path) as (_, client, app),
    ):
        await add_provider(
            client, "hangs", f"{hang_url}/v1", ["gpt-test"], priority=2, config={"timeout": 300}
        )
        await add_provider(client, "works", f"{ok_url}/v1", ["gpt-test"], priority=1)

        started = time.monotonic()
        response = await client.post("/v1/chat/completions", json=CHAT)
        elapsed = time.monotonic() - started
        row = await last_request(client, app)
        hanging.release_hangs()

    assert response.status_code == 200
    assert response.headers["x-provider-router-provider"] == "works"
    assert elapsed < 5
    first, second = row["attempt_details"]
    assert first["provider_id"] == "hangs"
    assert "no answer in time" in first["error"]
    assert second["status"] == "success"


async def test_an_upstream_connection_cut_mid_stream_reaches_the_client_as_an_error(
    tmp_path: Path,
) -> None:
    broken = MockUpstream(MockOptions(fail="disconnect", chunks=6))
    async with serve_asgi(broken.app()) as up_url, proxy(tmp_path) as (_, client, app):
        await add_provider(client, "broken", f"{up_url}/v1", ["gpt-test"])
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        row = await last_request(client, app)

    events = sse_chunks(response.content, done=False)
    assert response.status_code == 200
    assert b'"content":"mock"' in response.content
    assert events[-1]["error"]["code"] == "stream_interrupted"
    assert (row["status"], row["status_code"]) == ("error", 502)
    assert row["attempt_details"][0]["status"] == "error"


async def test_a_stream_ending_without_done_is_a_failure_not_a_clean_end(tmp_path: Path) -> None:
    truncating = MockUpstream(MockOptions(fail="truncate", chunks=6))
    async with serve_asgi(truncating.app()) as up_url, proxy(tmp_path) as (_, client, app):
        await add_provider(client, "cut", f"{up_url}/v1", ["gpt-test"])
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        row = await last_request(client, app)

    assert not response.content.endswith(b"data: [DONE]\n\n")
    assert b"stream_interrupted" in response.content
    assert row["status"] == "error"
    assert "[DONE]" in row["error"]


async def test_upstream_never_sees_the_client_key_over_the_wire(tmp_path: Path) -> None:
    upstream = MockUpstream(MockOptions(api_key="sk-upstream-mock"))
    async with serve_asgi(upstream.app()) as up_url, proxy(tmp_path) as (_, client, _app):
        await add_provider(client, "mock", f"{up_url}/v1", ["gpt-test"])
        headers = {"authorization": "Bearer sk-client-own-key"}
        ok = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
        streamed = await client.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
        )

    assert ok.status_code == streamed.status_code == 200
    seen = [r.headers.get("authorization") for r in upstream.requests]
    assert seen == ["Bearer sk-upstream-mock", "Bearer sk-upstream-mock"]
