"""Provider-model links: which models a provider serves, under which upstream name, at what cost.

Each write is validated first and runs in one transaction that bumps ``config_version``.
"""

from __future__ import annotations

from typing import Any

from router.errors import Conflict
from router.store import validation as check
from router.store.db import Database, IntegrityError, Row
from router.store.lookups import require_link, require_provider
from router.store.models import insert_model
from router.store.version import bump_config_version, now_ms, write_one

LINK_FIELDS = (
    "model_id",
    "is_default",
    "upstream_model",
    "input_cost_per_1k",
    "output_cost_per_1k",
    "currency",
)


def link_dict(row: Row) -> dict[str, Any]:
    """A ``provider_models`` row as the API shows it."""
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
    """The provider's links, by model id."""
    rows = await db.execute(
        "SELECT * FROM provider_models WHERE provider_id = ? ORDER BY model_id", (provider_id,)
    )
    return [link_dict(row) for row in rows]


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
    await require_provider(db, provider_id)
    try:
        async with db.transaction() as conn:
            exists = await conn.execute_fetchall("SELECT 1 FROM models WHERE id = ?", (model,))
            if not exists:
                await insert_model(conn, {"id": model})
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
    except IntegrityError:
        raise Conflict(
            f"Model {model!r} is already linked to provider {provider_id!r}.", param="model_id"
        ) from None
    return link_dict(await require_link(db, provider_id, model))


async def unlink_model(db: Database, provider_id: str, model_id: str) -> None:
    """Remove one link; the model itself stays (history may name it)."""
    await require_link(db, provider_id, model_id)
    await write_one(
        db,
        "DELETE FROM provider_models WHERE provider_id = ? AND model_id = ?",
        (provider_id, model_id),
    )


async def set_default(db: Database, provider_id: str, model_id: str) -> list[dict[str, Any]]:
    """Make ``model_id`` the provider's default model (one per provider); return its links."""
    await require_link(db, provider_id, model_id)
    await write_one(
        db,
        "UPDATE provider_models SET is_default = CASE WHEN model_id = ? THEN 1 ELSE 0 END"
        " WHERE provider_id = ?",
        (model_id, provider_id),
    )
    return await list_links(db, provider_id)
