"""Providers, their config, models and provider-model links: the service layer over the database.

The management API and the CLI both call these functions; every write validates its input first,
runs in one transaction and bumps ``config_version`` so that every running proxy rebuilds its
routing snapshot.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import aiosqlite
import orjson

from providers.registry import adapter_types, get_adapter_class
from router.errors import Conflict, InvalidRequest, NotFound
from router.store import validation as check
from router.store.credentials import check_key_current, decode_value, encode_value
from router.store.db import Database

PROVIDER_FIELDS = ("id", "name", "type", "enabled", "priority", "weight", "description", "limits")
LINK_FIELDS = (
    "model_id",
    "is_default",
    "upstream_model",
    "input_cost_per_1k",
    "output_cost_per_1k",
    "currency",
)
MASK = "****"


def now_ms() -> int:
    return int(time.time() * 1000)


def mask(value: Any) -> str:
    """The masked form of a secret: ``****`` plus at most its last 4 characters."""
    if isinstance(value, str) and len(value) >= 12:
        return MASK + value[-4:]
    return MASK


def is_masked(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(MASK)


async def bump_config_version(conn: aiosqlite.Connection) -> None:
    await conn.execute(
        "UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'"
    )


async def config_version(db: Database) -> int:
    row = await db.execute_one("SELECT value FROM settings WHERE key = 'config_version'")
    return int(row["value"]) if row else 0


# -- providers ---------------------------------------------------------------------------------


def _without_masked(config: Any) -> Any:
    """Drop masked values a client sent back: they stand for the stored secret, unchanged."""
    if not isinstance(config, dict):
        return config
    return {key: value for key, value in config.items() if not is_masked(value)}


def _validate_config(type_name: str, config: Any, *, partial: bool) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise InvalidRequest("Field 'config' must be an object of config keys.", param="config")
    problems = get_adapter_class(type_name).validate_config(config, partial=partial)
    if problems:
        raise InvalidRequest(" ".join(problems), param="config")
    return config


async def _write_config(
    conn: aiosqlite.Connection,
    provider_id: str,
    type_name: str,
    config: Mapping[str, Any],
    db: Database,
) -> None:
    keys = get_adapter_class(type_name).config_keys
    stamp = now_ms()
    if any(
        key in keys and keys[key].sensitive and value is not None for key, value in config.items()
    ):
        await check_key_current(conn, db.cipher)
    for key, value in config.items():
        sensitive = keys[key].sensitive if key in keys else False
        if sensitive and is_masked(value):
            continue  # a masked value sent back never replaces the stored secret
        if value is None:
            await conn.execute(
                "DELETE FROM provider_configs WHERE provider_id = ? AND key = ?", (provider_id, key)
            )
            continue
        await conn.execute(
            "INSERT INTO provider_configs (provider_id, key, value, is_sensitive, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (provider_id, key) DO UPDATE SET"
            " value = excluded.value, is_sensitive = excluded.is_sensitive,"
            " updated_at = excluded.updated_at",
            (
                provider_id,
                key,
                encode_value(db.cipher, provider_id, key, value, sensitive),
                int(sensitive),
                stamp,
                stamp,
            ),
        )


async def create_provider(db: Database, data: Any) -> dict[str, Any]:
    """Create a provider from an API-shaped dict; return it as :func:`get_provider` shows it."""
    data = check.object_body(data)
    check.only_fields(data, (*PROVIDER_FIELDS, "config"))
    name = check.text(data, "name", required=True)
    provider_id = check.slug(data.get("id") or check.slugify(name), "id")
    type_name = check.text(data, "type", required=True)
    config = _validate_config(type_name, data.get("config", {}), partial=False)
    if any(is_masked(v) for v in config.values()):
        raise InvalidRequest("A new provider's config cannot hold a masked value.", param="config")
    enabled = check.boolean(data, "enabled")
    priority = check.integer(data, "priority")
    weight = check.integer(data, "weight", minimum=1)
    description = check.text(data, "description", max_len=2000)
    limits = check.limits(data)
    stamp = now_ms()
    try:
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO providers (id, name, type, enabled, priority, weight, description,"
                " limits, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    provider_id,
                    name,
                    type_name,
                    int(enabled if enabled is not None else True),
                    priority or 0,
                    weight or 1,
                    description,
                    orjson.dumps(limits).decode() if limits else None,
                    stamp,
                    stamp,
                ),
            )
            await _write_config(conn, provider_id, type_name, config, db)
            await bump_config_version(conn)
    except sqlite3.IntegrityError as exc:
        raise _conflict(exc, provider_id, name) from None
    return await get_provider(db, provider_id)


def _conflict(exc: sqlite3.IntegrityError, provider_id: str, name: str) -> Conflict:
    if "providers.name" in str(exc):
        return Conflict(f"A provider named {name!r} already exists.", param="name")
    return Conflict(f"A provider with id {provider_id!r} already exists.", param="id")


async def update_provider(db: Database, provider_id: str, data: Any) -> dict[str, Any]:
    """Partial update: only the fields given change; ``config`` keys are merged."""
    data = check.object_body(data)
    check.only_fields(data, (*PROVIDER_FIELDS, "config"))
    current = await _provider_row(db, provider_id)
    if "id" in data and data["id"] != provider_id:
        raise InvalidRequest("A provider's id cannot change.", param="id")
    if "type" in data and data["type"] != current["type"]:
        raise InvalidRequest("A provider's type cannot change; create a new one.", param="type")
    changes: dict[str, Any] = {}
    if "name" in data:
        changes["name"] = check.text(data, "name", required=True)
    for key in ("enabled",):
        if key in data:
            value = check.boolean(data, key)
            if value is None:
                raise InvalidRequest(f"Field {key!r} must be true or false.", param=key)
            changes[key] = int(value)
    if changes.get("enabled") and current["archived_at"] is not None:
        raise Conflict(
            f"Provider {provider_id!r} is archived; restore it with "
            f"POST /v1/providers/{provider_id}/restore first.",
            param="enabled",
        )
    for key, minimum in (("priority", None), ("weight", 1)):
        if key in data:
            value = check.integer(data, key, minimum=minimum)
            if value is None:
                raise InvalidRequest(f"Field {key!r} must be an integer.", param=key)
            changes[key] = value
    if "description" in data:
        changes["description"] = check.text(data, "description", max_len=2000)
    if "limits" in data:
        limits = check.limits(data)
        changes["limits"] = orjson.dumps(limits).decode() if limits else None
    config = None
    if "config" in data:
        config = _validate_config(current["type"], _without_masked(data["config"]), partial=True)
        merged = {**(await provider_config(db, provider_id)), **config}
        merged = {k: v for k, v in merged.items() if v is not None}
        _validate_config(current["type"], merged, partial=False)
    try:
        async with db.transaction() as conn:
            if changes:
                assignments = ", ".join(f"{key} = ?" for key in changes)
                await conn.execute(
                    f"UPDATE providers SET {assignments}, updated_at = ? WHERE id = ?",
                    (*changes.values(), now_ms(), provider_id),
                )
            if config:
                await _write_config(conn, provider_id, current["type"], config, db)
            await bump_config_version(conn)
    except sqlite3.IntegrityError as exc:
        raise _conflict(exc, provider_id, str(changes.get("name"))) from None
    return await get_provider(db, provider_id)


async def _provider_row(db: Database, provider_id: str) -> sqlite3.Row:
    row = await db.execute_one("SELECT * FROM providers WHERE id = ?", (provider_id,))
    if row is None:
        raise NotFound(f"No provider with id {provider_id!r}.", param="id")
    return row


async def provider_config(db: Database, provider_id: str) -> dict[str, Any]:
    """The provider's config in clear, for building adapters. Never return this to a client."""
    rows = await db.execute(
        "SELECT key, value FROM provider_configs WHERE provider_id = ?", (provider_id,)
    )
    return {
        row["key"]: decode_value(db.cipher, provider_id, row["key"], row["value"]) for row in rows
    }


async def masked_config(db: Database, provider_id: str) -> dict[str, Any]:
    """The provider's config as clients see it: sensitive values masked (never decryptable)."""
    rows = await db.execute(
        "SELECT key, value, is_sensitive FROM provider_configs WHERE provider_id = ? ORDER BY key",
        (provider_id,),
    )
    shown = {}
    for row in rows:
        value = decode_value(db.cipher, provider_id, row["key"], row["value"])
        shown[row["key"]] = mask(value) if row["is_sensitive"] else value
    return shown


def _provider_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "type": row["type"],
        "enabled": bool(row["enabled"]),
        "priority": row["priority"],
        "weight": row["weight"],
        "description": row["description"],
        "limits": orjson.loads(row["limits"]) if row["limits"] else None,
        "archived_at": row["archived_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        # False when the type's package is no longer installed: routing skips it, rows stay.
        "available": row["type"] in adapter_types(),
        "state": {
            "last_used_at": row["last_used_at"],
            "last_error_at": row["last_error_at"],
            "last_error": row["last_error"],
            "success_count": row["success_count"],
            "error_count": row["error_count"],
            "last_health_check": row["last_health_check"],
            # As a server last reported it; the API shows its own live state instead.
            "circuit": {
                "state": row["circuit_state"],
                "cooldown_until": row["cooldown_until"],
                "changed_at": row["circuit_changed_at"],
            },
        },
    }


async def get_provider(db: Database, provider_id: str) -> dict[str, Any]:
    """A provider with its masked config and linked models."""
    provider = _provider_dict(await _provider_row(db, provider_id))
    provider["config"] = await masked_config(db, provider_id)
    provider["models"] = await list_links(db, provider_id)
    return provider


async def list_providers(
    db: Database,
    *,
    type_name: str | None = None,
    enabled: bool | None = None,
    archived: bool | None = None,
) -> list[dict[str, Any]]:
    """Providers, highest priority first, optionally filtered by type, enabled and archived."""
    where: list[str] = []
    args: list[Any] = []
    if type_name is not None:
        where.append("type = ?")
        args.append(type_name)
    if enabled is not None:
        where.append("enabled = ?")
        args.append(int(enabled))
    if archived is not None:
        where.append("archived_at IS NOT NULL" if archived else "archived_at IS NULL")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = await db.execute(f"SELECT * FROM providers {clause} ORDER BY priority DESC, id", args)
    return [_provider_dict(row) for row in rows]


# -- models and links --------------------------------------------------------------------------


def _model_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "capabilities": orjson.loads(row["capabilities"]) if row["capabilities"] else None,
        "archived_at": row["archived_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def _insert_model(conn: aiosqlite.Connection, data: Mapping[str, Any]) -> None:
    stamp = now_ms()
    capabilities = data.get("capabilities")
    await conn.execute(
        "INSERT INTO models (id, name, description, capabilities, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            data["id"],
            data.get("name"),
            data.get("description"),
            orjson.dumps(capabilities).decode() if capabilities is not None else None,
            stamp,
            stamp,
        ),
    )


def _validate_model(body: Any) -> dict[str, Any]:
    data = check.object_body(body)
    check.only_fields(data, ("id", "name", "description", "capabilities"))
    check.model_id(data.get("id"), "id")
    check.text(data, "name")
    check.text(data, "description", max_len=2000)
    capabilities = data.get("capabilities")
    if capabilities is not None and not (
        isinstance(capabilities, list) and all(isinstance(c, str) for c in capabilities)
    ):
        raise InvalidRequest(
            'Field \'capabilities\' must be a list of strings, like ["chat", "tools"].',
            param="capabilities",
        )
    return data


async def create_model(db: Database, data: Any) -> dict[str, Any]:
    data = _validate_model(data)
    try:
        async with db.transaction() as conn:
            await _insert_model(conn, data)
            await bump_config_version(conn)
    except sqlite3.IntegrityError:
        raise Conflict(f"A model with id {data['id']!r} already exists.", param="id") from None
    return await get_model(db, data["id"])


async def get_model(db: Database, model_id: str) -> dict[str, Any]:
    row = await db.execute_one("SELECT * FROM models WHERE id = ?", (model_id,))
    if row is None:
        raise NotFound(f"No model with id {model_id!r}.", param="id")
    return _model_dict(row)


def _link_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "provider_id": row["provider_id"],
        "model_id": row["model_id"],
        "is_default": bool(row["is_default"]),
        "upstream_model": row["upstream_model"],
        "input_cost_per_1k": row["input_cost_per_1k"],
        "output_cost_per_1k": row["output_cost_per_1k"],
        "currency": row["currency"],
        "created_at": row["created_at"],
    }


async def list_links(db: Database, provider_id: str) -> list[dict[str, Any]]:
    rows = await db.execute(
        "SELECT * FROM provider_models WHERE provider_id = ? ORDER BY model_id", (provider_id,)
    )
    return [_link_dict(row) for row in rows]


async def link_model(db: Database, provider_id: str, data: Any) -> dict[str, Any]:
    """Link a model to a provider, creating the model if it does not exist yet."""
    data = check.object_body(data)
    check.only_fields(data, LINK_FIELDS)
    model = check.model_id(data.get("model_id"), "model_id")
    is_default = check.boolean(data, "is_default")
    upstream_model = check.text(data, "upstream_model")
    input_cost = check.number(data, "input_cost_per_1k")
    output_cost = check.number(data, "output_cost_per_1k")
    currency = check.text(data, "currency", max_len=8) or "USD"
    await _provider_row(db, provider_id)
    try:
        async with db.transaction() as conn:
            exists = await conn.execute_fetchall("SELECT 1 FROM models WHERE id = ?", (model,))
            if not exists:
                await _insert_model(conn, {"id": model})
            if is_default:
                await conn.execute(
                    "UPDATE provider_models SET is_default = 0 WHERE provider_id = ?",
                    (provider_id,),
                )
            await conn.execute(
                "INSERT INTO provider_models (provider_id, model_id, is_default, upstream_model,"
                " input_cost_per_1k, output_cost_per_1k, currency, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    provider_id,
                    model,
                    int(bool(is_default)),
                    upstream_model,
                    input_cost,
                    output_cost,
                    currency,
                    now_ms(),
                ),
            )
            await bump_config_version(conn)
    except sqlite3.IntegrityError:
        raise Conflict(
            f"Model {model!r} is already linked to provider {provider_id!r}.", param="model_id"
        ) from None
    row = await db.execute_one(
        "SELECT * FROM provider_models WHERE provider_id = ? AND model_id = ?", (provider_id, model)
    )
    assert row is not None
    return _link_dict(row)


# -- what the routing snapshot is built from ---------------------------------------------------


@dataclass(frozen=True)
class CatalogData:
    """Everything routing needs, read in one go."""

    version: int
    providers: list[sqlite3.Row]
    configs: dict[str, dict[str, Any]]
    links: list[sqlite3.Row]
    models: list[sqlite3.Row]

    @cached_property
    def model_ids(self) -> frozenset[str]:
        """The models routing may use (archived ones are not loaded)."""
        return frozenset(row["id"] for row in self.models)


async def load_catalog(db: Database) -> CatalogData:
    version = await config_version(db)
    providers = await db.execute("SELECT * FROM providers WHERE archived_at IS NULL")
    configs: dict[str, dict[str, Any]] = {}
    for row in await db.execute("SELECT provider_id, key, value FROM provider_configs"):
        value = decode_value(db.cipher, row["provider_id"], row["key"], row["value"])
        configs.setdefault(row["provider_id"], {})[row["key"]] = value
    # Default links first: the health checks probe the first model they see per provider.
    links = await db.execute("SELECT * FROM provider_models ORDER BY is_default DESC")
    models = await db.execute("SELECT * FROM models WHERE archived_at IS NULL")
    return CatalogData(version, providers, configs, links, models)
