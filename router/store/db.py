"""The database interface, and its SQLite implementation: one writer connection, one reader, WAL.

:class:`Database` is what every store module is written against; the SQL they hand it is
SQLite's, with ``?`` or ``:name`` placeholders. :class:`router.store.postgres.PostgresDatabase`
implements the same interface on PostgreSQL, rewriting placeholders; the few fragments that differ
between the two are asked of the database (:attr:`Database.dialect`, :meth:`Database.greatest`,
:meth:`Database.index_hint`, :meth:`Database.insert_rows`).

Every write goes through :meth:`Database.transaction` (one ``BEGIN IMMEDIATE`` unit of work on the
single writer connection, serialised by a lock); reads use :meth:`Database.execute` on a separate
connection and never wait for a writer, thanks to WAL.

Example::

    db = Database(Path("data/provider-router.db"))
    await db.open()
    async with db.transaction() as conn:
        await conn.execute("UPDATE settings SET value = ? WHERE key = ?", ("1", "x"))
    rows = await db.execute("SELECT key, value FROM settings")
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiosqlite
import asyncpg

Params = Sequence[Any] | dict[str, Any]

# What a store function may catch from either backend.
IntegrityError: tuple[type[Exception], ...] = (
    sqlite3.IntegrityError,
    asyncpg.IntegrityConstraintViolationError,
)
DatabaseError: tuple[type[Exception], ...] = (
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


# The database could not be reached (not a bad row): the same write may succeed later.
Unreachable: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
)

# A write the database cannot take now but may take later (worth retrying, not a bad row): SQLite
# locked, full or read-only (OperationalError), PostgreSQL unreachable, out of disk or memory,
# or read-only after a failover.
Unwritable: tuple[type[Exception], ...] = (
    sqlite3.OperationalError,
    *Unreachable,
    asyncpg.InsufficientResourcesError,
    asyncpg.ReadOnlySQLTransactionError,
)
# The same refusals as the database's own exceptions (no bare OSError): what the app answers
# with a sentence (503, or 507 for a full disk) instead of a 500.
WriteRefused: tuple[type[Exception], ...] = tuple(e for e in Unwritable if e is not OSError)


class Row(Protocol):
    """A result row: by column name or position, ``keys()``, ``dict(row)`` (sqlite3.Row on
    SQLite, asyncpg.Record on PostgreSQL)."""

    def __getitem__(self, key: Any, /) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...
    def keys(self) -> Any: ...


class Connection(Protocol):
    """The connection a write transaction hands out (aiosqlite's, or PostgreSQL's wrapper)."""

    def execute(self, sql: str, parameters: Params = ..., /) -> Any: ...
    async def executemany(self, sql: str, parameters: Iterable[Params], /) -> Any: ...
    async def execute_fetchall(self, sql: str, parameters: Params = ..., /) -> Iterable[Any]: ...


def is_foreign_key_error(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.ForeignKeyViolationError) or "FOREIGN KEY" in str(exc)


def is_unique_error(exc: BaseException, table: str, column: str) -> bool:
    """True when ``exc`` is a unique violation on ``table.column`` (either backend's wording)."""
    return f"{table}.{column}" in str(exc) or f"{table}_{column}_key" in str(exc)


if TYPE_CHECKING:
    from router.secrets import Cipher


class Database:
    """A SQLite database file: create it, ``await open()``, and ``await close()`` at the end.

    ``cipher`` encrypts and decrypts sensitive provider config values; without one, reading or
    writing such a value fails (:func:`router.store.backend.database_for` always attaches one).
    """

    dialect = "sqlite"
    notifies = False  # whether :meth:`listen` works (PostgreSQL's LISTEN/NOTIFY)
    row_lock = ""  # appended to a SELECT to lock its rows (the write transaction already does)

    def __init__(self, path: Path, *, cipher: Cipher | None = None) -> None:
        self.path = path
        self.cipher = cipher
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await aiosqlite.connect(self.path, isolation_level=None)
        self._writer.row_factory = sqlite3.Row
        await self._writer.execute("PRAGMA journal_mode = WAL")
        await self._writer.execute("PRAGMA foreign_keys = ON")
        await self._writer.execute("PRAGMA busy_timeout = 5000")
        await self._writer.execute("PRAGMA synchronous = NORMAL")
        # Overwrite deleted content, so a replaced credential leaves no old bytes in free pages.
        await self._writer.execute("PRAGMA secure_delete = ON")
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        self._reader.row_factory = sqlite3.Row
        await self._reader.execute("PRAGMA busy_timeout = 5000")
        await self._reader.execute("PRAGMA query_only = ON")

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def execute(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a read and return all rows."""
        assert self._reader is not None, "Database.open() was not awaited"
        # One call on the connection's thread: the statement runs to its end before another
        # task's read can start, so no read is left open across an await. An open statement
        # would pin the connection's snapshot and a later read could miss a committed write.
        return list(await self._reader.execute_fetchall(sql, params))

    async def execute_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.execute(sql, params)
        return rows[0] if rows else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One write unit of work: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error."""
        assert self._writer is not None, "Database.open() was not awaited"
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
                await self._writer.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (a full disk, say) may have ended the transaction already;
                # a ROLLBACK then would fail and hide the error that matters.
                if self._writer.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await self._writer.execute("ROLLBACK")
                raise

    async def execute_write(self, sql: str, params: Params = ()) -> int:
        """Run one write statement in its own transaction; return the number of rows changed."""
        async with self.transaction() as conn:
            cursor = await conn.execute(sql, params)
            return int(cursor.rowcount)

    async def checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it (old page images go with it)."""
        assert self._writer is not None, "Database.open() was not awaited"
        async with self._write_lock:
            await self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def execute_write_many(self, sql: str, rows: Iterable[Params]) -> None:
        async with self.transaction() as conn:
            await conn.executemany(sql, rows)

    def listen(
        self, channel: str, callback: Callable[[str], None], lost: Callable[[], None]
    ) -> AbstractAsyncContextManager[object]:
        """Call ``callback(payload)`` for every notification on ``channel`` while the block
        runs, and ``lost()`` if the connection carrying them drops. SQLite has none: its
        processes poll ``config_version`` instead."""
        raise NotImplementedError("SQLite has no notifications; poll config_version instead.")

    async def insert_rows(
        self, conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """Insert many rows in the caller's transaction, the fastest way the backend has."""
        marks = ", ".join("?" * len(columns))
        await conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    @staticmethod
    def greatest(*terms: str) -> str:
        """SQL for the largest of ``terms`` (SQLite's multi-argument ``max``)."""
        return f"max({', '.join(terms)})"

    @staticmethod
    def index_hint(index: str) -> str:
        """``INDEXED BY index`` on SQLite, whose planner may otherwise pick a worse index."""
        return f"INDEXED BY {index}"

    @staticmethod
    def log2_bin(expression: str, per_doubling: int) -> str:
        """SQL for ``floor(log2(expression) * per_doubling)`` as an integer."""
        return f"CAST(log2({expression}) * {per_doubling} AS INTEGER)"
