"""Models and provider-model links beyond creating them: list, update, unlink, set the default.

Creating models and links lives in :mod:`router.store.catalog`; these are the other writes the
management API and the CLI make, each validated first and run in one transaction that bumps
``config_version``.
"""

from __future__ import annotations

from typing import Any

import orjson

from router.errors import InvalidRequest, NotFound
from router.store import validation as check
from router.store.catalog import (
    _model_dict,
    _provider_row,
    _validate_model,
    bump_config_version,
    get_model,
    list_links,
    now_ms,
)
from router.store.db import Database


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
    return [{**_model_dict(row), "providers": linked.get(row["id"], [])} for row in rows]


async def update_model(db: Database, model_id: str, body: Any) -> dict[str, Any]:
    """Partial update of a model's name, description and capabilities (the id never changes)."""
    await get_model(db, model_id)
    data = check.object_body(body)
    if "id" in data and data["id"] != model_id:
        raise InvalidRequest("A model's id cannot change.", param="id")
    _validate_model({**data, "id": model_id})
    changes: dict[str, Any] = {k: data[k] for k in ("name", "description") if k in data}
    if "capabilities" in data:
        capabilities = data["capabilities"]
        changes["capabilities"] = (
            orjson.dumps(capabilities).decode() if capabilities is not None else None
        )
    async with db.transaction() as conn:
        if changes:
            assignments = ", ".join(f"{key} = ?" for key in changes)
            await conn.execute(
                f"UPDATE models SET {assignments}, updated_at = ? WHERE id = ?",
                (*changes.values(), now_ms(), model_id),
            )
        await bump_config_version(conn)
    return await get_model(db, model_id)


async def _require_link(db: Database, provider_id: str, model_id: str) -> None:
    await _provider_row(db, provider_id)
    row = await db.execute_one(
        "SELECT 1 FROM provider_models WHERE provider_id = ? AND model_id = ?",
        (provider_id, model_id),
    )
    if row is None:
        raise NotFound(
            f"Model {model_id!r} is not linked to provider {provider_id!r}.", param="model_id"
        )


async def unlink_model(db: Database, provider_id: str, model_id: str) -> None:
    """Remove one link; the model itself stays (history may name it)."""
    await _require_link(db, provider_id, model_id)
    async with db.transaction() as conn:
        await conn.execute(
            "DELETE FROM provider_models WHERE provider_id = ? AND model_id = ?",
            (provider_id, model_id),
        )
        await bump_config_version(conn)


async def set_default(db: Database, provider_id: str, model_id: str) -> list[dict[str, Any]]:
    """Make ``model_id`` the provider's default model (one per provider); return its links."""
    await _require_link(db, provider_id, model_id)
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE provider_models SET is_default = (model_id = ?) WHERE provider_id = ?",
            (model_id, provider_id),
        )
        await bump_config_version(conn)
    return await list_links(db, provider_id)
