"""Seeding an empty database from the ``[[providers]]`` tables of the config file.

This happens once: on the first start whose database has no provider and was never seeded. After
that the database is the only source of truth and the file's providers are ignored.

A config value written as ``"${env:NAME}"`` (``apiKey = "${env:OPENAI_API_KEY}"``) is read from
the environment at seeding time, so no key has to be written into the file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from router.errors import RouterError
from router.settings import SettingsError
from router.store import links
from router.store.db import Database
from router.store.providers import create_provider
from router.store.version import now_ms

log = logging.getLogger("provider_router.seed")
_SEEDED_KEY = "seeded_from_config_at"


def _link(entry: Any, where: str) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"model_id": entry}
    if isinstance(entry, dict):
        link = dict(entry)
        if "id" in link:
            link["model_id"] = link.pop("id")
        return link
    raise SettingsError(f"{where}: each entry of 'models' must be a model id or a table.")


# The seed plan's flat limit keys -> the provider's ``limits`` object (resilience, issue 5).
_SEED_LIMIT_KEYS = {"rate_limit_per_minute": "rpm", "rate_limit_per_day": "rpd"}


def _with_seed_limits(data: dict[str, Any]) -> dict[str, Any]:
    found = {name: data.pop(key) for key, name in _SEED_LIMIT_KEYS.items() if key in data}
    if found:
        limits = data.get("limits")
        data["limits"] = {**found, **limits} if isinstance(limits, dict) else found
    return data


_ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_env(config: Any, where: str, environ: Mapping[str, str] | None = None) -> Any:
    """``config`` with each value that is exactly ``${env:NAME}`` replaced by that environment
    variable, so a key need not sit in the config file. Resolved once, when seeding; the file
    is never written. A variable that is unset or empty stops start-up, naming it."""
    if not isinstance(config, dict):
        return config
    environ = os.environ if environ is None else environ
    resolved = dict(config)
    for key, value in config.items():
        found = _ENV_REFERENCE.fullmatch(value) if isinstance(value, str) else None
        if found is None:
            continue
        name = found[1]
        if not environ.get(name):
            raise SettingsError(
                f"{where}: config key {key!r} reads environment variable {name}, which is "
                f"{'empty' if name in environ else 'not set'}."
            )
        resolved[key] = environ[name]
    return resolved


async def seed_from_config(
    db: Database, providers: Sequence[Mapping[str, Any]], source: str
) -> int:
    """Create the configured providers and their models in an empty, never seeded catalog.

    Returns how many providers were created. On a bad entry nothing is kept and
    :class:`SettingsError` names the entry and the file.
    """
    if not providers:
        return 0
    seeded = await db.execute_one("SELECT 1 FROM settings WHERE key = ?", (_SEEDED_KEY,))
    existing = await db.execute_one(
        "SELECT 1 FROM providers UNION ALL SELECT 1 FROM models LIMIT 1"
    )
    if seeded or existing:
        return 0
    try:
        for index, entry in enumerate(providers):
            where = f"providers[{index}] in {source}"
            data = _with_seed_limits(dict(entry))
            if "config" in data:
                data["config"] = resolve_env(data["config"], where)
            models = data.pop("models", [])
            if not isinstance(models, list):
                raise SettingsError(f"{where}: 'models' must be an array.")
            try:
                provider = await create_provider(db, data)
                for model in models:
                    await links.link_model(db, provider["id"], _link(model, where))
            except RouterError as exc:
                raise SettingsError(f"{where}: {exc.message}") from None
        await db.execute_write(
            "INSERT INTO settings (key, value) VALUES (?, ?)", (_SEEDED_KEY, str(now_ms()))
        )
    except BaseException:
        await _forget_catalog(db)
        raise
    log.info("Seeded %d provider(s) from %s", len(providers), source)
    return len(providers)


async def _forget_catalog(db: Database) -> None:
    # The catalog was empty before seeding began, so removing it all undoes exactly the seeding.
    async with db.transaction() as conn:
        for table in ("provider_models", "provider_configs", "providers", "models"):
            await conn.execute(f"DELETE FROM {table}")
