"""The clock and the ``config_version`` counter every management write bumps.

Timestamps in the database are Unix milliseconds (:func:`now_ms`). Every write to what routing
reads (providers, their config, models, links, client keys) bumps ``config_version`` in the same
transaction, so that every running proxy sees the change and rebuilds its routing snapshot.
"""

from __future__ import annotations

import time

import aiosqlite

from router.store.db import Database


def now_ms() -> int:
    """The current time in Unix milliseconds, as every timestamp column stores it."""
    return int(time.time() * 1000)


async def bump_config_version(conn: aiosqlite.Connection) -> None:
    """Bump ``config_version`` inside the caller's write transaction."""
    await conn.execute(
        "UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'"
    )


async def config_version(db: Database) -> int:
    """The current ``config_version`` (0 before the first migration has stored one)."""
    row = await db.execute_one("SELECT value FROM settings WHERE key = 'config_version'")
    return int(row["value"]) if row else 0
