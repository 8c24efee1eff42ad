"""The SQLite database: one writer connection, one reader connection, WAL.

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
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

Params = Sequence[Any] | dict[str, Any]

if TYPE_CHECKING:
    from router.secrets import Cipher
    from router.settings import Settings


class Database:
    """A SQLite database file: create it, ``await open()``, and ``await close()`` at the end.

    ``cipher`` encrypts and decrypts sensitive provider config values; without one, reading or
    writing such a value fails (:func:`database_for` always attaches one).
    """

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

    async def execute(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run a read and return all rows."""
        assert self._reader is not None, "Database.open() was not awaited"
        # One call on the connection's thread: the statement runs to its end before another
        # task's read can start, so no read is left open across an await. An open statement
        # would pin the connection's snapshot and a later read could miss a committed write.
        return list(await self._reader.execute_fetchall(sql, params))

    async def execute_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.execute(sql, params)
        return rows[0] if rows else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
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
            return cursor.rowcount

    async def checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it (old page images go with it)."""
        assert self._writer is not None, "Database.open() was not awaited"
        async with self._write_lock:
            await self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def execute_write_many(self, sql: str, rows: Iterable[Params]) -> None:
        async with self.transaction() as conn:
            await conn.executemany(sql, rows)


def database_for(settings: Settings) -> Database:
    """The database the settings name, not yet opened: every server and CLI path builds it here.

    The credential cipher is attached here: the secret key from the settings, or the key file
    beside the database (generated on first use).
    """
    from router.secrets import resolve_cipher

    return Database(settings.database_path, cipher=resolve_cipher(settings))
