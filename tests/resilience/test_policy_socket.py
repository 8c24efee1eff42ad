"""Each failure mode over real sockets: uvicorn runs the proxy and the fake upstreams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.app import ProviderRouterApp, create_app
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import (
    ADMIN,
    add_provider,
    eventually,
    free_port,
    last_request,
    make_settings,
    serve_asgi,
    sse_chunks,
)

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}
STREAM = {**CHAT, "stream": True}


@contextlib.asynccontextmanager
async def proxy(
    tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, ProviderRouterApp]]:
    app = create_app(make_settings(tmp_path, **settings))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client, app


@contextlib.asynccontextmanager
async def fakes(*options: MockOptions) -> AsyncIterator[list[tuple[str, MockUpstream]]]:
    async with contextlib.AsyncExitStack() as stack:
        found = []
        for option in options:
            upstream = MockUpstream(option)
            url = await stack.enter_async_context(serve_asgi(upstream.app()))
            found.append((f"{url}/v1", upstream))
        try:
            yield found
        finally:
            for _, upstream in found:
                upstream.release_hangs()


async def circuit(client: httpx.AsyncClient, provider_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (await client.get(f"/v1/providers/{provider_id}", headers=ADMIN)).json()
    return found["state"]["circuit"]  # type: ignore[no-any-return]


async def test_500_falls_back_and_counts_against_the_provider(tmp_path: Path) -> None:
    async with (
        fakes(MockOptions(fail="status:500"), MockOptions()) as [(bad, _), (good, _)],
        proxy(tmp_path, breaker_failure_threshold=2) as (client, app),
    ):
        await add_provider(client, "bad", bad, ["gpt-test"], priority=2)
        await add_provider(client, "good", good, ["gpt-test"], priority=1)
        response = await client.post("/v1/chat/completions", json=CHAT)
        row = await last_request(client, app)
        state = await circuit(client, "bad")

    assert response.status_code == 200
    assert response.headers["x-provider-router-provider"] == "good"
    assert [(a["provider_id"], a["status"]) for a in row["attempt_details"]] == [
        ("bad", "error"),
        ("good", "success"),
    ]
    assert (state["state"], state["recent_failures"]) == ("closed", 1)


async def test_429_with_retry_after_cools_down_for_that_long(tmp_path: Path) -> None:
    busy = MockOptions(fail="status:429", retry_after_s=90)
    async with (
        fakes(busy, MockOptions()) as [(busy_url, busy_fake), (good, _)],
        proxy(tmp_path) as (client, _app),
    ):
        await add_provider(client, "busy", busy_url, ["gpt-test"], priority=2)
        await add_provider(client, "good", good, ["gpt-test"], priority=1)
        first = await client.post("/v1/chat/completions", json=CHAT)
        state = await circuit(client, "busy")
        second = await client.post("/v1/chat/completions", json=CHAT)

    assert first.headers["x-provider-router-provider"] == "good"
    assert second.headers["x-provider-router-provider"] == "good"
    assert len(busy_fake.requests) == 1  # the second request skipped it
    assert state["state"] == "open"
    now_ms = state["last_error_at"]
    assert 85_000 <= state["cooldown_until"] - now_ms <= 91_000


async def test_429_without_retry_after_uses_the_rate_limit_cooldown(tmp_path: Path) -> None:
    busy = MockOptions(fail="status:429", retry_after_s=None)
    async with (
        fakes(busy) as [(busy_url, _)],
        proxy(tmp_path, breaker_rate_limit_cooldown_ms=20_000) as (client, _app),
    ):
        await add_provider(client, "busy", busy_url, ["gpt-test"])
        first = await client.post("/v1/chat/completions", json=CHAT)
        state = await circuit(client, "busy")
        second = await client.post("/v1/chat/completions", json=CHAT)

    assert first.status_code == 429
    assert 15 <= int(first.headers["retry-after"]) <= 20
    assert 15_000 <= state["cooldown_until"] - state["last_error_at"] <= 21_000
    assert second.status_code == 503
    assert 15 <= int(second.headers["retry-after"]) <= 20


async def test_a_refused_connection_is_retried_once_then_falls_back(tmp_path: Path) -> None:
    closed_port = free_port()  # nothing listens there
    async with fakes(MockOptions()) as [(good, _)], proxy(tmp_path) as (client, app):
        await add_provider(
            client, "down", f"http://127.0.0.1:{closed_port}/v1", ["gpt-test"], priority=2
        )
        await add_provider(client, "good", good, ["gpt-test"], priority=1)
        response = await client.post("/v1/chat/completions", json=CHAT)
        row = await last_request(client, app)

    assert response.status_code == 200
    tries = [(a["provider_id"], a["status"]) for a in row["attempt_details"]]
    assert tries == [("down", "error"), ("down", "error"), ("good", "success")]
    assert "could not connect" in row["attempt_details"][0]["error"]


async def test_hang_before_headers_hits_the_first_byte_timeout_and_falls_back(
    tmp_path: Path,
) -> None:
    async with (
        fakes(MockOptions(fail="hang"), MockOptions()) as [(hang, _), (good, _)],
        proxy(tmp_path) as (client, app),
    ):
        await add_provider(
            client, "hangs", hang, ["gpt-test"], priority=2, config={"firstByteTimeout": 300}
        )
        await add_provider(client, "good", good, ["gpt-test"], priority=1)
        response = await client.post("/v1/chat/completions", json=STREAM)
        row = await last_request(client, app)

    assert response.status_code == 200
    assert response.content.endswith(b"data: [DONE]\n\n")
    first, second = row["attempt_details"]
    assert (first["provider_id"], first["status"]) == ("hangs", "timeout")
    assert "first-byte timeout" in first["error"]
    assert second["status"] == "success"


async def test_hang_mid_stream_ends_with_an_error_event_recorded_as_timeout(
    tmp_path: Path,
) -> None:
    stalls = MockOptions(fail="stall", chunks=6)
    async with (
        fakes(stalls) as [(url, _)],
        proxy(tmp_path, breaker_failure_threshold=1) as (client, app),
    ):
        await add_provider(client, "stalls", url, ["gpt-test"], config={"idleTimeout": 300})
        response = await client.post("/v1/chat/completions", json=STREAM)
        row = await last_request(client, app)
        state = await circuit(client, "stalls")

    sent = sse_chunks(response.content, done=False)
    assert response.status_code == 200
    assert b'"content":"mock"' in response.content
    error = sent[-1]["error"]
    assert error["code"] == "stream_interrupted"
    assert "idle timeout" in error["message"]
    assert row["status"] == "error"
    assert row["attempt_details"][0]["status"] == "timeout"
    assert state["state"] == "open"  # a stalled stream is the provider's failure


async def test_a_truncated_stream_counts_as_a_provider_failure(tmp_path: Path) -> None:
    async with (
        fakes(MockOptions(fail="truncate", chunks=6)) as [(url, _)],
        proxy(tmp_path, breaker_failure_threshold=1) as (client, app),
    ):
        await add_provider(client, "cut", url, ["gpt-test"])
        response = await client.post("/v1/chat/completions", json=STREAM)
        row = await last_request(client, app)
        state = await circuit(client, "cut")

    assert b"stream_interrupted" in response.content
    assert not response.content.endswith(b"data: [DONE]\n\n")
    assert row["attempt_details"][0]["status"] == "error"
    assert state["state"] == "open"


async def test_slow_chunks_within_the_idle_timeout_are_relayed(tmp_path: Path) -> None:
    slow = MockOptions(chunks=4, chunk_delay_ms=100)
    async with fakes(slow) as [(url, _)], proxy(tmp_path) as (client, app):
        await add_provider(client, "slow", url, ["gpt-test"], config={"idleTimeout": 2000})
        response = await client.post("/v1/chat/completions", json=STREAM)
        row = await last_request(client, app)

    assert response.content.endswith(b"data: [DONE]\n\n")
    assert row["status"] == "success"


async def test_slow_chunks_past_the_total_timeout_end_with_an_error(tmp_path: Path) -> None:
    slow = MockOptions(chunks=8, chunk_delay_ms=100)
    async with fakes(slow) as [(url, _)], proxy(tmp_path) as (client, app):
        config = {"idleTimeout": 2000, "totalTimeout": 300}
        await add_provider(client, "slow", url, ["gpt-test"], config=config)
        response = await client.post("/v1/chat/completions", json=STREAM)
        row = await last_request(client, app)

    assert b"total timeout" in response.content
    assert not response.content.endswith(b"data: [DONE]\n\n")
    assert row["attempt_details"][0]["status"] == "timeout"


async def test_concurrent_requests_race_over_one_half_open_probe(tmp_path: Path) -> None:
    async with (
        fakes(MockOptions(latency_ms=300), MockOptions()) as [(a_url, a_fake), (b_url, _)],
        proxy(tmp_path, breaker_failure_threshold=1) as (client, app),
    ):
        await add_provider(client, "recovering", a_url, ["gpt-test"], priority=2)
        await add_provider(client, "standby", b_url, ["gpt-test"], priority=1)
        assert app.services is not None
        breaker = app.services.proxy.resilience.breakers.get("recovering")
        breaker.failure("down earlier")
        assert breaker.state == "open"
        breaker.opened_until = 0.0  # the cooldown is over: the next request is the probe

        answers = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=CHAT) for _ in range(8))
        )
        state = await circuit(client, "recovering")

    served = [r.headers["x-provider-router-provider"] for r in answers]
    assert all(r.status_code == 200 for r in answers)
    assert served.count("recovering") == 1
    assert served.count("standby") == 7
    assert len(a_fake.requests) == 1
    assert state["state"] == "closed"


async def test_client_leaving_before_the_first_byte_cancels_the_upstream(tmp_path: Path) -> None:
    async with (
        fakes(MockOptions(fail="hang")) as [(url, fake)],
        proxy(tmp_path, breaker_failure_threshold=1) as (client, app),
    ):
        await add_provider(client, "slow", url, ["gpt-test"])
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/chat/completions", json=CHAT, timeout=0.5)
        await eventually(
            lambda: fake.requests and not fake.faults.hanging, "the upstream saw the proxy hang up"
        )
        row = await last_request(client, app)
        state = await circuit(client, "slow")

    assert (row["status"], row["status_code"]) == ("client_closed", 499)
    assert row["attempt_details"][0]["status"] == "client_closed"
    assert (state["state"], state["recent_failures"]) == ("closed", 0)


async def test_a_probe_whose_client_leaves_during_the_retry_backoff_frees_the_probe(
    tmp_path: Path,
) -> None:
    closed_port = free_port()  # nothing listens there: a refused connection, then a backoff
    settings = {"retry_backoff_ms": 60_000, "breaker_failure_threshold": 1}
    async with proxy(tmp_path, **settings) as (client, app):
        await add_provider(client, "down", f"http://127.0.0.1:{closed_port}/v1", ["gpt-test"])
        assert app.services is not None
        breaker = app.services.proxy.resilience.breakers.get("down")
        breaker.failure("down earlier")
        assert breaker.state == "open"
        breaker.opened_until = 0.0  # the cooldown is over: the next request is the probe
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/chat/completions", json=CHAT, timeout=0.5)
        row = await last_request(client, app)
        held = breaker.probing

    assert row["status"] == "client_closed"
    assert not held  # else no request could ever probe this provider again


async def test_a_429_among_other_failures_is_still_a_502(tmp_path: Path) -> None:
    busy = MockOptions(fail="status:429", retry_after_s=30)
    async with (
        fakes(busy, MockOptions(fail="status:500")) as [(busy_url, _), (bad_url, _)],
        proxy(tmp_path) as (client, _app),
    ):
        await add_provider(client, "busy", busy_url, ["gpt-test"], priority=2)
        await add_provider(client, "bad", bad_url, ["gpt-test"], priority=1)
        response = await client.post("/v1/chat/completions", json=CHAT)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "all_providers_failed"


async def test_a_provider_first_byte_timeout_longer_than_the_read_timeout_is_kept(
    tmp_path: Path,
) -> None:
    # firstByteTimeout 3 s must win over the HTTP client's 150 ms read timeout.
    async with fakes(MockOptions(latency_ms=400)) as [(url, _)], proxy(tmp_path) as (client, _):
        config = {"timeout": 150, "firstByteTimeout": 3000}
        await add_provider(client, "slow", url, ["gpt-test"], config=config)
        response = await client.post("/v1/chat/completions", json=CHAT)

    assert response.status_code == 200, response.text


async def test_the_global_first_byte_timeout_longer_than_the_read_timeout_is_kept(
    tmp_path: Path,
) -> None:
    # The same through the settings: upstream.first_byte_timeout_ms 3 s over timeout_ms 150 ms.
    settings = {"upstream_timeout_ms": 150, "upstream_first_byte_timeout_ms": 3000}
    async with (
        fakes(MockOptions(latency_ms=400)) as [(url, _)],
        proxy(tmp_path, **settings) as (client, _),
    ):
        await add_provider(client, "slow", url, ["gpt-test"])
        response = await client.post("/v1/chat/completions", json=CHAT)

    assert response.status_code == 200, response.text
