"""``provider-router db copy``: move an installation between SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from typing import Any

from router.cli.output import CommandFailed, guarded, print_json, settings_for
from router.settings import display_url, is_postgres_url
from router.store import backend
from router.store.copy import CopyReport, copy_database


def _check_url(url: str, flag: str) -> str:
    if is_postgres_url(url) or url.startswith("sqlite:///"):
        return url
    raise CommandFailed(
        f"{flag} {display_url(url)!r} is not a database URL; give sqlite:///path/to/file.db or "
        "postgresql://user:password@host:port/dbname."
    )


async def copy(args: argparse.Namespace) -> CopyReport:
    source_url = _check_url(args.source, "--from")
    target_url = _check_url(args.target, "--to")
    if source_url == target_url:
        raise CommandFailed("--from and --to name the same database.")
    # The source's key (PROVIDER_ROUTER_SECRET_KEY, auth.secret_key, or the key file beside a
    # SQLite source) opens the credentials; they are copied as stored, still encrypted with it.
    settings = dataclasses.replace(settings_for(args), database_url=source_url)
    if not backend.exists(settings):
        raise CommandFailed(f"No database at {settings.database_label}.")
    if not args.dry_run:
        await backend.migrate_url(source_url)
        await backend.migrate_url(target_url)
    source = backend.database_for_url(source_url, settings)
    target = backend.database_for_url(target_url, settings)
    await source.open()
    try:
        await target.open()
        try:
            return await copy_database(source, target, dry_run=args.dry_run)
        finally:
            await target.close()
    finally:
        await source.close()


def cmd_copy(args: argparse.Namespace) -> int:
    report = asyncio.run(copy(args))
    if args.json:
        print_json({"dry_run": report.dry_run, "tables": report.tables, "rows": report.rows})
        return 0
    verb = "would copy" if report.dry_run else "copied"
    for table, rows in report.tables.items():
        print(f"{verb} {rows:>9} rows of {table}")
    print(f"{'Would copy' if report.dry_run else 'Copied'} {report.rows} rows.")
    if not report.dry_run:
        print(
            "The credentials are still encrypted with the source's secret key: start the new "
            "installation with that key (PROVIDER_ROUTER_SECRET_KEY or auth.secret_key)."
        )
    return 0


def register(db_commands: Any, with_config: Any) -> None:
    parser = db_commands.add_parser(
        "copy",
        help="copy a whole installation to another database (SQLite <-> PostgreSQL)",
        description="Copy every row (catalog, credentials still encrypted, client keys, "
        "history, counters) into an empty database; --dry-run prints the counts only.",
    )
    with_config(parser)
    parser.add_argument("--from", dest="source", required=True, help="the database to copy")
    parser.add_argument("--to", dest="target", required=True, help="an empty database to fill")
    parser.add_argument("--dry-run", action="store_true", help="count the rows, write nothing")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(func=guarded(cmd_copy))
