"""What the management commands share: opening the database, printing tables or JSON, errors.

Exit codes: 0 success, 1 failure (the error is one sentence on stderr), 2 usage error (argparse
and bad settings). Every command prepares and opens the database as the server does, and calls
the same store functions the HTTP API calls.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import orjson

from router.errors import RouterError
from router.settings import Settings, load_settings
from router.store.backend import database_for
from router.store.db import Database

# What ``ArgumentParser.add_subparsers()`` returns; argparse gives the class no public name, so the
# command modules' ``register`` functions name it through this one alias.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

Command = Callable[[argparse.Namespace], int]
Column = tuple[str, Callable[[dict[str, Any]], Any]]


class Parser(argparse.ArgumentParser):
    """An argument parser whose sub-commands refuse an unknown flag themselves, so the error
    shows the usage of the command that was typed rather than the top-level one."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


class CommandFailed(Exception):
    """A command cannot do what was asked; the message is printed as the one-line error."""


def settings_for(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, overrides={"database_url": args.database})


def run_with_db(
    args: argparse.Namespace, work: Callable[[Database, Settings], Awaitable[int]]
) -> int:
    """Prepare the database as ``serve`` does (credentials checked, migrations, seed), open it,
    run ``work`` and close it."""
    from router.app import prepare_database

    settings = settings_for(args)

    async def go() -> int:
        await prepare_database(settings)
        db = database_for(settings)
        await db.open()
        try:
            return await work(db, settings)
        finally:
            await db.close()

    return asyncio.run(go())


def guarded(command: Command) -> Command:
    """Turn the errors a user can cause into one sentence on stderr and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except RouterError as exc:
            return fail(exc.message)
        except CommandFailed as exc:
            return fail(str(exc))

    run.__doc__ = command.__doc__
    return run


def fail(message: str) -> int:
    print(f"provider-router: {message}", file=sys.stderr)
    return 1


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_command(
    parent: Subcommands,
    name: str,
    command: Command,
    text: str,
    with_config: Callable[[argparse.ArgumentParser], None],
    *,
    json_flag: bool = True,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` to ``parent``: it takes ``--config``/``--database`` (and ``--json``
    unless ``json_flag`` is false) and runs ``command`` through :func:`guarded`."""
    parser: argparse.ArgumentParser = parent.add_parser(name, help=text, description=text)
    with_config(parser)
    if json_flag:
        add_json_flag(parser)
    parser.set_defaults(func=guarded(command))
    return parser


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> None:
    """A plain aligned table, one row per item; ``columns`` are (header, value function)."""
    table = [[header for header, _ in columns]]
    table += [[cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print(
            "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        )


def print_fields(data: dict[str, Any], keys: Sequence[str]) -> None:
    width = max(len(key) for key in keys)
    for key in keys:
        value = data.get(key)
        if isinstance(value, dict):
            value = orjson.dumps(value).decode()
        print(f"{key.ljust(width)}  {cell(value)}")


def stamp(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def parse_value(text: str) -> Any:
    """A config value from the command line: JSON when it parses (numbers, objects), else text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def parse_pairs(pairs: Sequence[str] | None, flag: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandFailed(f"{flag} takes KEY=VALUE, got {pair!r}.")
        found[key] = parse_value(value)
    return found


_UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_when(text: str, now_ms: int, flag: str, *, ahead: bool = False) -> int:
    """A moment as Unix ms: ``1700000000000`` as it is, or a duration (``30m``, ``24h``,
    ``7d``) back from now, or from now on with ``ahead`` (an expiry)."""
    if text.isascii() and text.isdigit():
        return int(text)
    number, unit = text[:-1], text[-1:]
    if unit in _UNITS and number.isascii() and number.isdigit():
        span = int(number) * _UNITS[unit]
        return now_ms + span if ahead else max(now_ms - span, 0)
    raise CommandFailed(
        f"{flag} takes Unix milliseconds or a duration like 30m, 24h or 7d; got {text!r}."
    )


def parse_since(text: str, now_ms: int) -> int:
    """``1700000000000`` (Unix ms) or a duration back from now: ``30m``, ``24h``, ``7d``."""
    return parse_when(text, now_ms, "--since")
