"""Which database the settings name: SQLite (a file) or PostgreSQL (a ``postgresql://`` URL).

Every server and CLI path opens its database through :func:`database_for` and migrates it with
:func:`migrate`, so nothing above the store asks which backend it has.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from router.secrets import resolve_cipher
from router.settings import Settings, database_path_from_url, is_postgres_url
from router.store import migrations
from router.store.db import Database
from router.store.postgres import PostgresDatabase


def database_for(settings: Settings, *, create_key: bool = True) -> Database:
    """The database the settings name, not yet opened, with the credential cipher attached (the
    secret key from the settings, or the key file, generated on first use when ``create_key``)."""
    cipher = resolve_cipher(settings, create=create_key)
    if settings.database_is_postgres:
        return PostgresDatabase(settings.database_url, cipher=cipher)
    return Database(settings.database_path, cipher=cipher)


def database_for_url(url: str, settings: Settings) -> Database:
    """A database at ``url`` with the settings' cipher (``db copy``: both ends, one key)."""
    cipher = resolve_cipher(settings, create=False)
    if is_postgres_url(url):
        return PostgresDatabase(url, cipher=cipher)
    return Database(database_path_from_url(url), cipher=cipher)


def exists(settings: Settings) -> bool:
    """Whether there is a database to look at (a PostgreSQL database always is)."""
    return settings.database_is_postgres or settings.database_path.exists()


async def migrate(settings: Settings) -> tuple[list[migrations.Migration], Path | None]:
    """Apply pending migrations; return them and the SQLite backup taken first, if any."""
    return await migrate_url(settings.database_url)


async def migrate_url(url: str) -> tuple[list[migrations.Migration], Path | None]:
    if is_postgres_url(url):
        return await migrations.migrate_postgres(url), None
    return await asyncio.to_thread(migrations.migrate, database_path_from_url(url))


async def has_table(db: Database, name: str) -> bool:
    """Whether the open database has table ``name`` yet (before the first migration it has not)."""
    if db.dialect == "postgresql":
        sql = "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema()"
        return bool(await db.execute(f"{sql} AND table_name = ?", (name,)))
    return bool(
        await db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    )


async def status(settings: Settings) -> migrations.MigrationStatus:
    """Applied and pending migrations of the settings' database (creates nothing but the
    bookkeeping table)."""
    if settings.database_is_postgres:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await migrations.status_postgres(conn)
        finally:
            await conn.close()
    conn = migrations.connect(settings.database_path)
    try:
        return migrations.status(conn)
    finally:
        conn.close()
