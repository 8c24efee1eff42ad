"""``provider-router health``: probe providers now and print what each answered."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from router.errors import RouterError
from router.healthcheck import HealthResult, check_once
from router.settings import load_settings
from router.store import migrations
from router.store.db import database_for


async def _run(args: argparse.Namespace) -> list[HealthResult]:
    settings = load_settings(args.config, overrides={"database_url": args.database})
    migrations.migrate(settings.database_path)
    db = database_for(settings)
    await db.open()
    try:
        return await check_once(db, settings, args.ids or None)
    finally:
        await db.close()


def cmd_health(args: argparse.Namespace) -> int:
    """Probe the given providers (default: every enabled one); exit 1 if any failed."""
    try:
        results = asyncio.run(_run(args))
    except RouterError as exc:
        print(f"provider-router: {exc.message}", file=sys.stderr)
        return 1
    for found in results:
        r = found.result
        outcome = "ok" if r.ok else f"FAILED  {r.error or r.status_code}"
        print(f"{found.provider_id:<24} {r.latency_ms:>6} ms  {outcome}")
    if not results:
        print("no provider to check")
    return 0 if all(found.result.ok for found in results) else 1


def register(commands: Any, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    health = commands.add_parser(
        "health", help="probe providers now (model list or a 1-token completion) and record it"
    )
    with_config(health)
    health.add_argument("ids", nargs="*", metavar="ID", help="providers to probe (default: all)")
    health.set_defaults(func=cmd_health)
