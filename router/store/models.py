"""Models: create, read, list and update them (deleting and archiving is in
:mod:`router.store.lifecycle`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from router.errors import Conflict, InvalidRequest
from router.store import validation as check
from router.store.db import Connection, Database, IntegrityError, Row
from router.store.lookups import require_model
from router.store.version import bump_config_version, now_ms, set_fields


def model_dict(row: Row) -> dict[str, Any]:
    """A ``models`` row as the API shows it."""
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "capabilities": orjson.loads(row["capabilities"]) if row["capabilities"] else None,
        "archived_at": row["archived_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def insert_model(conn: Connection, data: Mapping[str, Any]) -> None:
    """Insert a validated model in the caller's transaction."""
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


def validate_model(body: Any) -> dict[str, Any]:
    """Check a model body (id, name, description, capabilities); return it."""
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
    """Create a model; :class:`Conflict` when its id exists."""
    data = validate_model(data)
    try:
        async with db.transaction() as conn:
            await insert_model(conn, data)
            await bump_config_version(conn)
    except IntegrityError:
        raise Conflict(f"A model with id {data['id']!r} already exists.", param="id") from None
    return await get_model(db, data["id"])


async def get_model(db: Database, model_id: str) -> dict[str, Any]:
    """One model by id; :class:`NotFound` when there is none."""
    return model_dict(await require_model(db, model_id))


async def list_models(db: Database, *, archived: bool | None = None) -> list[dict[str, Any]]:
    """Every model with the ids of the providers linked to it, by id."""
    clause = ""
    if archived is not None:
        clause = "WHERE archived_at IS NOT NULL" if archived else "WHERE archived_at IS NULL"
    rows = await db.execute(f"SELECT * FROM models {clause} ORDER BY id")
    linked: dict[str, list[str]] = {}
    for link in await db.execute(
        "SELECT model_id, provider_id FROM provider_models ORDER BY provider_id"
    ):
        linked.setdefault(link["model_id"], []).append(link["provider_id"])
    return [{**model_dict(row), "providers": linked.get(row["id"], [])} for row in rows]


async def update_model(db: Database, model_id: str, body: Any) -> dict[str, Any]:
    """Partial update of a model's name, description and capabilities (the id never changes)."""
    await get_model(db, model_id)
    data = check.object_body(body)
    if "id" in data and data["id"] != model_id:
        raise InvalidRequest("A model's id cannot change.", param="id")
    validate_model({**data, "id": model_id})
    changes: dict[str, Any] = {k: data[k] for k in ("name", "description") if k in data}
    if "capabilities" in data:
        capabilities = data["capabilities"]
        changes["capabilities"] = (
            orjson.dumps(capabilities).decode() if capabilities is not None else None
        )
    async with db.transaction() as conn:
        await set_fields(conn, "models", model_id, changes)
        await bump_config_version(conn)
    return await get_model(db, model_id)
