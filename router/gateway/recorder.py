"""The recorder: history rows leave the request path through a bounded queue.

One background task drains the queue and writes ``requests`` and ``attempts`` rows, the
per-provider counters and the failed-authentication counts, in batches (one transaction per
batch). The request path never waits for the database: it waits only when the queue is full while
the database keeps up (back-pressure, counted in ``waits``). When the database cannot be written
(a full disk, a locked or read-only file) batches are retried for ``recorder.retry_ms``, then
dropped and counted in ``rows_dropped``; the proxy keeps answering and nothing piles up.
:meth:`Recorder.stop` writes what is still queued within the shutdown grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
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
    Unwritable,
    is_foreign_key_error,
)
from router.store.rollup import (
    BUCKETS,
    HOUR_MS,
    LATENCY_UPSERT_SQL,
    UPSERT_SQL,
    latency_bucket,
)

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
_UPSERT_AUTH_FAILURE = (
    "INSERT INTO auth_failures (minute, source, key_prefix, endpoint, failures, first_at,"
    " last_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (minute, source, key_prefix, endpoint)"
    " DO UPDATE SET failures = auth_failures.failures + excluded.failures,"
    " first_at = {least}, last_at = {greatest}"
)
# Distinct (minute, source, key prefix, endpoint) groups held between two flushes; past it, new
# sources are summed under one group so a scan from many addresses stays bounded too.
MAX_AUTH_GROUPS = 10_000
OTHER_SOURCES = "(other sources)"
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
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


def upsert_auth_failure_sql(db: Database) -> str:
    least = "LEAST" if db.dialect == "postgresql" else "min"
    return _UPSERT_AUTH_FAILURE.format(
        least=f"{least}(auth_failures.first_at, excluded.first_at)",
        greatest=db.greatest("auth_failures.last_at", "excluded.last_at"),
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


def hourly_sums(batch: list[RequestRecord]) -> list[tuple[Any, ...]]:
    """The batch's ``usage_hourly`` increments, one per (hour, endpoint, provider, model, key):
    a dict update per request here, one upsert per group in SQL."""
    sums: dict[tuple[Any, ...], list[Any]] = {}
    for r in batch:
        key = (
            r.created_at - r.created_at % HOUR_MS, r.endpoint, r.provider_id or "",
            r.model or "", r.client_key_id or "",
        )  # fmt: skip
        found = sums.get(key)
        if found is None:
            found = sums[key] = [0, 0, 0, 0, 0, 0.0] + [0] * BUCKETS
        found[0] += 1
        found[1] += r.status != "success"
        found[2] += r.prompt_tokens or 0
        found[3] += r.completion_tokens or 0
        found[4] += r.total_tokens or 0
        found[5] += r.cost or 0.0
        # Bucketed as stored (rounded), so a re-roll-up from the rows agrees.
        found[6 + latency_bucket(round(r.latency_ms, 3))] += 1
    return [(*key, *values) for key, values in sums.items()]


# Where the group columns sit in a usage_hourly row, and where its histogram starts.
_GROUP_AT = {"provider_id": 2, "model": 3}
_HISTOGRAM_AT = 11


def latency_sums(usage: list[tuple[Any, ...]]) -> dict[str, list[tuple[Any, ...]]]:
    """The histograms of :func:`hourly_sums`'s rows, summed per hour and provider and per hour
    and model (the small tables long windows read their percentiles from)."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    for column, at in _GROUP_AT.items():
        sums: dict[tuple[Any, Any], list[int]] = {}
        for row in usage:
            key = (row[0], row[at])
            histogram = row[_HISTOGRAM_AT:]
            into = sums.get(key)
            if into is None:
                sums[key] = list(histogram)
            else:
                for index, count in enumerate(histogram):
                    into[index] += count
        found[column] = [(*key, *histogram) for key, histogram in sums.items()]
    return found


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
    """Writes request history in the background. ``start()``, ``record()``..., ``stop()``.

    Memory stays bounded whatever the database does: at most ``queue_size`` rows queued, one
    batch being written, and at most ``batch_size`` requests waiting for room (back-pressure
    while the database keeps up). A batch the database refuses to take (full disk, locked or
    read-only file) is retried with backoff for ``retry_s``, then dropped; while writes are
    failing, a row that finds the queue full is dropped at once instead of waiting. Every row
    given up is counted in ``rows_dropped``, and one warning per ``warn_interval_s`` says how
    many and why (no traceback). The first batch that goes through again ends the episode.
    """

    def __init__(
        self,
        db: Database,
        *,
        queue_size: int,
        batch_size: int,
        flush_interval_s: float,
        retry_s: float = 30.0,
        warn_interval_s: float = 60.0,
    ) -> None:
        self.db = db
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_s = retry_s
        self.warn_interval_s = warn_interval_s
        # None marks "failed authentications are waiting" (see auth_failed); never a row.
        self.queue: asyncio.Queue[RequestRecord | None] = asyncio.Queue(maxsize=queue_size)
        self.written = 0
        self.waits = 0
        self.failed = 0  # rows the database refused as invalid (part of rows_dropped)
        # Read by the metrics at scrape time (provider_router_recorder_*_rows_total): request
        # records written, and records given up on (each with its attempts).
        self.rows_written = 0
        self.rows_dropped = 0  # every row given up, whatever the reason
        self.healthy = True  # False from a failed write until the next one that succeeds
        self.last_error: str | None = None
        self.max_waiters = batch_size
        self._waiters = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._auth: dict[tuple[int, str, str, str], list[int]] = {}
        self._auth_queued = False
        self._dropped_unreported = 0
        self._last_warning = -math.inf
        self._update_provider = update_provider_sql(db)
        self._upsert_auth_failure = upsert_auth_failure_sql(db)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recorder")

    async def record(self, record: RequestRecord) -> None:
        """Queue one request's rows; when the queue is full, wait for room while the database
        keeps up (back-pressure), or drop the row (counted) while it does not."""
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            if not self.healthy or self._waiters >= self.max_waiters:
                self._drop(1, self.last_error or "the history queue is full")
                return
            self.waits += 1
            self._waiters += 1
            try:
                await self.queue.put(record)
            finally:
                self._waiters -= 1

    def auth_failed(self, created_at: int, source: str, key_prefix: str, endpoint: str) -> None:
        """Count one refused client key: summed per minute, source, key prefix and endpoint
        (``auth_failures``), never a row per attempt, so a flood of bad keys cannot grow the
        database or crowd real requests out of the queue."""
        minute = created_at - created_at % 60_000
        key = (minute, source, key_prefix, endpoint)
        found = self._auth.get(key)
        if found is None:
            if len(self._auth) >= MAX_AUTH_GROUPS:
                key = (minute, OTHER_SOURCES, "", endpoint)
                found = self._auth.get(key)
            if found is None:
                found = self._auth[key] = [0, created_at, created_at]
        found[0] += 1
        found[2] = max(found[2], created_at)
        if not self._auth_queued:
            with contextlib.suppress(asyncio.QueueFull):  # a full queue flushes them anyway
                self.queue.put_nowait(None)
                self._auth_queued = True

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or given up)."""
        await self.queue.join()

    @property
    def waiting(self) -> int:
        """Requests waiting for room in the queue (at most ``max_waiters``)."""
        return self._waiters

    async def stop(self, timeout_s: float | None = None) -> int:
        """Write everything still queued, for at most ``timeout_s``, then end the background
        task. Returns how many rows could not be written (counted in ``rows_dropped`` and
        logged)."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return 0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout_s)
        lost = self._in_flight + sum(1 for r in _drain(self.queue) if r is not None)
        lost += len(self._auth)
        self._auth.clear()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if lost:
            self.rows_dropped += lost
            log.warning(
                "Shutting down with %d history row(s) that could not be written (%s)",
                lost,
                self.last_error or "time ran out",
            )
        return lost

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            if not self._stopping and self.queue.qsize() < self.batch_size:
                # Under light load, wait a moment so one transaction carries many rows;
                # stop() cuts the wait short.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            taken = [first]
            while len(taken) < self.batch_size:
                try:
                    taken.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            batch = [r for r in taken if r is not None]
            auth, self._auth, self._auth_queued = self._auth, {}, False
            self._in_flight = len(batch) + len(auth)
            try:
                await self._write_retrying(batch, auth)
            except Exception as exc:
                # An unforeseen error must not end this task: the queue would fill up and
                # every request after that would wait to be recorded.
                log.exception("Could not record %d request(s)", len(batch))
                self.failed += len(batch)
                self._drop(len(batch) + len(auth), f"{type(exc).__name__}: {exc}")
            finally:
                self._in_flight = 0
                for _ in taken:
                    self.queue.task_done()

    async def _write_retrying(
        self, batch: list[RequestRecord], auth: dict[tuple[int, str, str, str], list[int]]
    ) -> None:
        """Write one batch; while the database cannot take it, retry with backoff for
        ``retry_s``, then drop it (counted)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.retry_s
        delay = RETRY_FIRST_S
        while True:
            try:
                # Not shielded: stop() cancels a write only when its time is up, and then the
                # transaction rolls back and its rows are counted as not written.
                await self._write(batch, auth)
            except Unwritable as exc:
                self.last_error = _cause(exc)
                if self.healthy:
                    self.healthy = False
                    log.warning(
                        "The history database cannot be written (%s); retrying for up to %g s,"
                        " the proxy keeps answering",
                        self.last_error,
                        self.retry_s,
                    )
                left = give_up - loop.time()
                if left <= 0:
                    self._drop(len(batch) + len(auth), self.last_error)
                    return
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if not self.healthy:
                self.healthy = True
                log.warning(
                    "The history database can be written again; %d row(s) were dropped while"
                    " it could not",
                    self._dropped_unreported,
                )
                self._dropped_unreported = 0
                self._last_warning = -math.inf
            return

    def _drop(self, rows: int, cause: str) -> None:
        self.rows_dropped += rows
        self._dropped_unreported += rows
        now = time.monotonic()
        if now - self._last_warning >= self.warn_interval_s:
            self._last_warning = now
            log.warning(
                "Dropped %d history row(s) that could not be written (%s); %d dropped in all",
                self._dropped_unreported,
                cause,
                self.rows_dropped,
            )
            self._dropped_unreported = 0

    async def _write(
        self,
        batch: list[RequestRecord],
        auth: dict[tuple[int, str, str, str], list[int]] | None = None,
    ) -> None:
        """Write ``batch`` (and the failed-auth counts). A database that cannot be written
        raises one of :data:`~router.store.db.Unwritable` for the caller to retry; a row the
        database refuses is dropped alone, the rest of its batch written."""
        try:
            try:
                await self._write_rows(batch, auth)
            except IntegrityError as exc:
                if not is_foreign_key_error(exc):
                    raise
                # A provider was deleted while a request it served was still queued (its first
                # one, or one from another process): keep the history under a stand-in.
                await self._write_rows(batch, auth, stand_ins=True)
        except Unwritable:
            raise
        except _ROW_ERRORS:
            if len(batch) <= 1:
                self.failed += len(batch)
                self.rows_dropped += len(batch)
                log.exception("Could not record request %s", batch[0].id if batch else "-")
                if auth:
                    await self._write_rows([], auth)
                return
            # One bad row must not take the rest of its batch with it: write them one by one.
            for record in batch:
                await self._write([record])
            if auth:
                await self._write_rows([], auth)
            return
        self.written += len(batch)
        self.rows_written += len(batch)

    async def _write_rows(
        self,
        batch: list[RequestRecord],
        auth: dict[tuple[int, str, str, str], list[int]] | None = None,
        *,
        stand_ins: bool = False,
    ) -> None:
        async with self.db.transaction() as conn:
            if stand_ins:
                await _add_stand_ins(conn, batch)
            if batch:
                rows = [_request_row(r) for r in batch]
                await self.db.insert_rows(conn, "requests", _REQUEST_COLUMNS, rows)
                usage = hourly_sums(batch)
                await conn.executemany(UPSERT_SQL, usage)
                for column, rows in latency_sums(usage).items():
                    await conn.executemany(LATENCY_UPSERT_SQL[column], rows)
            attempts = [row for r in batch for row in _attempt_rows(r)]
            if attempts:
                await self.db.insert_rows(conn, "attempts", _ATTEMPT_COLUMNS, attempts)
            updates = _provider_updates(batch)
            if updates:
                await conn.executemany(self._update_provider, updates)
            if auth:
                await conn.executemany(
                    self._upsert_auth_failure, [(*key, *counts) for key, counts in auth.items()]
                )


def _drain(queue: asyncio.Queue[RequestRecord | None]) -> Iterable[RequestRecord | None]:
    while True:
        try:
            item = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        queue.task_done()
        yield item


def _cause(exc: BaseException) -> str:
    """The database's reason in a few words (no traceback, no SQL)."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


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
