"""The history database on a disk that fills up, or locked by another process: the proxy keeps
answering, memory stays bounded, rows are retried then dropped and counted, one warning says
so without a traceback, management writes answer 507/503 with a sentence, and everything
recovers by itself when the disk has room again. Real uvicorn, a real fake upstream, a real
tmpfs."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from starlette.requests import Request

from router.app import ProviderRouterApp, create_app, render_error
from router.gateway.recorder import AttemptRecord, Recorder, RequestRecord
from router.mock.upstream import MockUpstream
from router.store.db import Database
from tests.helpers import (
    ADMIN,
    add_provider,
    eventually,
    fill_disk,
    make_settings,
    query,
    serve_asgi,
    small_disk,
    store_provider,
)


def sqlite_lock_only(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip(
            "another process's write lock is SQLite's; on PostgreSQL an unreachable server is the"
            " retried failure (tests/gateway/test_recorder.py, the unreachable tests)"
        )


CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def disk(tmp_path: Path) -> Any:
    with small_disk(tmp_path / "disk", "2m") as where:
        yield where


async def fire(client: httpx.AsyncClient, count: int, concurrency: int = 25) -> list[int]:
    statuses: list[int] = []
    for start in range(0, count, concurrency):
        batch = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=CHAT)
              for _ in range(min(concurrency, count - start)))
        )  # fmt: skip
        statuses += [r.status_code for r in batch]
    return statuses


def recorder_of(app: ProviderRouterApp) -> Recorder:
    assert app.services is not None
    return app.services.recorder


@pytest.fixture
async def proxy_on_disk(disk: Path) -> AsyncIterator[tuple[httpx.AsyncClient, ProviderRouterApp]]:
    settings = make_settings(
        disk,
        recorder_queue_size=40,
        recorder_batch_size=10,
        recorder_retry_ms=300,
    )
    upstream = MockUpstream()
    app = create_app(settings)
    async with (
        serve_asgi(upstream.app()) as mock_url,
        serve_asgi(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        await add_provider(client, "mock", f"{mock_url}/v1", ["gpt-test"])
        yield client, app


async def test_a_full_disk_drops_rows_counted_and_bounded_then_recovers(
    proxy_on_disk: tuple[httpx.AsyncClient, ProviderRouterApp],
    disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, app = proxy_on_disk
    recorder = recorder_of(app)
    assert await fire(client, 5) == [200] * 5
    await recorder.flush()
    assert recorder.written == 5
    tasks_before = len(asyncio.all_tasks())

    ballast = fill_disk(disk)
    caplog.set_level(logging.WARNING, logger="provider_router")
    statuses = await fire(client, 400)
    # The proxy keeps answering, and nothing waits behind the recorder once answered.
    assert statuses == [200] * 400
    await eventually(lambda: recorder.rows_dropped > 0, "rows were dropped")
    assert not recorder.healthy
    assert "full" in (recorder.last_error or "")
    assert recorder.queue.qsize() <= 40
    assert recorder.waiting == 0
    assert len(asyncio.all_tasks()) <= tasks_before + 2
    assert recorder.written == 5

    records = [r for r in caplog.records if r.name == "provider_router.recorder"]
    assert records, "the failure was logged"
    assert all(r.exc_info is None for r in records), "no traceback for a full disk"
    # One warning when writes began to fail, one per interval about the drops (60 s here).
    assert len(records) <= 3, [r.getMessage() for r in records]
    assert any("Dropped" in r.getMessage() for r in records)

    # A management write answers with the cause, not a bare 500, and changes nothing.
    response = await client.post("/v1/models", json={"id": "new-model"}, headers=ADMIN)
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert error["code"] == "insufficient_storage"
    assert "disk is full" in error["message"]

    ballast.unlink()
    assert await fire(client, 5) == [200] * 5
    await eventually(lambda: recorder.healthy, "the recorder recovered")
    await recorder.flush()
    # Everything accounted for: written, or dropped and counted.
    assert recorder.written + recorder.rows_dropped == 410
    assert recorder.written >= 10
    assert any("written again" in r.getMessage() for r in caplog.records)
    created = await client.post("/v1/models", json={"id": "new-model"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    health = (await client.get("/health")).json()["recorder"]
    assert health["dropped"] == recorder.rows_dropped
    assert health["writing"] is True


def ok(request_id: str) -> RequestRecord:
    return RequestRecord(
        id=request_id, created_at=1_000, endpoint="chat.completions", status="success",
        status_code=200, provider_id="p1",
        attempts=[AttemptRecord(1, "p1", 1_000, "success", 200, 1.0)],
    )  # fmt: skip


async def test_a_locked_database_is_retried_and_the_batch_lands_when_the_lock_goes(
    db: Database,
) -> None:
    sqlite_lock_only(db)
    await store_provider(db, "p1")
    rec = Recorder(db, queue_size=100, batch_size=10, flush_interval_s=0.001, retry_s=30)
    rec.start()
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        await rec.record(ok("a"))
        await eventually(lambda: not rec.healthy, "the write failed", timeout_s=30)
        assert "locked" in (rec.last_error or "")
    finally:
        other.execute("ROLLBACK")
        other.close()
    await asyncio.wait_for(rec.flush(), 30)
    assert rec.healthy
    assert (rec.written, rec.rows_dropped) == (1, 0)
    assert query(db, "SELECT id FROM requests") == [("a",)]
    await rec.stop()


async def test_a_batch_is_dropped_and_counted_after_retry_ms(db: Database) -> None:
    sqlite_lock_only(db)
    await store_provider(db, "p1")
    rec = Recorder(db, queue_size=100, batch_size=10, flush_interval_s=0.001, retry_s=0.3)
    rec.start()
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        for i in range(3):
            await rec.record(ok(f"r{i}"))
        await asyncio.wait_for(rec.flush(), 30)
        assert (rec.written, rec.rows_dropped) == (0, 3)
    finally:
        other.execute("ROLLBACK")
        other.close()
    await rec.record(ok("after"))
    await asyncio.wait_for(rec.flush(), 30)
    assert rec.written == 1 and rec.healthy
    await rec.stop()


async def test_stop_gives_up_after_its_timeout_and_counts_what_it_could_not_write(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    sqlite_lock_only(db)
    await store_provider(db, "p1")
    rec = Recorder(db, queue_size=100, batch_size=5, flush_interval_s=0.001, retry_s=3600)
    rec.start()
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        for i in range(12):
            await rec.record(ok(f"r{i}"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        lost = await rec.stop(timeout_s=0.5)
        took = loop.time() - started
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert lost == 12
    assert rec.rows_dropped == 12
    # Bounded by the timeout (plus one busy wait of the write in flight), not by retry_s.
    assert took < 8, took
    assert any("could not be written" in r.getMessage() for r in caplog.records)


async def test_while_writes_fail_a_full_queue_drops_instead_of_piling_up_waiters(
    db: Database,
) -> None:
    sqlite_lock_only(db)
    await store_provider(db, "p1")
    rec = Recorder(db, queue_size=5, batch_size=2, flush_interval_s=0.001, retry_s=3600)
    rec.start()
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        await rec.record(ok("first"))
        await eventually(lambda: not rec.healthy, "the write failed", timeout_s=30)
        # 100 more callers: each returns at once, none is left waiting.
        await asyncio.wait_for(asyncio.gather(*(rec.record(ok(f"r{i}")) for i in range(100))), 5)
        assert rec.waiting == 0
        assert rec.queue.qsize() <= 5
        assert rec.rows_dropped >= 100 - 5
    finally:
        other.execute("ROLLBACK")
        other.close()
    await rec.stop(timeout_s=10)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (asyncpg.DiskFullError("could not extend file: No space left on device"), 507,
         "insufficient_storage"),
        (asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
         503, "database_unavailable"),
        (asyncpg.CannotConnectNowError("the database system is starting up"), 503,
         "database_unavailable"),
    ],
)  # fmt: skip
async def test_postgresql_refusing_a_write_is_answered_with_a_sentence_not_a_500(
    exc: Exception, status: int, code: str
) -> None:
    request = Request({"type": "http", "method": "POST", "path": "/v1/models", "headers": []})
    response = await render_error(request, exc)
    assert response.status_code == status
    error = orjson.loads(bytes(response.body))["error"]
    assert error["code"] == code
    assert "nothing was changed" in error["message"]
