"""Two real ``serve`` replicas on one PostgreSQL database, as a team behind a load balancer runs
them: config made on one serves on the other within a second (LISTEN/NOTIFY), a revoked key is
refused as fast, history from both lands in one table, and one replica's crash leaves the other
serving."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.store.migrations import available
from tests.helpers import ADMIN, mock_upstream_process, query
from tests.replicas import Replica, replicas, wait_for

CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
# The bound for a change made on one replica to reach every other one.
PROPAGATION_BOUND_S = 1.0


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[str]:
    with mock_upstream_process(tmp_path) as url:
        yield f"{url}/v1"


def add_provider(replica: Replica, upstream: str, provider_id: str = "mock") -> None:
    body = {
        "id": provider_id,
        "name": provider_id,
        "type": "openai",
        "config": {"baseURL": upstream, "apiKey": "sk-mock-upstream-key"},
    }
    created = httpx.post(f"{replica.url}/v1/providers", json=body, headers=ADMIN, timeout=10)
    assert created.status_code == 201, created.text
    linked = httpx.post(
        f"{replica.url}/v1/providers/{provider_id}/models",
        json={"model_id": "mock-gpt"},
        headers=ADMIN,
        timeout=10,
    )
    assert linked.status_code == 201, linked.text


def chat_status(replica: Replica, key: str | None = None) -> int:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{replica.url}/v1/chat/completions", json=CHAT, headers=headers, timeout=10
    ).status_code


def test_config_and_key_revocation_reach_the_other_replica_within_a_second(
    postgres_url: str, tmp_path: Path, upstream: str
) -> None:
    env = (("PROVIDER_ROUTER_REQUIRE_CLIENT_KEYS", "true"),)
    with replicas(postgres_url, tmp_path, env=env) as (a, b):
        # Both started together on an empty database: each migration ran once, no start failed.
        versions = query(postgres_url, "SELECT version FROM schema_migrations ORDER BY 1")
        assert [v for (v,) in versions] == [m.version for m in available()]

        created = httpx.post(f"{a.url}/v1/keys", json={"name": "team"}, headers=ADMIN, timeout=10)
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["id"]
        # The reload interval is 5 s, so B knowing the key within 1 s means NOTIFY carried it.
        took = wait_for(lambda: chat_status(b, key) != 401, "B knows the key created on A")
        assert took < PROPAGATION_BOUND_S, f"B knew the new key after {took:.3f} s"
        assert chat_status(b, key) == 404  # no provider serves the model yet

        add_provider(a, upstream)
        # The write is committed when A answers; from then on B must serve within the bound.
        took = wait_for(lambda: chat_status(b, key) == 200, "B serves the provider added on A")
        assert took < PROPAGATION_BOUND_S, f"B served the new provider after {took:.3f} s"

        revoked = httpx.delete(f"{a.url}/v1/keys/{key_id}", headers=ADMIN, timeout=10)
        assert revoked.status_code == 200, revoked.text
        took = wait_for(lambda: chat_status(b, key) == 401, "B refuses the key revoked on A")
        assert took < PROPAGATION_BOUND_S, f"B refused the revoked key after {took:.3f} s"
        assert chat_status(a, key) == 401


async def fire(replica: Replica, count: int) -> list[int]:
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.gather(
            *(client.post(f"{replica.url}/v1/chat/completions", json=CHAT) for _ in range(count))
        )
    return [answer.status_code for answer in answers]


def test_history_from_both_replicas_lands_in_one_table_with_nothing_lost_on_sigterm(
    postgres_url: str, tmp_path: Path, upstream: str
) -> None:
    # A long flush interval keeps the rows queued until SIGTERM forces them out.
    with replicas(postgres_url, tmp_path, flush_interval_ms=60_000) as (a, b):
        add_provider(a, upstream)
        version = a.config_version()
        wait_for(lambda: b.config_version() == version, "B rebuilt from A's change")

        async def both() -> list[list[int]]:
            return list(await asyncio.gather(fire(a, 25), fire(b, 25)))

        statuses = asyncio.run(both())
        assert statuses == [[200] * 25, [200] * 25]
        queued = query(postgres_url, "SELECT count(*) FROM requests")
        assert queued[0][0] < 50  # most rows are still in the replicas' queues
        for replica in (a, b):
            assert replica.stop(signal.SIGTERM) == -signal.SIGTERM
        a_log, b_log = a.output(), b.output()

    assert "Recorded 25 request(s); shut down cleanly" in a_log
    assert "Recorded 25 request(s); shut down cleanly" in b_log
    rows = query(postgres_url, "SELECT count(*), count(DISTINCT id) FROM requests")
    assert rows == [(50, 50)]
    assert query(postgres_url, "SELECT count(*) FROM attempts") == [(50,)]
    assert query(postgres_url, "SELECT success_count, error_count FROM providers") == [(50, 0)]
    for log in (a_log, b_log):
        assert "sk-mock-upstream-key" not in log
        assert "Traceback" not in log


def test_sigkill_of_one_replica_leaves_the_other_serving(
    postgres_url: str, tmp_path: Path, upstream: str
) -> None:
    with replicas(postgres_url, tmp_path) as (a, b):
        add_provider(a, upstream)
        wait_for(lambda: chat_status(b) == 200, "B serves the provider added on A")
        assert a.stop(signal.SIGKILL) == -signal.SIGKILL
        assert [chat_status(b) for _ in range(5)] == [200] * 5
        # B still takes management writes, and serves what it wrote.
        add_provider(b, upstream, "second")
        listed: Any = httpx.get(f"{b.url}/v1/providers", headers=ADMIN, timeout=10).json()
        assert [p["id"] for p in listed["data"]] == ["mock", "second"]
        b.stop()
    assert query(postgres_url, "SELECT count(*) FROM requests WHERE status = 'success'")[0][0] >= 6
