"""Pruning request history so it cannot fill the disk, and giving the space back.

``history.retention_days`` (default 30; 0 keeps everything) and ``history.max_rows`` (optional)
decide a cutoff time; every request older than it goes, with its attempts, in small batches: each
batch is one short write transaction, and the single writer's lock is handed back between batches,
so a recorder flush waiting for it goes next and is delayed by at most one batch. The batch size
adapts so that a batch takes about :data:`BATCH_TARGET_MS` (a request row sits in seven indexes,
and ``secure_delete`` zeroes what it frees, so on a loaded disk 500 rows can take far longer).
Failed-authentication counts (``auth_failures``) older than the cutoff go too. The hourly roll-up
(``usage_hourly``) is never pruned: it is what keeps statistics right over months.

Every other table that holds history is pruned here as well, through :data:`PRUNERS`: a
``(table, function)`` pair whose function deletes rows older than ``before``, ``limit`` per
transaction, and returns how many it deleted; a dry run counts the table's rows whose
``created_at`` (``minute`` for ``auth_failures``) is older. Stored Responses are there.

The file shrinks afterwards through SQLite's incremental vacuum: new databases are created with
``auto_vacuum = INCREMENTAL``, and after pruning the freed pages are given back a slice at a time
(:func:`release_space`), then the WAL is truncated. An existing database created before this
needs one full ``VACUUM`` to switch modes (:func:`ensure_incremental` decides when; see
docs/operations.md).

On PostgreSQL the same batches delete the same rows; the space is left to autovacuum, which
marks the freed tuples reusable without blocking writers (a plain ``VACUUM`` would only do the
same sooner, and ``VACUUM FULL`` would lock the tables), so :func:`release_space` reports 0 and
neither the PRAGMAs nor :func:`vacuum` apply there (docs/postgresql.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3  # the one-off VACUUM on a SQLite file (CLI, start-up)
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from router.store import responses, rollup
from router.store.db import Database, DatabaseError

log = logging.getLogger("provider_router.retention")

DAY_MS = 24 * 3600 * 1000
BATCH_ROWS = 500  # the most requests per batch
MIN_BATCH_ROWS = 20
BATCH_TARGET_MS = 50.0
VACUUM_PAGES = 500  # pages given back per transaction (2 MB at the default 4 KiB page)
# An existing database up to this size is switched to incremental vacuum at start by itself.
AUTO_VACUUM_MAX_BYTES = 256 * 1024 * 1024
INCREMENTAL = 2  # PRAGMA auto_vacuum: 0 none, 1 full, 2 incremental

Pruner = Callable[[Database, int, int], Awaitable[int]]


async def _prune_auth_failures(db: Database, before: int, limit: int) -> int:
    return await db.execute_write(
        "DELETE FROM auth_failures WHERE (minute, source, key_prefix, endpoint) IN"
        " (SELECT minute, source, key_prefix, endpoint FROM auth_failures WHERE minute < ?"
        " ORDER BY minute LIMIT ?)",
        (before, limit),
    )


# Other history tables, pruned after requests with the same cutoff: (table, function).
PRUNERS: list[tuple[str, Pruner]] = [
    ("auth_failures", _prune_auth_failures),
    ("responses", responses.prune_before),
]
# What a pruning pass may meet and survive until the next one (full disk, locked file, outage).
_PRUNE_ERRORS: tuple[type[Exception], ...] = (*DatabaseError, OSError)
_TIME_COLUMNS = {"auth_failures": "minute"}  # the rest use created_at


@dataclass
class PruneResult:
    """What one pruning pass removed (or, for a dry run, would remove)."""

    before: int
    requests: int = 0
    attempts: int = 0
    others: dict[str, int] = field(default_factory=dict)
    freed_bytes: int = 0
    dry_run: bool = False
    longest_batch_ms: float = 0.0  # the longest the writer was held by one batch

    def as_dict(self) -> dict[str, object]:
        return {
            "before": self.before,
            "requests": self.requests,
            "attempts": self.attempts,
            **self.others,
            "freed_bytes": self.freed_bytes,
            "dry_run": self.dry_run,
            "longest_batch_ms": round(self.longest_batch_ms, 3),
        }


async def cutoff(
    db: Database, *, retention_days: int, max_rows: int | None, now_ms: int | None = None
) -> int | None:
    """The time before which requests go, from the two settings; None keeps everything."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    found: list[int] = []
    if retention_days > 0:
        found.append(now - retention_days * DAY_MS)
    if max_rows:
        # The newest row past the allowance and everything older go (the requests_created index
        # walks max_rows entries; no count of the table).
        row = await db.execute_one(
            "SELECT created_at FROM requests ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?",
            (max_rows,),
        )
        if row is not None:
            found.append(row["created_at"] + 1)
    return max(found) if found else None


async def _delete_batch(db: Database, before: int, limit: int) -> tuple[int, int]:
    """One transaction: the oldest ``limit`` requests before ``before`` and their attempts."""
    oldest = (
        f"SELECT id FROM requests {db.index_hint('requests_created')} WHERE created_at < :before"
        " ORDER BY created_at, id LIMIT :limit"
    )
    args = {"before": before, "limit": limit}
    async with db.transaction() as conn:
        attempts = await conn.execute(f"DELETE FROM attempts WHERE request_id IN ({oldest})", args)
        requests = await conn.execute(f"DELETE FROM requests WHERE id IN ({oldest})", args)
        return requests.rowcount, attempts.rowcount


async def prune(
    db: Database,
    before: int,
    *,
    dry_run: bool = False,
    batch_rows: int = BATCH_ROWS,
    pause_s: float = 0.0,
) -> PruneResult:
    """Delete the history older than ``before`` (Unix ms) in batches; give the space back.

    ``dry_run`` counts what would go and changes nothing. ``pause_s`` sleeps between batches
    (the background pruner's way of staying out of the proxy's way).
    """
    result = PruneResult(before=before, dry_run=dry_run)
    if dry_run:
        row = await db.execute_one(
            "SELECT COUNT(*) AS n, CAST(coalesce(SUM(attempts), 0) AS BIGINT) AS a FROM requests"
            " WHERE created_at < ?",
            (before,),
        )
        assert row is not None
        result.requests, result.attempts = row["n"], row["a"]
        for table, _ in PRUNERS:
            column = _TIME_COLUMNS.get(table, "created_at")
            counted = await db.execute_one(
                f"SELECT COUNT(*) AS n FROM {table} WHERE {column} < ?", (before,)
            )
            result.others[table] = counted["n"] if counted else 0
        return result
    size = batch_rows
    while True:
        started = time.perf_counter()
        requests, attempts = await _delete_batch(db, before, size)
        took = (time.perf_counter() - started) * 1000
        result.longest_batch_ms = max(result.longest_batch_ms, took)
        result.requests += requests
        result.attempts += attempts
        if requests < size:
            break
        # Keep each hold on the writer near the target, whatever the disk and the load do.
        if took > BATCH_TARGET_MS:
            size = max(size // 2, MIN_BATCH_ROWS)
        elif took < BATCH_TARGET_MS / 2:
            size = min(size * 2, batch_rows)
        await asyncio.sleep(pause_s)  # the writer's lock is free: a waiting flush goes first
    for name, pruner in PRUNERS:
        total = 0
        while True:
            deleted = await pruner(db, before, batch_rows)
            total += deleted
            if deleted < batch_rows:
                break
            await asyncio.sleep(pause_s)
        result.others[name] = total
    newest = db.greatest("CAST(settings.value AS BIGINT)", "CAST(excluded.value AS BIGINT)")
    await db.execute_write(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET"
        f" value = CAST({newest} AS TEXT)",
        (rollup.PRUNED_BEFORE_KEY, str(before)),
    )
    result.freed_bytes = await release_space(db, pause_s=pause_s)
    return result


async def release_space(db: Database, *, pause_s: float = 0.0) -> int:
    """Give free pages back to the file system, a slice per transaction, then truncate the WAL.
    Returns the bytes the database file shrank by (0 when it is not in incremental mode, and
    always on PostgreSQL, where autovacuum makes the space reusable)."""
    if db.dialect != "sqlite":
        return 0
    size_before = _file_size(db.path)
    mode = await db.execute_one("PRAGMA auto_vacuum")
    if mode is None or mode[0] != INCREMENTAL:
        return 0
    while True:
        free = await db.execute_one("PRAGMA freelist_count")
        if free is None or free[0] == 0:
            break
        async with db.transaction() as conn:
            # The pragma frees one page per step: run it to its end before the COMMIT.
            await conn.execute_fetchall(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
        await asyncio.sleep(pause_s)
    await db.checkpoint()
    return max(size_before - _file_size(db.path), 0)


def _file_size(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += path.with_name(path.name + suffix).stat().st_size
    return total


def vacuum(path: Path) -> None:
    """One full ``VACUUM`` that switches the file to incremental vacuum (blocks writers; needs
    free space about the size of the database)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def ensure_incremental(path: Path) -> str | None:
    """Switch an existing database to incremental vacuum when that is cheap; otherwise say how.

    A ``VACUUM`` rewrites the whole file, holds the writer for its duration and needs about as
    much free space again, so it runs by itself at start only for a database of at most
    :data:`AUTO_VACUUM_MAX_BYTES` with twice its size free; a larger one keeps working (pruning
    still deletes; freed pages are reused, the file just does not shrink) and the returned
    sentence tells the operator to run ``provider-router db vacuum`` at a quiet moment.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA auto_vacuum").fetchone()[0]
    finally:
        conn.close()
    if mode == INCREMENTAL:
        return None
    size = _file_size(path)
    free = shutil.disk_usage(path.parent).free
    if size <= AUTO_VACUUM_MAX_BYTES and free >= 2 * size:
        started = time.perf_counter()
        vacuum(path)
        log.info(
            "Switched the database to incremental vacuum (one VACUUM of %d bytes, %.1f s)",
            size,
            time.perf_counter() - started,
        )
        return None
    return (
        f"The database ({size // (1024 * 1024)} MiB) is not in incremental-vacuum mode, so"
        " pruned history is reused but the file does not shrink; run 'provider-router db"
        " vacuum' at a quiet moment (it blocks writes while it runs and needs about"
        f" {size // (1024 * 1024)} MiB free)."
    )


class HistoryPruner:
    """The background task: a pruning pass every ``interval_s`` (the first one ``first_s`` after
    start), each in small batches with a pause between them."""

    def __init__(
        self,
        db: Database,
        *,
        retention_days: int,
        max_rows: int | None,
        interval_s: float,
        first_s: float = 60.0,
        pause_s: float = 0.01,
    ) -> None:
        self.db = db
        self.retention_days = retention_days
        self.max_rows = max_rows
        self.interval_s = interval_s
        self.first_s = first_s
        self.pause_s = pause_s
        self.passes = 0
        self.pruned = 0

    @property
    def enabled(self) -> bool:
        return self.retention_days > 0 or bool(self.max_rows)

    async def run_once(self) -> PruneResult | None:
        before = await cutoff(self.db, retention_days=self.retention_days, max_rows=self.max_rows)
        if before is None:
            return None
        result = await prune(self.db, before, pause_s=self.pause_s)
        self.passes += 1
        self.pruned += result.requests
        if result.requests or any(result.others.values()):
            log.info(
                "Pruned %d request(s) and %d attempt(s) older than %s; the file shrank by %d bytes",
                result.requests,
                result.attempts,
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(before / 1000)),
                result.freed_bytes,
            )
        return result

    async def run(self) -> None:
        await asyncio.sleep(min(self.first_s, self.interval_s))
        while True:
            try:
                await self.run_once()
            except _PRUNE_ERRORS as exc:
                # The disk may be full or the file locked: try again next time, quietly.
                log.warning("Could not prune the history: %s; will retry", exc)
            await asyncio.sleep(self.interval_s)
