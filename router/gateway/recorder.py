"""The recorder: history rows leave the request path through a bounded queue.

One background task drains the queue and writes ``requests`` and ``attempts`` rows, plus the
per-provider counters, in batches (one transaction per batch). The request path never waits for
the database: it waits only when the queue is full (back-pressure, counted in ``waits``), so no
row is ever dropped. :meth:`Recorder.stop` writes everything still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from router.store.db import (
    Connection,
    Database,
    DatabaseError,
    IntegrityError,
    Unreachable,
    is_foreign_key_error,
)

# How long one batch waits for an unreachable database before its rows count as failed.
UNREACHABLE_RETRY_S = 60.0

if TYPE_CHECKING:
    from router.gateway.routing import Candidate, Snapshot
    from router.store.client_keys import ClientKey

log = logging.getLogger("provider_router.recorder")


@dataclass(slots=True)
class AttemptRecord:
    n: int
    provider_id: str
    started_at: int
    status: str  # "success" | "error" | "timeout" | "client_closed"
    status_code: int | None
    latency_ms: float
    error: str | None = None


@dataclass(slots=True)
class RequestRecord:
    id: str
    created_at: int
    endpoint: str
    model: str | None = None
    stream: bool = False
    status: str = "error"  # "success" | "error" | "client_closed"
    status_code: int = 500
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    provider_id: str | None = None
    upstream_model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost: float | None = None
    currency: str | None = None
    client_key_id: str | None = None
    client_key: ClientKey | None = None  # the caller's key and its limits, for rate limiting
    error: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    # The routing trace, kept as references the request path already holds; the recorder turns
    # them into the ``trace`` column in the background (see trace_document).
    snapshot: Snapshot | None = None
    order: Sequence[Candidate] | None = None
    skips: list[tuple[str | None, str, int | None]] | None = None
    # The request's and the answer's bodies, kept (cut) only for tracing.capture_content.
    content: list[bytes] | None = None

    def skip(self, provider_id: str | None, reason: str, wait_s: float | None = None) -> None:
        """Note a candidate the attempt loop passed over: ``circuit_open`` or ``rate_limited``
        until ``wait_s`` from now, or ``key_not_allowed`` (no provider: the key was refused)."""
        until = None if wait_s is None else int((time.time() + wait_s) * 1000)
        if self.skips is None:
            self.skips = []
        self.skips.append((provider_id, reason, until))


def trace_document(r: RequestRecord) -> str | None:
    """The routing trace as compact JSON: ``{"candidates": [ids in the order to try them],
    "skipped": [[id, reason, until ms]...], "disabled": [linked but disabled ids]}``; attempts
    are the ``attempts`` rows. None when routing never ran (a bad request, say)."""
    if r.order is None and r.skips is None:
        return None
    doc: dict[str, Any] = {"candidates": [c.provider_id for c in r.order or ()]}
    if r.skips:
        doc["skipped"] = r.skips
    snapshot = r.snapshot
    if snapshot is not None and r.model is not None and snapshot.disabled:
        linked = snapshot.linked.get(r.model, {})
        disabled = sorted(pid for pid in linked if pid in snapshot.disabled)
        if disabled:
            doc["disabled"] = disabled
    return orjson.dumps(doc).decode()


_INSERT_STAND_IN = (
    "INSERT INTO providers (id, name, type, enabled, description, archived_at, created_at,"
    " updated_at) SELECT :id, :id || ' (deleted)', 'unknown', 0, :why, :now, :now, :now"
    " WHERE NOT EXISTS (SELECT 1 FROM providers WHERE id = :id)"
)
_STAND_IN_WHY = "Deleted while a request it served was being recorded; kept for that history."
_UPDATE_PROVIDER = (
    "UPDATE providers SET success_count = success_count + ?, error_count = error_count + ?,"
    " last_used_at = {last_used},"
    " last_error_at = CASE WHEN CAST(? AS BIGINT) IS NULL THEN last_error_at"
    "   ELSE {last_error} END,"
    " last_error = CASE WHEN ? >= coalesce(last_error_at, 0) THEN ? ELSE last_error END"
    " WHERE id = ?"
)
_REQUEST_COLUMNS = (
    "id", "created_at", "endpoint", "client_key_id", "model", "provider_id", "upstream_model",
    "stream", "status", "status_code", "latency_ms", "ttft_ms", "prompt_tokens",
    "completion_tokens", "total_tokens", "cost", "currency", "attempts", "error", "trace",
)  # fmt: skip
_ATTEMPT_COLUMNS = (
    "request_id", "n", "provider_id", "started_at", "status", "status_code", "latency_ms", "error",
)  # fmt: skip


# What one bad row can raise: a constraint, a value the database cannot hold, a wrong type.
_ROW_ERRORS: tuple[type[Exception], ...] = (*DatabaseError, OverflowError, ValueError, TypeError)


def update_provider_sql(db: Database) -> str:
    return _UPDATE_PROVIDER.format(
        last_used=db.greatest("coalesce(last_used_at, 0)", "?"),
        last_error=db.greatest("coalesce(last_error_at, 0)", "?"),
    )


def _request_row(r: RequestRecord) -> tuple[Any, ...]:
    return (
        r.id, r.created_at, r.endpoint, r.client_key_id, r.model, r.provider_id,
        r.upstream_model, int(r.stream), r.status, r.status_code, round(r.latency_ms, 3),
        None if r.ttft_ms is None else round(r.ttft_ms, 3), r.prompt_tokens,
        r.completion_tokens, r.total_tokens, r.cost, r.currency, len(r.attempts), r.error,
        trace_document(r),
    )  # fmt: skip


def _attempt_rows(r: RequestRecord) -> Iterable[tuple[Any, ...]]:
    for a in r.attempts:
        yield (
            r.id, a.n, a.provider_id, a.started_at, a.status, a.status_code,
            round(a.latency_ms, 3), a.error,
        )  # fmt: skip


def _provider_updates(batch: list[RequestRecord]) -> list[tuple[Any, ...]]:
    # provider_id -> [successes, errors, last_used_at, last_error_at, last_error]
    totals: dict[str, list[Any]] = {}
    for record in batch:
        for a in record.attempts:
            t = totals.setdefault(a.provider_id, [0, 0, 0, None, None])
            t[2] = max(t[2], a.started_at)
            if a.status == "success":
                t[0] += 1
            elif a.status == "client_closed":
                continue  # the client left: neither a success nor the provider's error
            else:
                t[1] += 1
                if t[3] is None or a.started_at >= t[3]:
                    t[3], t[4] = a.started_at, a.error
    return [
        (s, e, used, err_at, err_at, err_at, err, pid)
        for pid, (s, e, used, err_at, err) in totals.items()
    ]


class Recorder:
    """Writes request history in the background. ``start()``, ``record()``..., ``stop()``."""

    def __init__(
        self, db: Database, *, queue_size: int, batch_size: int, flush_interval_s: float
    ) -> None:
        self.db = db
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.queue: asyncio.Queue[RequestRecord] = asyncio.Queue(maxsize=queue_size)
        self.written = 0
        self.waits = 0
        self.failed = 0
        self.unreachable = 0  # failed tries in the current outage (0: the database answers)
        # Read by the metrics at scrape time (provider_router_recorder_*_rows_total): request
        # records written, and records given up on (each with its attempts).
        self.rows_written = 0
        self.rows_dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._update_provider = update_provider_sql(db)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recorder")

    async def record(self, record: RequestRecord) -> None:
        """Queue one request's rows; when the queue is full, wait (back-pressure), never drop."""
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            self.waits += 1
            await self.queue.put(record)

    async def flush(self) -> None:
        """Wait until everything queued so far is written."""
        await self.queue.join()

    async def stop(self) -> None:
        """Write everything still queued, then end the background task."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        await self.queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            if not self._stopping and self.queue.qsize() < self.batch_size:
                # Under light load, wait a moment so one transaction carries many rows;
                # stop() cuts the wait short.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            batch = [first]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                await asyncio.shield(self._write(batch))
            except Exception:
                # An unforeseen error must not end this task: the queue would fill up and
                # every request after that would wait forever to be recorded.
                self.failed += len(batch)
                self.rows_dropped += len(batch)
                log.exception("Could not record %d request(s)", len(batch))
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def _write(self, batch: list[RequestRecord]) -> None:
        try:
            try:
                await self._write_when_reachable(batch)
            except IntegrityError as exc:
                if not is_foreign_key_error(exc):
                    raise
                # A provider was deleted while a request it served was still queued (its first
                # one, or one from another process): keep the history under a stand-in.
                await self._write_when_reachable(batch, stand_ins=True)
        except Unreachable:
            self.failed += len(batch)
            self.rows_dropped += len(batch)
            log.exception(
                "Could not record %d request(s): the database stayed unreachable", len(batch)
            )
            return
        except _ROW_ERRORS:
            if len(batch) == 1:
                self.failed += 1
                self.rows_dropped += 1
                log.exception("Could not record request %s", batch[0].id)
                return
            # One bad row must not take the rest of its batch with it: write them one by one.
            for record in batch:
                await self._write([record])
            return
        self.written += len(batch)
        self.rows_written += len(batch)

    async def _write_when_reachable(
        self, batch: list[RequestRecord], *, stand_ins: bool = False
    ) -> None:
        """Write the batch, trying again while the database cannot be reached (a PostgreSQL
        restart or failover), for up to ``UNREACHABLE_RETRY_S``; the rows wait in memory and the
        queue's back-pressure, not a loss, is what a long outage costs."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + UNREACHABLE_RETRY_S
        delay = 0.1
        while True:
            try:
                await self._write_rows(batch, stand_ins=stand_ins)
            except Unreachable as exc:
                if loop.time() + delay > give_up:
                    raise
                if not self.unreachable:
                    log.warning("The database cannot be reached (%s); holding history rows and"
                                " trying again", type(exc).__name__)  # fmt: skip
                self.unreachable += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                if self.unreachable:
                    log.warning("The database is reachable again; history rows are being written")
                    self.unreachable = 0
                return

    async def _write_rows(self, batch: list[RequestRecord], *, stand_ins: bool = False) -> None:
        async with self.db.transaction() as conn:
            if stand_ins:
                await _add_stand_ins(conn, batch)
            db = self.db
            rows = [_request_row(r) for r in batch]
            await db.insert_rows(conn, "requests", _REQUEST_COLUMNS, rows)
            attempts = [row for r in batch for row in _attempt_rows(r)]
            if attempts:
                await db.insert_rows(conn, "attempts", _ATTEMPT_COLUMNS, attempts)
            updates = _provider_updates(batch)
            if updates:
                await conn.executemany(self._update_provider, updates)


async def _add_stand_ins(conn: Connection, batch: list[RequestRecord]) -> None:
    """An archived, disabled stand-in row for each provider the batch names that is gone."""
    ids = {r.provider_id for r in batch if r.provider_id} | {
        a.provider_id for r in batch for a in r.attempts
    }
    now = int(time.time() * 1000)
    for provider_id in sorted(ids):
        cursor = await conn.execute(
            _INSERT_STAND_IN, {"id": provider_id, "why": _STAND_IN_WHY, "now": now}
        )
        if cursor.rowcount:
            log.warning(
                "Provider %r was deleted while a request it served was still being recorded;"
                " kept an archived stand-in so no history is lost",
                provider_id,
            )
