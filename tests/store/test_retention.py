"""Pruning history: requests go with their attempts in small batches, the roll-up stays, the file
shrinks, and statistics over the pruned range stay right. Real SQLite files throughout."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from router.secrets import Cipher
from router.store import retention, rollup, stats, timeseries
from router.store.db import Database
from router.store.migrations import migrate
from tests.helpers import TEST_SECRET_KEY, backfill, query, query_many, store_provider

DAY = retention.DAY_MS
NOW = 1_800_000_000_000 - 1_800_000_000_000 % rollup.HOUR_MS  # on an hour, for exact edges


def insert_requests(
    db: Database, count: int, *, start: int, step: int, error_every: int = 5
) -> None:
    """``count`` requests (each with two attempts) from ``start``, one every ``step`` ms."""
    rows = []
    attempts = []
    for i in range(count):
        rid = f"req_{start + i * step:015d}_{i:06d}"
        failed = i % error_every == 0
        rows.append((
            rid, start + i * step, "chat.completions", ["m1", "m2"][i % 2], "p1",
            "error" if failed else "success", 502 if failed else 200, 10.0 + i % 400,
            3, 4, 7, 0.001, 2,
        ))  # fmt: skip
        attempts.append((rid, 1, "p1", start + i * step, "error", 500, 3.0))
        attempts.append((rid, 2, "p1", start + i * step, "success", 200, 5.0))
    query_many(
        db,
        "INSERT INTO requests (id, created_at, endpoint, model, provider_id, status,"
        " status_code, latency_ms, prompt_tokens, completion_tokens, total_tokens, cost,"
        " attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    query_many(
        db,
        "INSERT INTO attempts (request_id, n, provider_id, started_at, status, status_code,"
        " latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        attempts,
    )
    # Not through the recorder: roll them up as the migration does.
    backfill(db, start, start + count * step)


def count(db: Database, table: str) -> int:
    return int(query(db, f"SELECT count(*) FROM {table}")[0][0])


async def test_prune_deletes_old_requests_with_their_attempts_in_batches(db: Database) -> None:
    await store_provider(db, "p1")
    insert_requests(db, 1200, start=NOW - 10 * DAY, step=1000)  # old
    insert_requests(db, 300, start=NOW - DAY, step=1000)  # recent
    result = await retention.prune(db, NOW - 5 * DAY, batch_rows=100)
    assert (result.requests, result.attempts) == (1200, 2400)
    assert count(db, "requests") == 300
    assert count(db, "attempts") == 600
    assert query(db, "SELECT min(created_at) FROM requests") == [(NOW - DAY,)]
    # Nothing else left that points at a deleted request.
    assert query(db, "SELECT count(*) FROM attempts WHERE request_id NOT IN"
                     " (SELECT id FROM requests)") == [(0,)]  # fmt: skip
    assert await rollup.pruned_before(db) == NOW - 5 * DAY


async def test_a_dry_run_counts_and_changes_nothing(db: Database) -> None:
    await store_provider(db, "p1")
    insert_requests(db, 50, start=NOW - 10 * DAY, step=1000)
    insert_requests(db, 5, start=NOW, step=1000)
    result = await retention.prune(db, NOW - DAY, dry_run=True)
    assert (result.requests, result.attempts, result.dry_run) == (50, 100, True)
    assert count(db, "requests") == 55
    assert await rollup.pruned_before(db) == 0


async def test_the_cutoff_follows_retention_days_and_max_rows(db: Database) -> None:
    await store_provider(db, "p1")
    insert_requests(db, 100, start=NOW - 100_000, step=1000)
    assert await retention.cutoff(db, retention_days=0, max_rows=None, now_ms=NOW) is None
    assert await retention.cutoff(db, retention_days=30, max_rows=None, now_ms=NOW) == (
        NOW - 30 * DAY
    )
    # max_rows=40: the 41st newest and everything older go.
    before = await retention.cutoff(db, retention_days=30, max_rows=40, now_ms=NOW)
    assert before is not None
    result = await retention.prune(db, before)
    assert result.requests == 60
    assert count(db, "requests") == 40
    # Fewer rows than the allowance: nothing to cut beyond the retention.
    assert await retention.cutoff(db, retention_days=0, max_rows=1000, now_ms=NOW) is None


async def test_stats_over_a_pruned_range_stay_right_from_the_rollup(db: Database) -> None:
    await store_provider(db, "p1")
    insert_requests(db, 2000, start=NOW - 20 * DAY, step=60_000)  # 2000 minutes, ~33 hours
    insert_requests(db, 100, start=NOW - 2 * DAY, step=60_000)
    window = {"since": str(NOW - 30 * DAY), "until": str(NOW), "group_by": "model"}
    before = await stats.usage_stats(db, window)
    assert before["rolled_up"] is False
    await retention.prune(db, NOW - 10 * DAY)
    assert count(db, "requests") == 100
    after = await stats.usage_stats(db, window)
    assert after["rolled_up"] is True
    exact = ("model", "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens")
    assert [{k: e[k] for k in exact} for e in after["data"]] == [
        {k: e[k] for k in exact} for e in before["data"]
    ]
    assert [e["cost"] for e in after["data"]] == pytest.approx([e["cost"] for e in before["data"]])
    for old, new in zip(before["data"], after["data"], strict=True):
        # Percentiles from fixed buckets: near the exact ones, not equal.
        assert new["p50_latency_ms"] == pytest.approx(old["p50_latency_ms"], rel=0.35)
        assert new["p95_latency_ms"] == pytest.approx(old["p95_latency_ms"], rel=0.35)


async def test_timeseries_over_a_pruned_range_matches_what_it_said_before(db: Database) -> None:
    await store_provider(db, "p1")
    insert_requests(db, 3000, start=NOW - 7 * DAY + 1234, step=170_000)
    params = {"since": str(NOW - 7 * DAY), "until": str(NOW), "group_by": "provider"}
    before = await timeseries.timeseries(db, params)
    await retention.prune(db, NOW)
    assert count(db, "requests") == 0
    after = await timeseries.timeseries(db, params)
    assert after["totals"] == before["totals"]
    assert [s["requests"] for s in after["series"]] == [s["requests"] for s in before["series"]]
    assert after["totals"]["requests"] == 3000


async def test_failed_auth_counts_are_pruned_with_the_history(db: Database) -> None:
    query_many(
        db,
        "INSERT INTO auth_failures VALUES (?, '10.0.0.1', '(none)', 'chat.completions', 3, ?, ?)",
        [(NOW - 40 * DAY, NOW - 40 * DAY, NOW - 40 * DAY), (NOW, NOW, NOW)],
    )
    result = await retention.prune(db, NOW - DAY)
    assert result.others == {"auth_failures": 1, "responses": 0}
    assert query(db, "SELECT minute FROM auth_failures") == [(NOW,)]


async def test_stored_responses_are_pruned_with_the_history(db: Database) -> None:
    query_many(
        db,
        "INSERT INTO responses (id, created_at, model, status, input_items, response)"
        " VALUES (?, ?, 'm', 'completed', '[]', '{}')",
        [("resp_old", NOW - 40 * DAY), ("resp_new", NOW)],
    )
    counted = await retention.prune(db, NOW - DAY, dry_run=True)
    assert counted.others["responses"] == 1
    assert query(db, "SELECT count(*) FROM responses") == [(2,)]
    result = await retention.prune(db, NOW - DAY)
    assert result.others["responses"] == 1
    assert query(db, "SELECT id FROM responses") == [("resp_new",)]


async def test_the_file_shrinks_after_pruning(db: Database) -> None:
    await store_provider(db, "p1")
    insert_requests(db, 20_000, start=NOW - 10 * DAY, step=1000)
    if db.dialect != "sqlite":
        # PostgreSQL: the rows go, and autovacuum (not the pruner) makes their space reusable.
        result = await retention.prune(db, NOW, batch_rows=2000)
        assert (result.requests, result.freed_bytes, count(db, "requests")) == (20_000, 0, 0)
        return
    await db.checkpoint()
    full = db.path.stat().st_size
    result = await retention.prune(db, NOW, batch_rows=2000)
    assert result.requests == 20_000
    shrunk = db.path.stat().st_size
    assert shrunk < full / 3, (full, shrunk)
    assert result.freed_bytes > 0
    assert query(db, "PRAGMA freelist_count") == [(0,)]


async def test_a_prune_batch_never_holds_the_writer_from_a_waiting_flush(db: Database) -> None:
    await store_provider(db, "p1")
    insert_requests(db, 3000, start=NOW - 10 * DAY, step=1000)
    writes: list[str] = []

    async def prune() -> None:
        await retention.prune(db, NOW, batch_rows=100)
        writes.append("prune done")

    task = asyncio.create_task(prune())
    await asyncio.sleep(0)  # the pruner holds the writer for its first batch
    async with db.transaction() as conn:
        await conn.execute("UPDATE settings SET value = value WHERE key = 'config_version'")
    writes.append("flush")
    await task
    # The flush went between two batches, long before the 30 batches were over.
    assert writes == ["flush", "prune done"]


def test_an_old_database_is_switched_to_incremental_vacuum_at_start(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")  # created before the pragma: auto_vacuum stays 0
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    conn.close()
    assert retention.ensure_incremental(path) is None
    assert query(path, "PRAGMA auto_vacuum") == [(retention.INCREMENTAL,)]
    assert query(path, "SELECT x FROM t") == [(1,)]


def test_a_large_old_database_gets_advice_instead_of_a_long_vacuum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    monkeypatch.setattr(retention, "AUTO_VACUUM_MAX_BYTES", 10)
    advice = retention.ensure_incremental(path)
    assert advice is not None and "provider-router db vacuum" in advice
    assert query(path, "PRAGMA auto_vacuum") == [(0,)]


def test_new_databases_are_created_with_incremental_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    migrate(path)
    assert query(path, "PRAGMA auto_vacuum") == [(retention.INCREMENTAL,)]


async def test_the_background_pruner_prunes_on_its_interval(tmp_path: Path) -> None:
    path = tmp_path / "bg.db"
    migrate(path)
    db = Database(path, cipher=Cipher(TEST_SECRET_KEY))
    await db.open()
    try:
        await store_provider(db, "p1")
        insert_requests(db, 10, start=1_000_000, step=1000)  # 1970: far past any retention
        pruner = retention.HistoryPruner(
            db, retention_days=30, max_rows=None, interval_s=0.05, first_s=0.0
        )
        task = asyncio.create_task(pruner.run())
        for _ in range(500):
            if pruner.passes:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pruner.pruned == 10
        assert count(db, "requests") == 0
    finally:
        await db.close()
