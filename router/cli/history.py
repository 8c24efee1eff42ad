"""``db prune`` and ``db vacuum``: keep the history within bounds from the command line.

``db prune`` deletes what the background pruner would (``history.retention_days``,
``history.max_rows``), or everything before ``--before DATE``, in the same small batches, so it
is safe beside a running server; ``--dry-run`` only counts. ``db vacuum`` runs the one-off
``VACUUM`` that lets an older database file shrink after pruning.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from collections.abc import Callable

from router.cli.output import CommandFailed, Subcommands, add_command, print_json, run_with_db
from router.settings import Settings
from router.store import retention
from router.store.db import Database


def parse_date(value: str) -> int:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]`` (UTC unless it names an offset) as Unix ms."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise CommandFailed(
            f"--before must be a date such as 2026-01-31 or 2026-01-31T12:00, got {value!r}."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _stamp(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def cmd_prune(args: argparse.Namespace) -> int:
    async def work(db: Database, settings: Settings) -> int:
        if args.before is not None:
            before = parse_date(args.before)
            if before > time.time() * 1000:
                raise CommandFailed(
                    f"--before {args.before} is in the future; give a date in the past."
                )
        else:
            found = await retention.cutoff(
                db,
                retention_days=settings.history_retention_days,
                max_rows=settings.history_max_rows or None,
            )
            if found is None:
                raise CommandFailed(
                    "Nothing to prune: history.retention_days is 0 and history.max_rows is not"
                    " set; give --before DATE."
                )
            before = found
        result = await retention.prune(db, before, dry_run=args.dry_run)
        if args.json:
            print_json(result.as_dict())
            return 0
        verb = "Would prune" if args.dry_run else "Pruned"
        others = ", ".join(f"{n} {name} row(s)" for name, n in result.others.items())
        print(
            f"{verb} {result.requests} request(s) with {result.attempts} attempt(s)"
            f"{', ' + others if others else ''} from before {_stamp(before)}."
        )
        if not args.dry_run:
            print(f"The database file shrank by {result.freed_bytes / 1048576:.1f} MiB.")
        return 0

    return run_with_db(args, work)


def cmd_vacuum(args: argparse.Namespace) -> int:
    async def work(db: Database, settings: Settings) -> int:
        if settings.database_is_postgres:
            # autovacuum makes pruned rows' space reusable without blocking writers; a VACUUM
            # FULL would lock the tables, so there is nothing for this command to do.
            message = "PostgreSQL: autovacuum reuses the space pruning frees; nothing to do."
            if args.json:
                print_json({"database": "postgresql", "vacuumed": False, "reason": message})
            else:
                print(message)
            return 0
        path = settings.database_path
        await db.close()  # VACUUM wants the file to itself in this process
        before = path.stat().st_size
        started = time.perf_counter()
        await asyncio.to_thread(retention.vacuum, path)
        took = time.perf_counter() - started
        after = path.stat().st_size
        await db.open()
        if args.json:
            print_json({"database": str(path), "bytes_before": before, "bytes_after": after})
        else:
            print(
                f"Vacuumed {path} in {took:.1f} s: {before / 1048576:.1f} MiB ->"
                f" {after / 1048576:.1f} MiB; it now shrinks after every prune."
            )
        return 0

    return run_with_db(args, work)


def register(commands: Subcommands, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``prune`` and ``vacuum`` to the ``db`` command group."""
    prune = add_command(
        commands, "prune", cmd_prune, "delete old request history in small batches", with_config
    )
    prune.add_argument(
        "--before", help="delete requests before this UTC date (default: history.retention_days)"
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    add_command(
        commands,
        "vacuum",
        cmd_vacuum,
        "rewrite the database once so that it shrinks after pruning",
        with_config,
    )
