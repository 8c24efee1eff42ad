"""What the admin UI keeps on a provider: a display name and its preferences (schema/0008).

The UI only shows these; routing never reads them, so a change does not bump ``config_version``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from router.errors import InvalidRequest
from router.store import validation as check
from router.store.db import Database, Row
from router.store.providers import get_provider
from router.store.version import now_ms

EMPTY: Mapping[str, Any] = {"display_name": None, "preferences": {}}


def _metadata(row: Row) -> dict[str, Any]:
    return {
        "display_name": row["display_name"],
        "preferences": orjson.loads(row["ui_preferences"]) if row["ui_preferences"] else {},
    }


async def get_metadata(db: Database, provider_id: str) -> dict[str, Any]:
    await get_provider(db, provider_id)  # 404 for an unknown id
    row = await db.execute_one(
        "SELECT display_name, ui_preferences FROM providers WHERE id = ?", (provider_id,)
    )
    assert row is not None
    return _metadata(row)


async def all_metadata(db: Database) -> dict[str, dict[str, Any]]:
    rows = await db.execute("SELECT id, display_name, ui_preferences FROM providers")
    return {row["id"]: _metadata(row) for row in rows}


async def set_metadata(db: Database, provider_id: str, data: Any) -> dict[str, Any]:
    """Set ``display_name`` (text, at most 200 characters, or null) and/or ``preferences``
    (a JSON object); fields left out stay as they are."""
    data = check.object_body(data)
    check.only_fields(data, ("display_name", "preferences"))
    await get_provider(db, provider_id)
    changes: dict[str, Any] = {}
    if "display_name" in data:
        changes["display_name"] = check.text(data, "display_name", max_len=200)
    if "preferences" in data:
        preferences = data["preferences"]
        if not isinstance(preferences, dict):
            raise InvalidRequest(
                f"Field 'preferences' must be an object, got {preferences!r}.", param="preferences"
            )
        changes["ui_preferences"] = orjson.dumps(preferences).decode() if preferences else None
    if changes:
        assignments = ", ".join(f"{key} = ?" for key in changes)
        async with db.transaction() as conn:
            await conn.execute(
                f"UPDATE providers SET {assignments}, updated_at = ? WHERE id = ?",
                (*changes.values(), now_ms(), provider_id),
            )
    return await get_metadata(db, provider_id)
