"""Providers: create, read, list and update them, with their config and links.

The management API and the CLI both call these functions; every write validates its input first,
runs in one transaction and bumps ``config_version`` so that every running proxy rebuilds its
routing snapshot. Enabling, deleting (or archiving) and restoring is in
:mod:`router.store.lifecycle`.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.registry import adapter_types
from router.errors import Conflict, InvalidRequest
from router.store import validation as check
from router.store.configs import (
    is_masked,
    masked_config,
    provider_config,
    validate_config,
    without_masked,
    write_config,
)
from router.store.db import Database, IntegrityError, Row, is_unique_error
from router.store.links import list_links
from router.store.lookups import require_provider
from router.store.version import bump_config_version, now_ms, set_fields

PROVIDER_FIELDS = ("id", "name", "type", "enabled", "priority", "weight", "description", "limits")


async def create_provider(db: Database, data: Any) -> dict[str, Any]:
    """Create a provider from an API-shaped dict; return it as :func:`get_provider` shows it."""
    data = check.object_body(data)
    check.only_fields(data, (*PROVIDER_FIELDS, "config"))
    name = check.text(data, "name", required=True)
    provider_id = check.slug(data.get("id") or check.slugify(name), "id")
    type_name = check.text(data, "type", required=True)
    config = validate_config(type_name, data.get("config", {}), partial=False)
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
            await write_config(conn, provider_id, type_name, config, db)
            await bump_config_version(conn)
    except IntegrityError as exc:
        raise _name_conflict(exc, provider_id, name) from None
    return await get_provider(db, provider_id)


def _name_conflict(exc: Exception, provider_id: str, name: str) -> Conflict:
    if is_unique_error(exc, "providers", "name"):
        return Conflict(f"A provider named {name!r} already exists.", param="name")
    return Conflict(f"A provider with id {provider_id!r} already exists.", param="id")


async def update_provider(db: Database, provider_id: str, data: Any) -> dict[str, Any]:
    """Partial update: only the fields given change; ``config`` keys are merged."""
    data = check.object_body(data)
    check.only_fields(data, (*PROVIDER_FIELDS, "config"))
    current = await require_provider(db, provider_id)
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
        config = validate_config(current["type"], without_masked(data["config"]), partial=True)
        merged = {**(await provider_config(db, provider_id)), **config}
        merged = {k: v for k, v in merged.items() if v is not None}
        validate_config(current["type"], merged, partial=False)
    try:
        async with db.transaction() as conn:
            await set_fields(conn, "providers", provider_id, changes)
            if config:
                await write_config(conn, provider_id, current["type"], config, db)
            await bump_config_version(conn)
    except IntegrityError as exc:
        raise _name_conflict(exc, provider_id, str(changes.get("name"))) from None
    return await get_provider(db, provider_id)


def provider_dict(row: Row) -> dict[str, Any]:
    """A ``providers`` row as the API shows it (without config and links)."""
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
    provider = provider_dict(await require_provider(db, provider_id))
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
    return [provider_dict(row) for row in rows]
