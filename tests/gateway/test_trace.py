"""The routing trace each request record carries: skipped candidates and why, in order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import ADMIN, add_provider, app_client, last_request, make_settings, serve_asgi

BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_an_open_circuit_and_a_rate_limit_are_recorded_as_skips(tmp_path: Path) -> None:
    upstream = MockUpstream(MockOptions())
    settings = make_settings(tmp_path, breaker_failure_threshold=1, connect_retries=0)
    async with serve_asgi(upstream.app()) as good, app_client(settings) as (app, client):
        await add_provider(client, "down", "http://127.0.0.1:1/v1", ["m"], priority=10)
        await add_provider(client, "capped", f"{good}/v1", ["m"], priority=5,
                           limits={"rpm": 1})  # fmt: skip
        await add_provider(client, "spare", f"{good}/v1", ["m"], priority=0)
        first = await client.post("/v1/chat/completions", json=BODY)
        assert first.headers["x-provider-router-provider"] == "capped"
        second = await client.post("/v1/chat/completions", json=BODY)
        assert second.headers["x-provider-router-provider"] == "spare"
        found = await last_request(client, app)

    trace = found["trace"]
    assert trace["candidates"] == ["down", "capped", "spare"]
    (down, down_reason, down_until), (capped, capped_reason, capped_until) = trace["skipped"]
    assert (down, down_reason, capped, capped_reason) == (
        "down", "circuit_open", "capped", "rate_limited"
    )  # fmt: skip
    assert down_until > found["created_at"] and capped_until > found["created_at"]
    assert [a["provider_id"] for a in found["attempt_details"]] == ["spare"]
    assert "disabled" not in trace


async def test_a_key_refused_the_model_is_traced_without_candidates(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (app, client):
        await add_provider(client, "p", "http://127.0.0.1:1/v1", ["m", "other"])
        created = await client.post(
            "/v1/keys", json={"name": "narrow", "models": ["other"]}, headers=ADMIN
        )
        key = created.json()["key"]
        refused = await client.post(
            "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {key}"}
        )
        assert refused.status_code == 403
        found = await last_request(client, app)
    assert found["trace"] == {"candidates": [], "skipped": [[None, "key_not_allowed", None]]}


async def test_a_request_refused_before_routing_has_no_trace(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (app, client):
        refused = await client.post("/v1/chat/completions", json={"model": "m"})
        assert refused.status_code == 400
        found = await last_request(client, app)
    assert found["trace"] is None
