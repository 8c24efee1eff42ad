"""The clock and the ``config_version`` counter every management write bumps.

Timestamps in the database are Unix milliseconds (:func:`now_ms`). Every write to what routing
reads (providers, their config, models, links, client keys) bumps ``config_version`` in the same
transaction, so that every running proxy sees the change and rebuilds its routing snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from router.store.db import Connection, Database, Params


def now_ms() -> int:
    """The current time in Unix milliseconds, as every timestamp column stores it."""
    return int(time.time() * 1000)


async def bump_config_version(conn: Connection) -> None:
    """Bump ``config_version`` inside the caller's write transaction."""
    await conn.execute(
        "UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'"
    )


async def config_version(db: Database) -> int:
    """The current ``config_version`` (0 before the first migration has stored one)."""
    row = await db.execute_one("SELECT value FROM settings WHERE key = 'config_version'")
    return int(row["value"]) if row else 0


async def write_one(db: Database, sql: str, params: Params) -> None:
    """One catalog write: ``sql`` and the ``config_version`` bump, in one transaction."""
    async with db.transaction() as conn:
        await conn.execute(sql, params)
        await bump_config_version(conn)


async def set_fields(conn: Connection, table: str, row_id: str, changes: Mapping[str, Any]) -> None:
    """Set ``changes`` (column -> value) and ``updated_at`` on row ``row_id`` of ``table``, in
    the caller's transaction; nothing when there are no changes. Column names come from code."""
    if changes:
        assignments = ", ".join(f"{column} = ?" for column in changes)
        await conn.execute(
            f"UPDATE {table} SET {assignments}, updated_at = ? WHERE id = ?",
            (*changes.values(), now_ms(), row_id),
        )
