"""Numbered SQL migrations from ``schema/`` (installed as ``router.schema``), applied at start.

Each file ``NNNN_name.sql`` runs in one transaction together with its ``schema_migrations`` row, so
a migration is either applied and recorded or not applied at all. Before an existing database is
migrated, a copy is taken next to it with SQLite's online backup API.

These functions are synchronous (start-up and the CLI call them, never the request path).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

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


def connect(path: Path) -> sqlite3.Connection:
    """A synchronous connection with our pragmas, for start-up work and the CLI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    # Takes effect on a new file (before its first table) and at a VACUUM: pruned history can
    # then be given back to the file system (router/store/retention.py).
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
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
    """Copy the live database to ``target`` with the online backup API (safe under WAL).

    The copy is made readable by its owner only (0600), like the key files: it holds the
    history and the encrypted credentials.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # Create it 0600 before SQLite opens it, so it is never readable by others, not even briefly
    # (SQLite gives its journal the database file's mode).
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(target, 0o600)
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
