"""The PostgreSQL database: the :class:`~router.store.db.Database` interface on asyncpg.

The store's SQL is written once, with SQLite's ``?`` and ``:name`` placeholders; this module
rewrites them to PostgreSQL's ``$1``, ``$2``... (once per statement text, cached) and answers the
few dialect questions (:meth:`greatest`, :meth:`index_hint`, :meth:`log2_bin`,
:meth:`insert_rows`, which uses ``COPY``). Reads go through a small connection pool; each write
unit of work is one transaction on a pooled connection. :meth:`listen` hands out a dedicated
connection that receives ``NOTIFY`` messages (config changes, see
:mod:`router.gateway.snapshots`).

Example::

    db = PostgresDatabase("postgresql://router:secret@127.0.0.1:5432/router", cipher=cipher)
    await db.open()
    async with db.transaction() as conn:
        await conn.execute("UPDATE settings SET value = ? WHERE key = ?", ("1", "x"))
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg

from router.redact import remember
from router.settings import display_url
from router.store.db import Connection, Database, Params, Row

if TYPE_CHECKING:
    from router.secrets import Cipher

# A string literal, a quoted name, a cast (left alone), a ``?`` or a ``:name`` placeholder.
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|::|\?|:([A-Za-z_][A-Za-z0-9_]*)")
POOL_SIZE = 4


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> tuple[str, tuple[str, ...] | None]:
    """``sql`` with ``$n`` placeholders, and the parameter names in ``$n`` order for ``:name``
    placeholders (``None`` when the statement uses ``?``)."""
    names: list[str] = []
    positional = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal positional
        found = match[0]
        if found == "?":
            positional += 1
            return f"${positional}"
        if match[1] is not None:
            if match[1] not in names:
                names.append(match[1])
            return f"${names.index(match[1]) + 1}"
        return found

    text = _TOKENS.sub(replace, sql)
    return text, (tuple(names) if names else None)


def arguments(names: tuple[str, ...] | None, params: Params) -> Sequence[Any]:
    if names is None:
        return params if isinstance(params, Sequence) else ()
    assert isinstance(params, dict), "named placeholders take a dict of parameters"
    return [params[name] for name in names]


class Cursor:
    """What ``conn.execute`` gives inside a transaction: the rows and the number changed."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[asyncpg.Record], status: str) -> None:
        self.rows = rows
        last = status.rsplit(" ", 1)[-1] if status else ""
        self.rowcount = int(last) if last.isdigit() else -1

    async def fetchone(self) -> asyncpg.Record | None:
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list[asyncpg.Record]:
        return self.rows

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Pending:
    """``conn.execute(...)``: awaitable, and usable as ``async with`` like aiosqlite's."""

    __slots__ = ("_run",)

    def __init__(self, run: Callable[[], Awaitable[Cursor]]) -> None:
        self._run = run

    def __await__(self) -> Generator[Any, None, Cursor]:
        return self._run().__await__()

    async def __aenter__(self) -> Cursor:
        return await self._run()

    async def __aexit__(self, *exc: object) -> None:
        return None


class PgConnection:
    """One pooled connection inside a transaction, with aiosqlite's method names."""

    __slots__ = ("raw",)

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Params = ()) -> _Pending:
        return _Pending(lambda: self._execute(sql, parameters))

    async def _execute(self, sql: str, parameters: Params) -> Cursor:
        text, names = translate(sql)
        statement = await self.raw.prepare(text)
        rows = await statement.fetch(*arguments(names, parameters))
        return Cursor(rows, statement.get_statusmsg())

    async def execute_fetchall(self, sql: str, parameters: Params = ()) -> list[asyncpg.Record]:
        text, names = translate(sql)
        return list(await self.raw.fetch(text, *arguments(names, parameters)))

    async def executemany(self, sql: str, parameters: Iterable[Params]) -> None:
        text, names = translate(sql)
        rows = [arguments(names, p) for p in parameters]
        if rows:
            await self.raw.executemany(text, rows)


class PostgresDatabase(Database):
    """A PostgreSQL database named by a ``postgresql://`` URL: ``await open()`` ... ``close()``."""

    dialect = "postgresql"
    notifies = True
    row_lock = " FOR UPDATE"

    def __init__(self, url: str, *, cipher: Cipher | None = None) -> None:
        super().__init__(Path(), cipher=cipher)
        self.url = url
        self.label = display_url(url)
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        password = urlsplit(self.url).password
        if password:
            remember(password)  # scrubbed from every log line, whatever error carries it
        self._pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=POOL_SIZE, command_timeout=60
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _need_pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "Database.open() was not awaited"
        return self._pool

    async def execute(self, sql: str, params: Params = ()) -> list[Row]:
        text, names = translate(sql)
        return list(await self._need_pool().fetch(text, *arguments(names, params)))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._need_pool().acquire() as raw, raw.transaction():
            yield PgConnection(raw)

    async def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL keeps no WAL copy of old values for readers to find."""

    async def insert_rows(
        self, conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        assert isinstance(conn, PgConnection)
        await conn.raw.copy_records_to_table(table, records=rows, columns=list(columns))

    @asynccontextmanager
    async def listen(
        self, channel: str, callback: Callable[[str], None], lost: Callable[[], None]
    ) -> AsyncIterator[object]:
        """``LISTEN channel`` on a connection of its own (outside the pool) for the block."""
        conn = await asyncpg.connect(self.url, timeout=10)

        def deliver(_: object, __: int, ___: str, payload: str) -> None:
            callback(payload)

        try:
            conn.add_termination_listener(lambda _: lost())
            await conn.add_listener(channel, deliver)
            yield conn
        finally:
            conn.terminate()

    @staticmethod
    def greatest(*terms: str) -> str:
        return f"GREATEST({', '.join(terms)})"

    @staticmethod
    def index_hint(index: str) -> str:
        return ""  # PostgreSQL's planner chooses; there is no hint syntax

    @staticmethod
    def log2_bin(expression: str, per_doubling: int) -> str:
        return f"CAST(floor(ln({expression}) / ln(2.0) * {per_doubling}) AS BIGINT)"
