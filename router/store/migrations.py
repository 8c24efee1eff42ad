"""Numbered SQL migrations from ``schema/`` (installed as ``router.schema``), applied at start.

Each file ``NNNN_name.sql`` runs in one transaction together with its ``schema_migrations`` row, so
a migration is either applied and recorded or not applied at all. Before an existing database is
migrated, a copy is taken next to it with SQLite's online backup API.

These functions are synchronous (start-up and the CLI call them, never the request path).

PostgreSQL runs the same numbered set (:func:`migrate_postgres`, async): each file as written,
with SQLite's column types mapped to PostgreSQL's (:func:`postgres_sql`), unless
``schema/postgresql/`` holds a file of the same name, which is used instead. Every migration is
one transaction with its bookkeeping row, and the whole run holds an advisory lock, so replicas
starting together migrate once: the first applies, the others wait and then find nothing pending.
PostgreSQL takes no backup copy here; see docs/postgresql.md.
"""

from __future__ import annotations

import re
import sqlite3
import time
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)
"""


class MigrationError(Exception):
    """A migration failed; the database is left as it was before that migration."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class MigrationStatus:
    applied: list[tuple[int, str, int]]  # (version, name, applied_at ms)
    pending: list[Migration]


def available() -> list[Migration]:
    """Every migration shipped in ``router.schema``, in order."""
    found = []
    for entry in resources.files("router.schema").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


# SQLite's column types as PostgreSQL spells them (INTEGER columns hold Unix ms: 64 bits).
_PG_TYPES = (
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
)
# The advisory lock every replica takes around migrating (any fixed 64-bit number of our own).
ADVISORY_LOCK = zlib.crc32(b"provider-router migrations")


def postgres_sql(migration: Migration) -> str:
    """The migration's SQL for PostgreSQL: its own file in schema/postgresql/, else the shared
    file with SQLite's types mapped."""
    own = resources.files("router.schema").joinpath(
        "postgresql", f"{migration.version:04d}_{migration.name}.sql"
    )
    if own.is_file():
        return own.read_text(encoding="utf-8")
    sql = migration.sql
    for pattern, replacement in _PG_TYPES:
        sql = pattern.sub(replacement, sql)
    return sql


async def status_postgres(conn: asyncpg.Connection) -> MigrationStatus:
    await conn.execute(_BOOKKEEPING.replace("INTEGER", "BIGINT"))
    rows = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY 1")
    applied = [(int(r["version"]), str(r["name"]), int(r["applied_at"])) for r in rows]
    done = {v for v, _, _ in applied}
    return MigrationStatus(applied, [m for m in available() if m.version not in done])


async def migrate_postgres(url: str) -> list[Migration]:
    """Apply every pending migration to the PostgreSQL database at ``url``; return them."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK)
        try:
            state = await status_postgres(conn)
            for migration in state.pending:
                try:
                    async with conn.transaction():
                        await conn.execute(postgres_sql(migration))
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, applied_at)"
                            " VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            int(time.time() * 1000),
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"Migration {migration.version:04d}_{migration.name}.sql failed on "
                        f"PostgreSQL and was rolled back: {exc}."
                    ) from exc
            return state.pending
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK)
    finally:
        await conn.close()


def connect(path: Path) -> sqlite3.Connection:
    """A synchronous connection with our pragmas, for start-up work and the CLI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def status(conn: sqlite3.Connection) -> MigrationStatus:
    conn.execute(_BOOKKEEPING)
    applied = [
        (int(v), str(n), int(t))
        for v, n, t in conn.execute(
            "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
        )
    ]
    done = {v for v, _, _ in applied}
    return MigrationStatus(applied, [m for m in available() if m.version not in done])


def backup(conn: sqlite3.Connection, target: Path) -> Path:
    """Copy the live database to ``target`` with the online backup API (safe under WAL)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    dest = sqlite3.connect(target)
    try:
        conn.backup(dest)
    finally:
        dest.close()
    return target


def migrate(path: Path) -> tuple[list[Migration], Path | None]:
    """Apply every pending migration to the database at ``path``.

    Returns the migrations applied and the backup taken first (``None`` for a new database or
    when nothing was pending).
    """
    conn = connect(path)
    try:
        state = status(conn)
        if not state.pending:
            return [], None
        backup_path = None
        if state.applied:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            first = state.pending[0].version
            backup_path = backup(
                conn, path.with_name(f"{path.name}.{stamp}.before-{first:04d}.bak")
            )
        for migration in state.pending:
            _apply(conn, migration)
        return state.pending, backup_path
    finally:
        conn.close()


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    # executescript commits first and runs statements verbatim, so the script opens and closes
    # its own transaction; the bookkeeping row is inside it.
    script = (
        "BEGIN IMMEDIATE;\n"
        f"{migration.sql}\n;"
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES "
        f"({migration.version}, '{migration.name}', {int(time.time() * 1000)});\n"
        "COMMIT;"
    )
    try:
        conn.executescript(script)
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise MigrationError(
            f"Migration {migration.version:04d}_{migration.name}.sql failed and was rolled back: "
            f"{exc}."
        ) from exc
