"""Breakers, limits and the attempt cap through the app, in process (upstreams faked by respx)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from providers.base import ChatStream
from router.cli.main import main
from router.resilience.policy import write_circuit_changes
from router.settings import Settings
from tests.helpers import (
    ADMIN,
    TEST_SECRET_KEY,
    add_provider,
    app_client,
    backend_settings,
    make_settings,
)

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}


def completion(text: str = "hi") -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


async def circuit(client: httpx.AsyncClient, provider_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/providers/{provider_id}", headers=ADMIN)
    assert response.status_code == 200
    found: dict[str, Any] = response.json()["state"]["circuit"]
    return found


async def test_failures_open_the_circuit_and_requests_skip_the_provider(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, breaker_failure_threshold=2, breaker_cooldown_ms=60_000)
    async with app_client(settings) as (_, client):
        await add_provider(client, "flaky", "http://flaky.test/v1", ["gpt-test"], priority=2)
        await add_provider(client, "steady", "http://steady.test/v1", ["gpt-test"], priority=1)
        flaky = upstreams.post("http://flaky.test/v1/chat/completions").respond(500)
        upstreams.post("http://steady.test/v1/chat/completions").respond(json=completion())

        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert flaky.call_count == 2
        state = await circuit(client, "flaky")
        assert state["state"] == "open"
        assert state["cooldown_until"] is not None
        assert "HTTP 500" in state["last_error"]

        for _ in range(3):
            response = await client.post("/v1/chat/completions", json=CHAT)
            assert response.headers["x-provider-router-provider"] == "steady"
        assert flaky.call_count == 2  # skipped while open

        health = (await client.get("/v1/health/providers", headers=ADMIN)).json()["data"]
        assert {p["id"]: p["circuit"]["state"] for p in health} == {
            "flaky": "open",
            "steady": "closed",
        }

        reset = await client.post("/v1/providers/flaky/reset", headers=ADMIN)
        assert reset.status_code == 200
        assert reset.json()["circuit"]["state"] == "closed"
        await client.post("/v1/chat/completions", json=CHAT)
        assert flaky.call_count == 3

        assert (await client.post("/v1/providers/flaky/reset")).status_code == 401
        missing = await client.post("/v1/providers/nope/reset", headers=ADMIN)
        assert missing.status_code == 404
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}


async def test_all_circuits_open_is_503_with_retry_after(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, breaker_failure_threshold=1, breaker_cooldown_ms=42_000)
    async with app_client(settings) as (_, client):
        await add_provider(client, "only", "http://only.test/v1", ["gpt-test"])
        route = upstreams.post("http://only.test/v1/chat/completions").respond(502)
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 502
        response = await client.post("/v1/chat/completions", json=CHAT)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "providers_cooling_down"
    assert 40 <= int(response.headers["retry-after"]) <= 42
    assert route.call_count == 1


async def test_upstream_429_honours_retry_after_for_the_cooldown(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await add_provider(client, "busy", "http://busy.test/v1", ["gpt-test"])
        upstreams.post("http://busy.test/v1/chat/completions").respond(
            429, json={"error": {"message": "slow down"}}, headers={"retry-after": "120"}
        )
        first = await client.post("/v1/chat/completions", json=CHAT)
        state = await circuit(client, "busy")
        second = await client.post("/v1/chat/completions", json=CHAT)

    # The only provider is rate-limited upstream: the client is told so, in OpenAI's terms.
    assert first.status_code == 429
    assert first.json()["error"]["code"] == "rate_limit_exceeded"
    # A wait over a minute is capped at 60 s in Retry-After (what SDKs honour) and the SDK is
    # told not to sit it out; the message says how long it really is.
    assert first.headers["retry-after"] == "60"
    assert first.headers["x-should-retry"] == "false"
    assert re.search(r"retry in 1(19|20) s", first.json()["error"]["message"])
    assert state["state"] == "open"
    assert second.status_code == 503
    assert (second.headers["retry-after"], second.headers["x-should-retry"]) == ("60", "false")
    assert re.search(r"retry in 1(19|20) s", second.json()["error"]["message"])


async def test_client_errors_never_open_the_circuit(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, breaker_failure_threshold=1)
    async with app_client(settings) as (_, client):
        await add_provider(client, "strict", "http://strict.test/v1", ["gpt-test"])
        route = upstreams.post("http://strict.test/v1/chat/completions").respond(
            400, json={"error": {"message": "bad"}}
        )
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 400
        assert (await circuit(client, "strict"))["state"] == "closed"
    assert route.call_count == 3


async def test_provider_rpm_limit_skips_then_429s_with_retry_after(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await add_provider(
            client, "small", "http://small.test/v1", ["gpt-test"], priority=2, limits={"rpm": 2}
        )
        await add_provider(
            client, "spare", "http://spare.test/v1", ["gpt-test"], priority=1, limits={"rpm": 1}
        )
        small = upstreams.post("http://small.test/v1/chat/completions").respond(json=completion())
        spare = upstreams.post("http://spare.test/v1/chat/completions").respond(json=completion())
        served = [
            (await client.post("/v1/chat/completions", json=CHAT)).headers.get(
                "x-provider-router-provider"
            )
            for _ in range(3)
        ]
        limited = await client.post("/v1/chat/completions", json=CHAT)

    assert served == ["small", "small", "spare"]
    assert (small.call_count, spare.call_count) == (2, 1)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited.headers["retry-after"]) <= 60


async def test_provider_tpm_limit_counts_the_reported_usage(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await add_provider(client, "tokens", "http://t.test/v1", ["gpt-test"], limits={"tpm": 10})
        upstreams.post("http://t.test/v1/chat/completions").respond(json=completion())
        codes = [(await client.post("/v1/chat/completions", json=CHAT)).status_code for _ in "abc"]
        state = (await client.get("/v1/providers/tokens", headers=ADMIN)).json()["state"]

    assert codes == [200, 200, 429]  # 5 + 5 tokens reach the limit of 10
    assert state["usage"]["tokens_last_minute"] == 10


async def test_provider_rpd_limit(upstreams: respx.MockRouter, tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await add_provider(client, "daily", "http://d.test/v1", ["gpt-test"], limits={"rpd": 1})
        upstreams.post("http://d.test/v1/chat/completions").respond(json=completion())
        first = await client.post("/v1/chat/completions", json=CHAT)
        second = await client.post("/v1/chat/completions", json=CHAT)

    assert (first.status_code, second.status_code) == (200, 429)
    # A day's wait: Retry-After at its cap, no SDK retry, the real wait in the message.
    assert second.headers["retry-after"] == "60" and second.headers["x-should-retry"] == "false"
    said = re.search(r"retry in (\d+) s", second.json()["error"]["message"])
    assert said is not None and int(said[1]) > 86_000


async def test_attempts_are_capped_and_each_provider_tried_once(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, max_attempts=2)
    async with app_client(settings) as (_, client):
        routes = []
        for n in range(4):
            await add_provider(client, f"p{n}", f"http://p{n}.test/v1", ["gpt-test"], priority=n)
            routes.append(upstreams.post(f"http://p{n}.test/v1/chat/completions").respond(500))
        response = await client.post("/v1/chat/completions", json=CHAT)

    assert response.status_code == 502
    assert "All 2 attempt(s)" in response.json()["error"]["message"]
    assert [r.call_count for r in routes] == [0, 0, 1, 1]


async def test_a_disabled_provider_is_never_selected_even_when_all_others_fail(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await add_provider(
            client, "off", "http://off.test/v1", ["gpt-test"], priority=9, enabled=False
        )
        await add_provider(client, "on", "http://on.test/v1", ["gpt-test"])
        off = upstreams.post("http://off.test/v1/chat/completions").respond(json=completion())
        upstreams.post("http://on.test/v1/chat/completions").respond(500)
        response = await client.post("/v1/chat/completions", json=CHAT)

    assert response.status_code == 502
    assert off.call_count == 0


async def test_router_timeout_keys_are_validated_for_every_type(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        body = {
            "name": "bad",
            "type": "openai",
            "config": {"baseURL": "http://x.test/v1", "idleTimeout": 0},
        }
        bad = await client.post("/v1/providers", json=body, headers=ADMIN)
        body["config"] = {"baseURL": "http://x.test/v1", "idleTimeout": "soon"}
        wrong_kind = await client.post("/v1/providers", json=body, headers=ADMIN)
        body["config"] = {"baseURL": "http://x.test/v1", "idleTimeout": 500, "healthCheck": True}
        good = await client.post("/v1/providers", json=body, headers=ADMIN)

    assert bad.status_code == wrong_kind.status_code == 400
    assert "idleTimeout" in bad.json()["error"]["message"]
    assert good.status_code == 201


async def test_circuit_state_survives_a_snapshot_rebuild(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, breaker_failure_threshold=1)
    async with app_client(settings) as (_, client):
        await add_provider(client, "flaky", "http://flaky.test/v1", ["gpt-test"])
        upstreams.post("http://flaky.test/v1/chat/completions").respond(500)
        await client.post("/v1/chat/completions", json=CHAT)
        changed = await client.put(
            "/v1/providers/flaky", json={"description": "edited"}, headers=ADMIN
        )
        assert changed.status_code == 200
        state = await circuit(client, "flaky")

    assert state["state"] == "open"


async def test_client_key_rpm_and_tpm_limits_answer_429_with_retry_after(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await add_provider(client, "up", "http://up.test/v1", ["gpt-test"])
        route = upstreams.post("http://up.test/v1/chat/completions").respond(json=completion())
        keys = {}
        for name, fields in (("rpm", {"rpm_limit": 2}), ("tpm", {"tpm_limit": 10})):
            created = await client.post("/v1/keys", json={"name": name, **fields}, headers=ADMIN)
            assert created.status_code == 201, created.text
            keys[name] = {"authorization": f"Bearer {created.json()['key']}"}

        by_rpm = [
            await client.post("/v1/chat/completions", json=CHAT, headers=keys["rpm"])
            for _ in range(3)
        ]
        by_tpm = [
            await client.post("/v1/chat/completions", json=CHAT, headers=keys["tpm"])
            for _ in range(3)
        ]

    assert [r.status_code for r in by_rpm] == [200, 200, 429]
    assert [r.status_code for r in by_tpm] == [200, 200, 429]  # 5 + 5 tokens reach 10
    for limited in (by_rpm[-1], by_tpm[-1]):
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert route.call_count == 4  # a limited request never reaches an upstream


@pytest.fixture(params=["sqlite", "postgresql"])
def both_backends(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings on each backend; the CLI reads the same secret key from the environment."""
    monkeypatch.setenv("PROVIDER_ROUTER_SECRET_KEY", TEST_SECRET_KEY)
    return backend_settings(request, tmp_path, secret_key=TEST_SECRET_KEY)


async def test_circuit_state_is_recorded_for_the_cli_and_cleared_by_reset(
    upstreams: respx.MockRouter, both_backends: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = both_backends
    database = ["--database", settings.database_url]
    async with app_client(settings) as (app, client):
        await add_provider(client, "busy", "http://busy.test/v1", ["gpt-test"])
        await add_provider(client, "calm", "http://calm.test/v1", ["gpt-test"], priority=-1)
        upstreams.post("http://busy.test/v1/chat/completions").respond(
            429, json={"error": {"message": "slow down"}}, headers={"retry-after": "120"}
        )
        upstreams.post("http://calm.test/v1/chat/completions").respond(200, json=completion())
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert app.services is not None
        resilience = app.services.proxy.resilience
        assert await write_circuit_changes(app.services.db, resilience) == 1
        assert await write_circuit_changes(app.services.db, resilience) == 0  # nothing new
        assert await asyncio.to_thread(main, ["provider", "list", *database]) == 0
        listed_open = capsys.readouterr().out
        assert await asyncio.to_thread(main, ["provider", "show", "busy", "--json", *database]) == 0
        shown = orjson.loads(capsys.readouterr().out)["state"]["circuit"]

        reset = await client.post("/v1/providers/busy/reset", headers=ADMIN)
        assert reset.status_code == 200
        assert await write_circuit_changes(app.services.db, resilience) == 1
        assert await asyncio.to_thread(main, ["provider", "list", *database]) == 0
        listed_reset = capsys.readouterr().out

    busy_open = next(line for line in listed_open.splitlines() if line.startswith("busy"))
    assert "cooling down until" in busy_open
    calm = next(line for line in listed_open.splitlines() if line.startswith("calm"))
    assert "enabled" in calm and "cooling" not in calm
    assert shown["state"] == "open" and shown["cooldown_until"] > time.time() * 1000 + 100_000
    busy_reset = next(line for line in listed_reset.splitlines() if line.startswith("busy"))
    assert "enabled" in busy_reset and "cooling" not in busy_reset


async def test_the_server_records_circuit_changes_on_its_own(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, reload_interval_ms=20)
    async with app_client(settings) as (_, client):
        await add_provider(client, "busy", "http://busy.test/v1", ["gpt-test"])
        upstreams.post("http://busy.test/v1/chat/completions").respond(
            429, json={"error": {"message": "slow down"}}
        )
        await client.post("/v1/chat/completions", json=CHAT)
        for _ in range(200):
            with contextlib.closing(sqlite3.connect(settings.database_path)) as conn:
                row = conn.execute(
                    "SELECT circuit_state, cooldown_until FROM providers WHERE id = 'busy'"
                ).fetchone()
            if row[0] == "open":
                break
            await asyncio.sleep(0.01)

    assert row[0] == "open" and row[1] is not None


async def test_a_malformed_stream_options_is_a_400_and_never_blames_a_provider(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, breaker_failure_threshold=1)
    async with app_client(settings) as (_, client):
        await add_provider(client, "only", "http://only.test/v1", ["gpt-test"])
        route = upstreams.post("http://only.test/v1/chat/completions").respond(json=completion())
        bad = {**CHAT, "stream": True, "stream_options": "include_usage"}
        answers = [await client.post("/v1/chat/completions", json=bad) for _ in range(3)]
        state = await circuit(client, "only")

    assert [a.status_code for a in answers] == [400] * 3
    error = answers[0].json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "stream_options")
    assert route.call_count == 0
    assert (state["state"], state["recent_failures"]) == ("closed", 0)


async def test_an_adapter_bug_falls_back_without_blaming_the_provider(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, breaker_failure_threshold=1)
    async with app_client(settings) as (app, client):
        await add_provider(client, "buggy", "http://buggy.test/v1", ["gpt-test"], priority=2)
        await add_provider(client, "steady", "http://steady.test/v1", ["gpt-test"], priority=1)
        upstreams.post("http://steady.test/v1/chat/completions").respond(json=completion())
        assert app.services is not None
        adapter: Any = app.services.snapshots.adapter("buggy")

        async def crash(body: dict[str, Any], upstream_model: str) -> Any:
            raise KeyError("choices")  # say, set off by something odd in the client's request

        adapter.chat = crash
        answers = [await client.post("/v1/chat/completions", json=CHAT) for _ in range(2)]
        state = await circuit(client, "buggy")

    assert [a.headers["x-provider-router-provider"] for a in answers] == ["steady", "steady"]
    assert (state["state"], state["recent_failures"]) == ("closed", 0)


async def test_an_adapter_bug_mid_stream_ends_with_an_error_event(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    async with app_client(make_settings(tmp_path)) as (app, client):
        await add_provider(client, "buggy", "http://buggy.test/v1", ["gpt-test"])
        assert app.services is not None
        adapter: Any = app.services.snapshots.adapter("buggy")

        async def events() -> Any:
            yield b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
            raise KeyError("delta")

        async def stream(body: dict[str, Any], upstream_model: str, **_: Any) -> ChatStream:
            return ChatStream(events=events())

        adapter.chat_stream = stream
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})

    last = response.content.rstrip().rsplit(b"\n\n", 1)[-1]
    error = orjson.loads(last.removeprefix(b"data: "))["error"]
    assert error["code"] == "stream_interrupted"
    assert "adapter error KeyError" in error["message"]


async def test_a_connect_timeout_is_recorded_as_a_timeout_and_not_retried(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    async with app_client(make_settings(tmp_path)) as (app, client):
        await add_provider(client, "far", "http://far.test/v1", ["gpt-test"], priority=2)
        await add_provider(client, "steady", "http://steady.test/v1", ["gpt-test"], priority=1)
        far = upstreams.post("http://far.test/v1/chat/completions")
        far.side_effect = httpx.ConnectTimeout("connect timed out")
        upstreams.post("http://steady.test/v1/chat/completions").respond(json=completion())
        response = await client.post("/v1/chat/completions", json=CHAT)
        assert app.services is not None
        await app.services.recorder.flush()
        rows = await app.services.db.execute("SELECT provider_id, status FROM attempts ORDER BY n")

    assert response.status_code == 200
    assert [tuple(row) for row in rows] == [("far", "timeout"), ("steady", "success")]
