"""Usage statistics: sums and nearest-rank percentiles per group, over a time window, in SQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from router.errors import InvalidRequest
from router.store import stats
from router.store.db import Database
from tests.helpers import ADMIN, add_provider, query_many


def insert(db: Database, *requests: tuple[Any, ...]) -> None:
    query_many(
        db,
        "INSERT INTO providers (id, name, type, created_at, updated_at)"
        " VALUES (?, ?, 'openai', 0, 0) ON CONFLICT DO NOTHING",
        [(p, p) for p in ("p1", "p2")],
    )
    query_many(
        db,
        "INSERT INTO requests (id, created_at, endpoint, model, provider_id, status, status_code,"
        " latency_ms, prompt_tokens, completion_tokens, total_tokens, cost)"
        " VALUES (?, ?, '/v1/chat/completions', ?, ?, ?, 200, ?, ?, ?, ?, ?)",
        requests,
    )


def twenty(db: Database) -> None:
    # p1: latencies 1..10 at t=1000+i, one error; p2: 10..100 step 10 at t=2000+i, model m2.
    rows = [
        (f"a{i}", 1000 + i, "m1", "p1", "error" if i == 3 else "success", float(i), 1, 2, 3, 0.5)
        for i in range(1, 11)
    ] + [
        (f"b{i}", 2000 + i, "m2", "p2", "success", float(i * 10), 10, 20, 30, None)
        for i in range(1, 11)
    ]
    insert(db, *rows)


async def test_per_provider_sums_and_percentiles(db: Database) -> None:
    twenty(db)
    result = await stats.usage_stats(db, {})
    assert result["group_by"] == "provider"
    by = {row["provider"]: row for row in result["data"]}
    assert by["p1"] == {
        "provider": "p1", "requests": 10, "errors": 1, "prompt_tokens": 10,
        "completion_tokens": 20, "total_tokens": 30, "cost": 5.0,
        "p50_latency_ms": 5.0, "p95_latency_ms": 10.0,
    }  # fmt: skip
    assert by["p2"]["cost"] == 0.0
    assert (by["p2"]["p50_latency_ms"], by["p2"]["p95_latency_ms"]) == (50.0, 100.0)


async def test_by_model_and_time_window(db: Database) -> None:
    twenty(db)
    result = await stats.usage_stats(db, {"group_by": "model", "since": "1006", "until": "2003"})
    assert [(r["model"], r["requests"]) for r in result["data"]] == [("m1", 5), ("m2", 2)]
    m1 = result["data"][0]
    assert (m1["p50_latency_ms"], m1["p95_latency_ms"]) == (8.0, 10.0)
    assert (await stats.usage_stats(db, {"since": "5000"}))["data"] == []


async def test_requests_without_a_provider_form_their_own_group(db: Database) -> None:
    insert(db, ("x", 1, "m1", None, "error", 2.0, None, None, None, None))
    [row] = (await stats.usage_stats(db, {}))["data"]
    assert row["provider"] is None and row["errors"] == 1 and row["p50_latency_ms"] == 2.0


def test_nearest_rank() -> None:
    assert [stats.nearest_rank(n, 50) for n in (1, 2, 3, 10)] == [0, 0, 1, 4]
    assert [stats.nearest_rank(n, 95) for n in (1, 10, 20, 100)] == [0, 9, 18, 94]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "client"}, "group_by"),
        ({"since": "yesterday"}, "since"),
        ({"until": "-1"}, "until"),
        ({"since": "10", "until": "5"}, "until"),
        ({"by": "model"}, "by"),
    ],
)
async def test_bad_parameters_are_named(db: Database, params: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await stats.usage_stats(db, params)
    assert caught.value.param == param


@pytest.mark.parametrize("group_by", ["provider", "model"])
async def test_the_queries_read_only_the_covering_index(db: Database, group_by: str) -> None:
    if db.dialect != "sqlite":
        pytest.skip("INDEXED BY and EXPLAIN QUERY PLAN are SQLite's; PostgreSQL's planner picks")
    column, index = stats.GROUPS[group_by], stats.INDEXES[group_by]
    window = {"since": 0, "until": 10, "grp": "x", "offset": 0}
    for sql in (stats.SUMS_SQL, stats.NTH_LATENCY_SQL):
        plan = await db.execute(
            "EXPLAIN QUERY PLAN " + sql.format(column=column, hint=db.index_hint(index)), window
        )
        details = " ".join(row["detail"] for row in plan)
        assert f"COVERING INDEX {index}" in details
        assert "TEMP B-TREE" not in details


async def test_stats_over_http(client: httpx.AsyncClient) -> None:
    headers = ADMIN
    await add_provider(client, "up", "http://up.test/v1", ["m"])
    empty = await client.get("/v1/stats?group_by=model", headers=headers)
    assert empty.status_code == 200
    assert empty.json()["data"] == [] and empty.json()["group_by"] == "model"
    bad = await client.get("/v1/stats?group_by=x", headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
