"""What operators see of failures (issue 17), through the app and real fake upstreams: the
provider's own faults, retry signals, usage counters and the log lines."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import ADMIN, add_provider, app_client, last_request, make_settings, serve_asgi

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def health(client: httpx.AsyncClient) -> dict[str, dict[str, object]]:
    found = (await client.get("/v1/health/providers", headers=ADMIN)).json()["data"]
    return {p["id"]: p for p in found}


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (MockOptions(api_key="sk-the-right-key"), "credential rejected"),  # 401
        (MockOptions(fail="status:403"), "credential rejected"),
        (MockOptions(fail="status:404"), "model not found"),
    ],
)
async def test_a_providers_own_fault_falls_back_and_counts_against_it(
    tmp_path: Path, options: MockOptions, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="provider_router")
    broken, good = MockUpstream(options), MockUpstream()
    settings = make_settings(tmp_path, breaker_failure_threshold=1)
    async with (
        serve_asgi(broken.app()) as broken_url,
        serve_asgi(good.app()) as good_url,
        app_client(settings) as (app, client),
    ):
        await add_provider(client, "broken", f"{broken_url}/v1", ["m"], priority=5)
        await add_provider(client, "good", f"{good_url}/v1", ["m"])
        answer = await client.post("/v1/chat/completions", json=CHAT)
        row = await last_request(client, app)
        state = await health(client)

    assert answer.status_code == 200
    assert answer.headers["x-provider-router-provider"] == "good"
    assert [a["provider_id"] for a in row["attempt_details"]] == ["broken", "good"]
    assert problem in row["attempt_details"][0]["error"]
    circuit = state["broken"]["circuit"]
    assert isinstance(circuit, dict)
    assert circuit["state"] == "open" and circuit["problem"] == problem
    assert state["good"]["circuit"]["problem"] is None  # type: ignore[index]
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Provider 'broken' failed") and problem in m for m in messages)
    assert any(m.startswith("Circuit of provider 'broken' opened for") for m in messages)
    assert any("fell back to provider 'good' after 1 failed attempt(s) (broken)" in m
               for m in messages)  # fmt: skip


async def test_nothing_answers_a_rejected_key_502_names_provider_and_cause(
    tmp_path: Path,
) -> None:
    upstream = MockUpstream(MockOptions(api_key="sk-the-right-key"))
    async with (
        serve_asgi(upstream.app()) as url,
        app_client(make_settings(tmp_path)) as (
            app,
            client,
        ),
    ):
        await add_provider(client, "wrong-key", f"{url}/v1", ["m"])
        answer = await client.post("/v1/chat/completions", json=CHAT)
        row = await last_request(client, app)

    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["code"] == "all_providers_failed" and error["type"] == "upstream_error"
    assert "'wrong-key'" in error["message"] and "credential rejected" in error["message"]
    assert answer.headers["x-should-retry"] == "false"
    assert "sk-upstream-wrong-key" not in answer.text
    assert row["provider_id"] == "wrong-key"  # attributed to the provider that failed


async def test_a_503_that_cannot_heal_tells_sdks_not_to_retry(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await add_provider(client, "off", "http://127.0.0.1:9/v1", ["m"], enabled=False)
        answer = await client.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "no_provider_available"
    assert answer.headers["x-should-retry"] == "false"
    assert "retry-after" not in answer.headers


async def test_usage_counts_each_limit_set_and_is_null_without_limits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="provider_router")
    upstream = MockUpstream()
    async with (
        serve_asgi(upstream.app()) as url,
        app_client(make_settings(tmp_path)) as (
            _,
            client,
        ),
    ):
        await add_provider(client, "limited", f"{url}/v1", ["m"], limits={"rpm": 2}, priority=5)
        await add_provider(client, "free", f"{url}/v1", ["m"])
        statuses = [
            (await client.post("/v1/chat/completions", json=CHAT)).headers[
                "x-provider-router-provider"
            ]
            for _ in range(4)
        ]
        state = await health(client)
        detail = (await client.get("/v1/providers/limited", headers=ADMIN)).json()

    assert statuses == ["limited", "limited", "free", "free"]
    assert state["limited"]["usage"] == {"requests_last_minute": 2}
    assert state["free"]["usage"] is None  # not counted, so not shown as 0
    assert detail["state"]["usage"] == {"requests_last_minute": 2}
    skips = [
        r.getMessage() for r in caplog.records if "skipped: at its rate limit" in r.getMessage()
    ]
    # Two skips within the log interval: one line, the next one would say how many were held.
    assert len(skips) == 1 and skips[0].startswith("Provider 'limited' skipped")


async def test_failure_lines_are_rate_limited_per_provider(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="provider_router")
    upstream = MockUpstream(MockOptions(fail="status:500"))
    settings = make_settings(tmp_path, breaker_failure_threshold=100)
    async with serve_asgi(upstream.app()) as url, app_client(settings) as (app, client):
        await add_provider(client, "flaky", f"{url}/v1", ["m"])
        for _ in range(5):
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 502
        assert app.services is not None
        resilience = app.services.proxy.resilience
        now = resilience.log_clock()
        resilience.log_clock = lambda: now + 11  # the interval has passed
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 502

    lines = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("Provider 'flaky' failed")
    ]
    assert len(lines) == 2
    assert lines[1].endswith("(4 more like it in the last 10 s not logged)")
