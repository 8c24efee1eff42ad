"""``provider-router db copy``: move a whole installation between databases (SQLite <-> PostgreSQL).

Every table the migrations made is copied row for row, column by column: the catalog, client keys
(hashes only, as stored), the counters on the provider rows, the whole request history and the
``settings`` rows (``config_version`` included). Credentials are copied as stored, so they stay
encrypted and open with the same secret key; both ends are checked with that key first. The copy
is one transaction on the target: it lands whole or not at all. The target must be migrated to
the same version as the source and hold no rows yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from router.errors import Conflict
from router.store.credentials import prepare_credentials
from router.store.db import Connection, Database

# Parents before children (foreign keys); tables a later migration adds come after these.
ORDER = (
    "providers",
    "provider_configs",
    "models",
    "provider_models",
    "api_keys",
    "requests",
    "attempts",
    "settings",
)
SKIP = ("schema_migrations",)
CHUNK_ROWS = 2000


@dataclass
class CopyReport:
    """What a copy moved (or, for a dry run, would move): rows per table."""

    tables: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    target_empty: bool = True

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


async def tables(db: Database) -> list[str]:
    """The database's tables (without the migrations' bookkeeping), parents first."""
    if db.dialect == "postgresql":
        rows = await db.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    else:
        rows = await db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    found = {row[0] for row in rows} - set(SKIP)
    return [t for t in ORDER if t in found] + sorted(found - set(ORDER))


async def columns(db: Database, table: str) -> list[str]:
    if db.dialect == "postgresql":
        rows = await db.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return [row[0] for row in rows]
    return [row[1] for row in await db.execute(f'PRAGMA table_info("{table}")')]


async def versions(db: Database) -> list[int]:
    rows = await db.execute("SELECT version FROM schema_migrations ORDER BY version")
    return [int(row[0]) for row in rows]


async def count(db: Database, table: str) -> int:
    row = await db.execute_one(f'SELECT count(*) FROM "{table}"')
    return int(row[0]) if row else 0


async def primary_key(db: Database, table: str) -> list[str]:
    if db.dialect == "postgresql":
        rows = await db.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY (i.indkey) WHERE i.indrelid = CAST(? AS regclass)"
            " AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
            (f'"{table}"',),
        )
        return [row[0] for row in rows]
    info = await db.execute(f'PRAGMA table_info("{table}")')
    return [row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5])]


async def _has_data(target: Database, names: Sequence[str]) -> list[str]:
    # settings always holds config_version; a fresh target is one with nothing else.
    return [t for t in names if t != "settings" and await count(target, t)]


async def copy_database(source: Database, target: Database, *, dry_run: bool) -> CopyReport:
    """Copy every row of ``source`` into ``target`` (both open; both migrated unless
    ``dry_run``, which only counts the rows and checks the target is empty)."""
    report = CopyReport(dry_run=dry_run)
    names = await tables(source)
    for name in names:
        report.tables[name] = await count(source, name)
    present = set(await tables(target))
    full = await _has_data(target, [t for t in names if t in present])
    report.target_empty = not full
    if full:
        raise Conflict(
            f"The target already holds rows (table {full[0]!r}); copy into an empty database."
        )
    # Both ends must open the stored credentials with this process's key, or nothing moves.
    await prepare_credentials(source)
    if dry_run:
        return report
    if await versions(source) != await versions(target):
        raise Conflict(
            "The two databases are at different migrations; migrate both to this version first."
        )
    async with target.transaction() as conn:
        for name in names:
            wanted = await columns(source, name)
            have = set(await columns(target, name))
            lost = [c for c in wanted if c not in have]
            if lost:
                raise Conflict(f"The target's table {name!r} has no column {lost[0]!r}.")
            if name == "settings":
                await conn.execute("DELETE FROM settings")
            await _copy_table(source, target, conn, name, wanted)
        if target.dialect == "postgresql":
            await _advance_identities(conn, names)
    await prepare_credentials(target)
    return report


async def _copy_table(
    source: Database, target: Database, conn: Connection, table: str, names: list[str]
) -> None:
    """Read ``table`` in chunks ordered by its primary key (each chunk starts after the last
    key seen, so no chunk rescans the ones before) and insert each into the target."""
    key = await primary_key(source, table) or names
    listed = ", ".join(f'"{c}"' for c in names)
    ordered = ", ".join(f'"{c}"' for c in key)
    positions = [names.index(c) for c in key]
    after: tuple[Any, ...] | None = None
    while True:
        where = ""
        if after is not None:
            where = f"WHERE ({ordered}) > ({', '.join('?' * len(key))})"
        rows = await source.execute(
            f'SELECT {listed} FROM "{table}" {where} ORDER BY {ordered} LIMIT {CHUNK_ROWS}',
            after or (),
        )
        if not rows:
            return
        values = [tuple(row) for row in rows]
        await target.insert_rows(conn, table, names, values)
        after = tuple(values[-1][i] for i in positions)


async def _advance_identities(conn: Connection, names: Sequence[str]) -> None:
    """Move each identity column's sequence past the ids just copied in with their values."""
    for table in names:
        rows = await conn.execute_fetchall(
            "SELECT column_name FROM information_schema.columns WHERE table_schema ="
            " current_schema() AND table_name = ? AND is_identity = 'YES'",
            (table,),
        )
        for (column,) in rows:
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence(?, ?),"
                f' coalesce((SELECT max("{column}") FROM "{table}"), 0) + 1, false)',
                (f'"{table}"', column),
            )
