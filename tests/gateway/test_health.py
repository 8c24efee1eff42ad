"""Health checks against the fake upstream over real sockets, in the background and on demand."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from router.cli.main import main
from router.gateway.health import HealthChecker, wants_check
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import ADMIN, add_provider, app_client, eventually, free_port, make_settings
from tests.helpers import serve_asgi as serve


def health_rows(path: Path) -> dict[str, tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT id, health_status, health_latency_ms, health_error, last_health_check"
            " FROM providers"
        ).fetchall()
    finally:
        conn.close()
    return {row[0]: row[1:] for row in rows}


def test_local_types_are_checked_by_default_paid_ones_only_when_asked() -> None:
    assert wants_check("ollama", {}) and wants_check("lm-studio", {})
    assert not wants_check("openai", {}) and not wants_check("anthropic", {})
    assert wants_check("openai", {"healthCheck": True})
    assert not wants_check("ollama", {"healthCheck": False})


async def test_a_round_records_results_and_closes_a_recovered_circuit(tmp_path: Path) -> None:
    upstream = MockUpstream(MockOptions())
    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = make_settings(tmp_path, health_check_interval_ms=0)
    async with serve(upstream.app()) as url, app_client(settings) as (app, client):
        on = {"healthCheck": True}
        await add_provider(client, "up", f"{url}/v1", ["gpt-test"], config=on)
        await add_provider(client, "down", dead, ["gpt-test"], config=on)
        await add_provider(client, "paid", f"{url}/v1", ["gpt-test"])  # not probed
        await add_provider(client, "off", f"{url}/v1", ["gpt-test"], config=on, enabled=False)
        assert app.services is not None
        resilience = app.services.proxy.resilience
        for provider_id in ("up", "down"):
            breaker = resilience.breakers.get(provider_id)
            for _ in range(5):
                breaker.failure("earlier trouble")
            assert breaker.state == "open"
        checker = HealthChecker(app.services.db, app.services.snapshots, resilience, 60)

        results = await checker.check_round()
        listed = (await client.get("/v1/health/providers", headers=ADMIN)).json()["data"]

    assert sorted((r.provider_id, r.result.ok) for r in results) == [("down", False), ("up", True)]
    assert [r.path for r in upstream.requests] == ["/v1/models"]
    assert resilience.breakers.get("up").state == "closed"
    assert resilience.breakers.get("down").state == "open"
    rows = health_rows(settings.database_path)
    assert rows["up"][0] == "ok" and rows["up"][1] is not None and rows["up"][3]
    assert rows["down"][0] == "error" and "could not connect" in rows["down"][2]
    assert rows["paid"] == rows["off"] == (None, None, None, None)
    by_id = {p["id"]: p for p in listed}
    assert by_id["up"]["health_check"]["status"] == "ok"
    assert by_id["up"]["circuit"]["state"] == "closed"


async def test_the_background_task_probes_on_its_interval(tmp_path: Path) -> None:
    upstream = MockUpstream(MockOptions())
    settings = make_settings(tmp_path, health_check_interval_ms=20)
    async with serve(upstream.app()) as url, app_client(settings) as (_, client):
        await add_provider(client, "up", f"{url}/v1", ["gpt-test"], config={"healthCheck": True})
        await eventually(lambda: len(upstream.requests) >= 2, "two probes reached the upstream")
        detail = (await client.get("/v1/health/providers", headers=ADMIN)).json()["data"][0]

    assert len(upstream.requests) >= 2
    assert detail["health_check"]["status"] == "ok"


async def test_cli_provider_test_probes_and_records_without_a_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream = MockUpstream(MockOptions())
    settings = make_settings(tmp_path, health_check_interval_ms=0)
    async with serve(upstream.app()) as url:
        async with app_client(settings) as (_, client):
            await add_provider(client, "up", f"{url}/v1", ["gpt-test"])
            await add_provider(client, "down", f"http://127.0.0.1:{free_port()}/v1", ["gpt-test"])
        database = settings.database_url
        test = ["provider", "test", "--database", database]
        ok = await asyncio.to_thread(main, [*test, "up"])
        printed_ok = capsys.readouterr().out
        failed = await asyncio.to_thread(main, [*test, "--all"])
        printed_all = capsys.readouterr().out
        unknown = await asyncio.to_thread(main, [*test, "nope"])
        printed_unknown = capsys.readouterr().err

    assert (ok, failed, unknown) == (0, 1, 1)
    assert "up: ok in" in printed_ok
    assert "down" in printed_all and "FAILED" in printed_all
    assert "nope" in printed_unknown
    assert health_rows(settings.database_path)["down"][0] == "error"


async def test_reset_needs_the_admin_token(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await add_provider(client, "p", "http://p.test/v1", ["gpt-test"])
        response = await client.post("/v1/providers/p/reset")
        listed = await client.get("/v1/health/providers")

    assert response.status_code == listed.status_code == 401
    assert isinstance(response.json()["error"], dict)


async def test_background_checks_probe_a_providers_default_model(tmp_path: Path) -> None:
    # Like `provider test`: a type that cannot list its models is asked for its default one.
    settings = make_settings(tmp_path, health_check_interval_ms=0)
    async with app_client(settings) as (app, client):
        await add_provider(
            client, "p", "http://p.test/v1", ["a-model"], config={"healthCheck": True}
        )
        linked = await client.post(
            "/v1/providers/p/models",
            json={"model_id": "b-model", "upstream_model": "b-upstream", "is_default": True},
            headers=ADMIN,
        )
        assert linked.status_code == 201, linked.text
        assert app.services is not None
        await app.services.snapshots.rebuild()
        checker = HealthChecker(
            app.services.db, app.services.snapshots, app.services.proxy.resilience, 60
        )
        targets = checker.targets()

    assert [(pid, model) for pid, _, model in targets] == [("p", "b-upstream")]


async def test_the_test_endpoint_records_its_probe_and_closes_a_recovered_circuit(
    tmp_path: Path,
) -> None:
    upstream = MockUpstream(MockOptions())
    settings = make_settings(tmp_path, health_check_interval_ms=0)
    async with serve(upstream.app()) as url, app_client(settings) as (app, client):
        await add_provider(client, "up", f"{url}/v1", ["gpt-test"])
        assert app.services is not None
        breaker = app.services.proxy.resilience.breakers.get("up")
        for _ in range(5):
            breaker.failure("earlier trouble")
        assert breaker.state == "open"
        tested = await client.post("/v1/providers/up/test", headers=ADMIN)

    assert tested.status_code == 200 and tested.json()["ok"] is True
    assert breaker.state == "closed"
    status, latency, error, checked_at = health_rows(settings.database_path)["up"]
    assert (status, error) == ("ok", None) and latency is not None and checked_at
