"""The recorder: history rows written in batches, nothing dropped, one bad row alone lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from router.gateway.recorder import AttemptRecord, Recorder, RequestRecord
from router.store import providers
from router.store.db import Database
from tests.helpers import eventually, query, store_provider


def count(db: Database, table: str) -> int:
    return int(query(db, f"SELECT count(*) FROM {table}")[0][0])


@contextlib.asynccontextmanager
async def writes_blocked(db: Database) -> AsyncIterator[None]:
    """Hold every other writer off: SQLite's one write transaction, PostgreSQL's table lock
    (which lets readers through)."""
    async with db.transaction() as conn:
        if db.dialect == "postgresql":
            await conn.execute("LOCK TABLE requests IN EXCLUSIVE MODE")
        yield


def ok(request_id: str, provider_id: str = "p1", at: int = 1_000) -> RequestRecord:
    return RequestRecord(
        id=request_id,
        created_at=at,
        endpoint="/v1/chat/completions",
        model="gpt-test",
        status="success",
        status_code=200,
        latency_ms=12.3456,
        provider_id=provider_id,
        attempts=[AttemptRecord(1, provider_id, at, "success", 200, 11.0)],
    )


MakeRecorder = Callable[..., Recorder]


@pytest.fixture
async def make_recorder(db: Database) -> AsyncIterator[MakeRecorder]:
    """Started recorders on ``db``; any left running by a failed test is stopped before ``db``
    closes, so its writer never touches a closed database."""
    made: list[Recorder] = []

    def make(**options: Any) -> Recorder:
        values: dict[str, Any] = {"queue_size": 1000, "batch_size": 500, "flush_interval_s": 0.001}
        values.update(options)
        rec = Recorder(db, **values)
        rec.start()
        made.append(rec)
        return rec

    yield make
    for rec in made:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(rec.stop(), 5)


async def test_records_become_request_and_attempt_rows_in_one_batch(
    db: Database, make_recorder: MakeRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store_provider(db, "p1")
    await store_provider(db, "p2")
    transactions = 0
    real_transaction = db.transaction

    @contextlib.asynccontextmanager
    async def counted() -> AsyncIterator[Any]:
        nonlocal transactions
        transactions += 1
        async with real_transaction() as conn:
            yield conn

    monkeypatch.setattr(db, "transaction", counted)
    fallback = RequestRecord(
        id="req-2",
        created_at=2_000,
        endpoint="/v1/chat/completions",
        model="gpt-test",
        stream=True,
        status="success",
        status_code=200,
        latency_ms=50.0004,
        ttft_ms=7.12345,
        provider_id="p2",
        upstream_model="gpt-up",
        prompt_tokens=3,
        completion_tokens=2,
        total_tokens=5,
        cost=0.25,
        currency="USD",
        attempts=[
            AttemptRecord(1, "p1", 2_000, "error", 503, 10.0, "Provider 'p1' answered HTTP 503"),
            AttemptRecord(2, "p2", 2_010, "success", 200, 40.0),
        ],
    )
    failed = RequestRecord(
        id="req-3",
        created_at=3_000,
        endpoint="/v1/embeddings",
        status="error",
        status_code=502,
        latency_ms=5.0,
        error="all providers failed",
    )
    rec = make_recorder()
    for record in (ok("req-1"), fallback, failed):
        await rec.record(record)
    await rec.stop()

    assert transactions == 1
    assert (rec.written, rec.waits, rec.failed) == (3, 0, 0)
    assert query(db, "SELECT * FROM requests ORDER BY id") == [
        # id, created_at, endpoint, client_key_id, model, provider_id, upstream_model, stream,
        # status, status_code, latency_ms, ttft_ms, prompt/completion/total tokens, cost,
        # currency, attempts, error, trace (none: these records carry no routing order)
        ("req-1", 1_000, "/v1/chat/completions", None, "gpt-test", "p1", None, 0,
         "success", 200, 12.346, None, None, None, None, None, None, 1, None, None),
        ("req-2", 2_000, "/v1/chat/completions", None, "gpt-test", "p2", "gpt-up", 1,
         "success", 200, 50.0, 7.123, 3, 2, 5, 0.25, "USD", 2, None, None),
        ("req-3", 3_000, "/v1/embeddings", None, None, None, None, 0,
         "error", 502, 5.0, None, None, None, None, None, None, 0, "all providers failed",
         None),
    ]  # fmt: skip
    assert query(db, "SELECT * FROM attempts ORDER BY request_id, n") == [
        ("req-1", 1, "p1", 1_000, "success", 200, 11.0, None),
        ("req-2", 1, "p1", 2_000, "error", 503, 10.0, "Provider 'p1' answered HTTP 503"),
        ("req-2", 2, "p2", 2_010, "success", 200, 40.0, None),
    ]


async def test_provider_counters_are_updated_per_batch(
    db: Database, make_recorder: MakeRecorder
) -> None:
    await store_provider(db, "p1")
    await store_provider(db, "p2")
    await store_provider(db, "idle")
    rec = make_recorder()
    await rec.record(ok("a", "p1", at=1_000))
    await rec.record(
        RequestRecord(
            id="b",
            created_at=2_000,
            endpoint="/v1/chat/completions",
            status="success",
            status_code=200,
            provider_id="p2",
            attempts=[
                AttemptRecord(1, "p1", 2_000, "error", None, 3.0, "connect failed"),
                AttemptRecord(2, "p2", 2_005, "success", 200, 4.0),
            ],
        )
    )
    await rec.record(ok("c", "p1", at=3_000))
    await rec.stop()
    rows = query(
        db,
        "SELECT id, success_count, error_count, last_used_at, last_error_at, last_error"
        " FROM providers ORDER BY id",
    )
    assert rows == [
        ("idle", 0, 0, None, None, None),
        ("p1", 2, 1, 3_000, 2_000, "connect failed"),
        ("p2", 1, 0, 2_005, None, None),
    ]
    provider = await providers.get_provider(db, "p1")
    assert provider["state"]["success_count"] == 2
    assert provider["state"]["last_error"] == "connect failed"


async def test_counters_add_up_across_batches(db: Database, make_recorder: MakeRecorder) -> None:
    await store_provider(db, "p1")
    rec = make_recorder()
    await rec.record(
        RequestRecord(
            id="err",
            created_at=5_000,
            endpoint="/v1/chat/completions",
            attempts=[AttemptRecord(1, "p1", 5_000, "error", 500, 1.0, "boom")],
        )
    )
    await rec.flush()
    await rec.record(ok("later-success", at=6_000))
    await rec.flush()
    await rec.record(ok("older", at=4_000))  # an old request finishing late
    await rec.stop()
    assert query(
        db,
        "SELECT success_count, error_count, last_used_at, last_error_at, last_error FROM providers",
    ) == [(2, 1, 6_000, 5_000, "boom")]


def failing(request_id: str, at: int, error: str) -> RequestRecord:
    return RequestRecord(
        id=request_id,
        created_at=at,
        endpoint="/v1/chat/completions",
        attempts=[AttemptRecord(1, "p1", at, "error", 500, 1.0, error)],
    )


@pytest.mark.parametrize("same_batch", [True, False])
async def test_last_error_matches_last_error_at(
    db: Database, make_recorder: MakeRecorder, same_batch: bool
) -> None:
    await store_provider(db, "p1")
    rec = make_recorder()
    await rec.record(failing("new", 5_000, "newest error"))
    if not same_batch:
        await rec.flush()
    await rec.record(failing("old", 4_000, "older error"))  # started earlier, finished later
    await rec.stop()
    assert query(db, "SELECT last_error_at, last_error FROM providers") == [(5_000, "newest error")]


async def test_stop_writes_everything_still_queued(
    db: Database, make_recorder: MakeRecorder
) -> None:
    await store_provider(db, "p1")
    rec = make_recorder(queue_size=500, batch_size=50, flush_interval_s=10.0)
    for i in range(200):
        await rec.record(ok(f"req-{i:03d}", at=1_000 + i))
    assert rec.waits == 0
    await asyncio.wait_for(rec.stop(), 10)
    assert count(db, "requests") == 200
    assert count(db, "attempts") == 200
    assert rec.written == 200
    assert query(db, "SELECT success_count, last_used_at FROM providers") == [(200, 1_199)]


async def test_a_full_queue_makes_callers_wait_instead_of_dropping(
    db: Database, make_recorder: MakeRecorder
) -> None:
    await store_provider(db, "p1")
    rec = make_recorder(queue_size=2, batch_size=10)
    async with writes_blocked(db):  # the writer cannot commit while the test holds this
        await rec.record(ok("r1"))
        await rec.record(ok("r2"))
        assert rec.waits == 0
        # The queue is full (the writer has not run since): the third call waits for room,
        # which the writer makes by taking r1, instead of dropping r3.
        await rec.record(ok("r3"))
        assert rec.waits == 1
        await asyncio.sleep(0.05)
        assert rec.written == 0
        assert count(db, "requests") == 0
    await asyncio.wait_for(rec.stop(), 10)
    assert (rec.written, rec.waits, rec.failed) == (3, 1, 0)
    assert query(db, "SELECT id FROM requests ORDER BY id") == [("r1",), ("r2",), ("r3",)]


async def test_a_blocked_caller_stays_blocked_while_the_writer_is_stuck(
    db: Database, make_recorder: MakeRecorder
) -> None:
    await store_provider(db, "p1")
    rec = make_recorder(queue_size=2, batch_size=1)
    async with writes_blocked(db):
        await rec.record(ok("r1"))
        # Let the writer take r1 and get stuck on the write.
        await eventually(lambda: rec.queue.qsize() == 0, "the writer took r1")
        await rec.record(ok("r2"))
        await rec.record(ok("r3"))
        fourth = asyncio.create_task(rec.record(ok("r4")))
        await asyncio.sleep(0.05)
        assert not fourth.done()
        assert rec.waits == 1
        assert count(db, "requests") == 0
    await asyncio.wait_for(fourth, 5)
    await asyncio.wait_for(rec.stop(), 10)
    assert count(db, "requests") == 4
    assert rec.written == 4


async def test_a_record_of_a_deleted_provider_is_kept_under_an_archived_stand_in(
    db: Database, make_recorder: MakeRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    await store_provider(db, "p1")
    rec = make_recorder()
    await rec.record(ok("good-1"))
    await rec.record(ok("ghost", provider_id="gone"))  # deleted before its record was written
    await rec.record(ok("good-2"))
    await rec.stop()
    assert (rec.written, rec.failed) == (3, 0)
    assert query(db, "SELECT id FROM requests ORDER BY id") == [
        ("ghost",), ("good-1",), ("good-2",)
    ]  # fmt: skip
    assert query(db, "SELECT request_id, provider_id FROM attempts ORDER BY request_id")[0] == (
        "ghost",
        "gone",
    )
    stand_in = query(
        db, "SELECT type, enabled, archived_at IS NOT NULL, success_count FROM providers"
        " WHERE id = 'gone'"
    )  # fmt: skip
    assert stand_in == [("unknown", 0, 1, 1)]
    assert query(db, "SELECT success_count FROM providers WHERE id = 'p1'") == [(2,)]
    assert "kept an archived stand-in" in caplog.text


async def test_one_bad_record_does_not_take_its_batch_down(
    db: Database, make_recorder: MakeRecorder
) -> None:
    await store_provider(db, "p1")
    rec = make_recorder()
    await rec.record(ok("good-1"))
    await rec.record(ok("good-1"))  # the same id again: refused by the primary key
    await rec.record(ok("good-2"))
    await rec.stop()
    assert (rec.written, rec.failed) == (2, 1)
    assert query(db, "SELECT id FROM requests ORDER BY id") == [("good-1",), ("good-2",)]
    assert query(db, "SELECT success_count FROM providers WHERE id = 'p1'") == [(2,)]


async def test_a_duplicate_id_fails_alone(db: Database, make_recorder: MakeRecorder) -> None:
    await store_provider(db, "p1")
    rec = make_recorder()
    await rec.record(ok("same"))
    await rec.flush()
    await rec.record(ok("same"))
    await rec.record(ok("other"))
    await rec.stop()
    assert (rec.written, rec.failed) == (2, 1)
    assert query(db, "SELECT id FROM requests ORDER BY id") == [("other",), ("same",)]


async def test_an_unstorable_value_fails_alone(db: Database, make_recorder: MakeRecorder) -> None:
    await store_provider(db, "p1")
    rec = make_recorder()
    huge = ok("huge")
    huge.prompt_tokens = 2**63
    await rec.record(huge)
    await rec.record(ok("after"))
    await asyncio.wait_for(rec.stop(), 5)
    assert rec.failed == 1
    assert query(db, "SELECT id FROM requests") == [("after",)]


async def test_a_timeout_counts_as_an_error_a_client_hang_up_as_nothing(
    db: Database, make_recorder: MakeRecorder
) -> None:
    await store_provider(db, "p1")
    rec = make_recorder()
    await rec.record(
        RequestRecord(
            id="gone",
            created_at=7_000,
            endpoint="/v1/chat/completions",
            status="client_closed",
            status_code=499,
            attempts=[
                AttemptRecord(1, "p1", 7_000, "timeout", None, 9.0, "stalled"),
                AttemptRecord(2, "p1", 7_100, "client_closed", None, 2.0, "client left"),
            ],
        )
    )
    await rec.stop()
    assert query(
        db, "SELECT success_count, error_count, last_error_at, last_error FROM providers"
    ) == [(0, 1, 7_000, "stalled")]


async def test_an_unforeseen_error_does_not_stop_the_recorder(
    db: Database, make_recorder: MakeRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store_provider(db, "p1")
    rec = make_recorder()
    real = rec._write_rows
    calls = 0

    async def once_broken(
        batch: list[RequestRecord], auth: Any = None, *, stand_ins: bool = False
    ) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug nobody foresaw")
        await real(batch, auth, stand_ins=stand_ins)

    monkeypatch.setattr(rec, "_write_rows", once_broken)
    await rec.record(ok("lost"))
    await rec.flush()
    await rec.record(ok("kept"))
    await rec.stop()
    assert (rec.written, rec.failed) == (1, 1)
    assert query(db, "SELECT id FROM requests") == [("kept",)]


async def test_an_unreachable_database_holds_the_rows_until_it_answers_again(
    db: Database, make_recorder: MakeRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store_provider(db, "p1")
    rec = make_recorder(queue_size=10, batch_size=10)
    real = db.insert_rows
    outage = {"left": 3}

    async def flaky(*args: Any) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise ConnectionRefusedError(111, "Connection refused")  # PostgreSQL restarting
        await real(*args)

    monkeypatch.setattr(db, "insert_rows", flaky)
    for i in range(4):
        await rec.record(ok(f"r{i}"))
    await asyncio.wait_for(rec.flush(), 20)
    assert (rec.written, rec.failed, rec.rows_dropped, rec.healthy) == (4, 0, 0, True)
    assert outage["left"] == 0
    assert count(db, "requests") == 4


async def test_rows_count_as_failed_once_the_database_stays_unreachable(
    db: Database, make_recorder: MakeRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store_provider(db, "p1")
    rec = make_recorder(queue_size=10, batch_size=10, retry_s=0.5)

    async def down(*args: Any) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(db, "insert_rows", down)
    for i in range(3):
        await rec.record(ok(f"r{i}"))
    await asyncio.wait_for(rec.flush(), 20)  # no hang, and no row-by-row retry of each
    # Given up after retry_s: dropped (counted), not refused as invalid.
    assert (rec.written, rec.failed, rec.rows_dropped, rec.healthy) == (0, 0, 3, False)


async def test_failed_auth_counts_add_up_across_flushes_on_either_backend(
    db: Database, make_recorder: MakeRecorder
) -> None:
    # The second flush upserts into the first one's row: failures add, first_at keeps the
    # earliest and last_at the latest (min/max on SQLite, LEAST/GREATEST on PostgreSQL).
    rec = make_recorder()
    minute = 1_800_000_000_000 - 1_800_000_000_000 % 60_000
    rec.auth_failed(minute + 5_000, "10.0.0.1", "sk-ab", "chat.completions")
    rec.auth_failed(minute + 9_000, "10.0.0.1", "sk-ab", "chat.completions")
    await rec.flush()
    rec.auth_failed(minute + 1_000, "10.0.0.1", "sk-ab", "chat.completions")
    rec.auth_failed(minute + 20_000, "10.0.0.1", "sk-ab", "chat.completions")
    await rec.flush()
    assert query(
        db, "SELECT minute, source, key_prefix, failures, first_at, last_at FROM auth_failures"
    ) == [(minute, "10.0.0.1", "sk-ab", 4, minute + 1_000, minute + 20_000)]
