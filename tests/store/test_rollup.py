"""The hourly roll-up: kept by the recorder's batches, bucketed as rollup.py says, rebuilt the same
from raw rows, and read for long windows with the same counts the raw rows give."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from router.gateway.recorder import Recorder, RequestRecord
from router.store import migrations, rollup, timeseries
from router.store.db import Database
from tests.helpers import backfill, query, query_many, store_provider

HOUR = rollup.HOUR_MS
NOW = 1_800_000_000_000 - 1_800_000_000_000 % HOUR


def insert(db: Database, rows: list[tuple[object, ...]]) -> None:
    """Requests straight into the table (not through the recorder), then rolled up."""
    query_many(
        db,
        "INSERT INTO requests (id, created_at, endpoint, model, provider_id, client_key_id,"
        " status, status_code, latency_ms, prompt_tokens, completion_tokens, total_tokens, cost)"
        " VALUES (?, ?, 'chat.completions', ?, ?, NULL, ?, 200, ?, ?, ?, ?, ?)",
        rows,
    )
    times = [int(str(r[1])) for r in rows]
    backfill(db, min(times), max(times) + 1)


async def record(db: Database, rows: list[tuple[Any, ...]]) -> None:
    """The same rows through the recorder, as the proxy writes them."""
    rec = Recorder(db, queue_size=10_000, batch_size=7, flush_interval_s=0.001)
    rec.start()
    for rid, at, model, provider, status, latency, prompt, completion, total, cost in rows:
        await rec.record(RequestRecord(
            id=rid, created_at=at, endpoint="chat.completions", model=model,
            provider_id=provider, status=status, status_code=200, latency_ms=latency,
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=total, cost=cost,
        ))  # fmt: skip
    await rec.stop()
    assert rec.written == len(rows)


async def test_every_recorded_request_lands_in_its_hour_and_latency_bucket(
    db: Database,
) -> None:
    await store_provider(db, "p1")
    edges = rollup.LATENCY_EDGES_MS
    # One request just under each edge, one exactly on it, and one far past the last edge.
    latencies = [e - 0.001 for e in edges] + list(edges) + [10_000_000.0]
    await record(db, [
        (f"r{i}", NOW + 5, "m", "p1", "success", lat, 1, 2, 3, 0.5)
        for i, lat in enumerate(latencies)
    ])  # fmt: skip
    [row] = query(db, f"SELECT hour, requests, {', '.join(rollup.LATENCY_COLUMNS)}"
                      " FROM usage_hourly")  # fmt: skip
    assert row[:2] == (NOW, len(latencies))
    expected = [0] * rollup.BUCKETS
    for lat in latencies:
        expected[sum(1 for e in edges if lat >= e)] += 1
    assert list(row[2:]) == expected
    # The SQL expression that rolls up raw rows (the ends of a window, a backfill) agrees.
    sql = f"SELECT {rollup.latency_bucket_sql('latency_ms')}, count(*) FROM requests GROUP BY 1"
    assert dict(query(db, sql)) == {i: n for i, n in enumerate(expected) if n}


async def test_the_recorder_and_a_backfill_sum_the_same(db: Database, tmp_path: Path) -> None:
    await store_provider(db, "p1")
    rows = [
        ("a", NOW + 1, "m1", "p1", "success", 10.0, 1, 2, 3, 0.25),
        ("b", NOW + 2, "m1", "p1", "error", 20.0, 4, 5, 9, 0.5),
        ("c", NOW + HOUR, "m1", "p1", "success", 10.0, 1, 1, 2, 0.0),
        ("d", NOW + 3, "m2", None, "error", 1.0, None, None, None, None),
    ]
    await record(db, rows)
    columns = "prompt_tokens, completion_tokens, total_tokens, cost"
    sql = f"SELECT hour, provider_id, model, requests, errors, {columns} FROM usage_hourly"
    recorded = query(db, f"{sql} ORDER BY 1, 3")
    assert recorded == [
        (NOW, "p1", "m1", 2, 1, 5, 7, 12, 0.75),
        (NOW, "", "m2", 1, 1, 0, 0, 0, 0.0),
        (NOW + HOUR, "p1", "m1", 1, 0, 1, 1, 2, 0.0),
    ]
    tables = ("usage_hourly", *rollup.LATENCY_TABLES.values())
    everything = [query(db, f"SELECT * FROM {t} ORDER BY 1, 2, 3") for t in tables]
    assert all(everything)
    for table in tables:
        query(db, f"DELETE FROM {table}")
    backfill(db, 0, 2**62)
    assert [query(db, f"SELECT * FROM {t} ORDER BY 1, 2, 3") for t in tables] == everything


def test_bucket_percentiles_interpolate_inside_a_bucket() -> None:
    # 100 requests in [100, 150) ms: the median sits half way.
    index = rollup.LATENCY_EDGES_MS.index(150)
    assert rollup.bucket_percentile({index: 100}, 50) == 125.0
    assert rollup.bucket_percentile({index: 100}, 100) == 150.0
    assert rollup.bucket_percentile({}, 50) is None
    # Past the last edge there is no upper bound: the lower edge is the answer.
    assert rollup.bucket_percentile({rollup.BUCKETS - 1: 3}, 95) == rollup.LATENCY_EDGES_MS[-1]


@pytest.mark.parametrize("group_by", ["provider", "model"])
async def test_a_long_window_from_the_rollup_counts_what_the_raw_rows_count(
    db: Database, group_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store_provider(db, "p1")
    await store_provider(db, "p2")
    rng = random.Random(3)
    since, until = NOW - 7 * 24 * HOUR + 1_234_567, NOW - 7_654  # edges inside hours
    insert(db, [
        (f"r{i}", rng.randrange(since - HOUR, until + HOUR), rng.choice(["m1", "m2", None]),
         rng.choice(["p1", "p2", None]), rng.choice(["success", "success", "error"]),
         rng.lognormvariate(5, 1), 1, 2, 3, 0.125)
        for i in range(5000)
    ])  # fmt: skip
    params = {"since": str(since), "until": str(until), "group_by": group_by,
              "bucket_ms": str(6 * HOUR)}  # fmt: skip
    from_rollup = await timeseries.timeseries(db, params)
    monkeypatch.setattr(timeseries, "ROLLUP_SPAN_MS", 10**15)  # force the raw scan
    raw = await timeseries.timeseries(db, params)

    def counts(answer: dict[str, object]) -> object:
        totals = answer["totals"]
        groups = answer["groups"]
        assert isinstance(totals, dict) and isinstance(groups, list)
        return (
            {k: totals[k] for k in ("requests", "errors", "total_tokens", "cost")},
            {str(g[group_by]): (g["requests"], g["errors"], g["total_tokens"]) for g in groups},
        )

    assert counts(from_rollup) == counts(raw)
    assert from_rollup["totals"]["requests"] > 4000
    # Per bucket, an hour counts where it starts: equal wherever buckets fall on hours.
    assert sum(s["requests"] for s in from_rollup["series"]) == raw["totals"]["requests"]
    p50_raw, p50_rolled = raw["totals"]["p50_latency_ms"], from_rollup["totals"]["p50_latency_ms"]
    assert p50_rolled == pytest.approx(p50_raw, rel=0.3)
    totals = await timeseries.totals(db, params)
    assert sum(t["requests"] for t in totals) == raw["totals"]["requests"]


def test_the_migration_rolls_up_the_history_recorded_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    shipped = migrations.available()
    monkeypatch.setattr(migrations, "available", lambda: [m for m in shipped if m.version < 7])
    migrations.migrate(path)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO requests (id, created_at, endpoint, status, status_code, latency_ms,"
                 " total_tokens) VALUES ('a', ?, 'e', 'success', 200, 30, 5),"
                 " ('b', ?, 'e', 'error', 500, 3000, 1)", (NOW, NOW + 10))  # fmt: skip
    conn.commit()
    conn.close()
    monkeypatch.setattr(migrations, "available", lambda: shipped)
    migrations.migrate(path)
    assert query(path, "SELECT hour, requests, errors, total_tokens FROM usage_hourly") == [
        (NOW, 2, 1, 6)
    ]
    fast, slow = (rollup.LATENCY_COLUMNS[rollup.latency_bucket(ms)] for ms in (30, 3000))
    buckets = f"{fast}, {slow}"
    assert query(path, f"SELECT hour, provider_id, {buckets} FROM latency_by_provider") == [
        (NOW, "", 1, 1)
    ]
    assert query(path, f"SELECT hour, model, {buckets} FROM latency_by_model") == [(NOW, "", 1, 1)]
