"""The ``provider-router`` command. Each sub-command maps flags onto a library call."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import cast

import orjson

from router.cli import security as cli_security
from router.cli.output import Parser, Subcommands
from router.redact import scrub
from router.settings import Settings, SettingsError, load_settings
from router.store import backend, migrations
from router.store.db import DatabaseError


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        overrides={
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "database_url": args.database,
        },
    )


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from router.mock.upstream import options_from_args, run_mock_upstream

    run_mock_upstream(args.host, args.port, options_from_args(args))
    return 0


def cmd_db_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not backend.exists(settings):
        print(
            f"provider-router: no database at {settings.database_path}; "
            "`provider-router serve` creates it on first start.",
            file=sys.stderr,
        )
        return 1
    state = asyncio.run(backend.status(settings))
    label = settings.database_label
    if getattr(args, "json", False):
        applied = [{"version": v, "name": n, "applied_at": at} for v, n, at in state.applied]
        pending = [{"version": m.version, "name": m.name} for m in state.pending]
        print(orjson.dumps({"database": label, "applied": applied,
                            "pending": pending}).decode())  # fmt: skip
        return 0
    print(f"database: {label}")
    for version, name, applied_at in state.applied:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(applied_at / 1000))
        print(f"applied  {version:04d}_{name}  {stamp} UTC")
    for migration in state.pending:
        print(f"pending  {migration.version:04d}_{migration.name}")
    if not state.applied and not state.pending:
        print("no migrations")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from router.cli import data as cli_data
    from router.cli import database as cli_database
    from router.cli import history as cli_history
    from router.cli import models as cli_models
    from router.cli import providers as cli_providers
    from router.cli import serve as cli_serve
    from router.mock.upstream import add_mock_arguments

    parser = Parser(
        prog="provider-router",
        description="An OpenAI-compatible LLM gateway with fallback, streaming and history.",
    )
    commands = cast(
        "Subcommands", parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    )

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML config file (default: $PROVIDER_ROUTER_CONFIG)")
        p.add_argument(
            "--database",
            help="database URL, e.g. sqlite:///./data/provider-router.db "
            "(default: $PROVIDER_ROUTER_DATABASE_URL or the config file)",
        )

    cli_serve.register(commands, with_config)

    mock = commands.add_parser(
        "mock-upstream", help="run a fake OpenAI-compatible upstream for trying things out"
    )
    add_mock_arguments(mock)
    mock.set_defaults(func=cmd_mock_upstream)

    cli_providers.register(commands, with_config)
    cli_models.register(commands, with_config)
    cli_data.register(commands, with_config)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    status = db_commands.add_parser("status", help="list applied and pending migrations")
    with_config(status)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.set_defaults(func=cmd_db_status)
    cli_database.register(db_commands, with_config)
    cli_history.register(db_commands, with_config)
    cli_security.register(commands, with_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (SettingsError, migrations.MigrationError) as exc:
        print(f"provider-router: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the database or a file cannot be reached: one sentence, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"provider-router: {scrub(exc.strerror or str(exc))}{where}.", file=sys.stderr)
        return 1
    except DatabaseError as exc:
        print(f"provider-router: database error: {scrub(str(exc))}.", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
