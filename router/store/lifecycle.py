"""Enabling, disabling, deleting (or archiving) and restoring providers and models.

History is never dropped by a management action. A provider or model that has request history, or
that may still have a request on its way to the history tables, is *archived* instead of deleted:
``archived_at`` is set, a provider is also disabled, its links and config stay, and routing skips
it. :func:`restore_provider` / :func:`restore_model` bring it back. Only a provider or model that
nothing can ever point at is really deleted.

"May still have a request on its way" is judged from what this process can see: the rows the
caller says are still queued (the recorder's queue), and whether the provider ever served a
request (its counters); a provider that served requests has history, or is about to.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from router.errors import Conflict
from router.store.db import Database
from router.store.lookups import require_provider
from router.store.models import get_model
from router.store.providers import get_provider
from router.store.version import bump_config_version, now_ms, write_one


async def set_enabled(db: Database, provider_id: str, enabled: bool) -> dict[str, Any]:
    """Enable or disable a provider; an archived one must be restored first."""
    state = await require_provider(db, provider_id)
    if state["archived_at"] is not None and enabled:
        raise Conflict(
            f"Provider {provider_id!r} is archived; restore it with "
            f"POST /v1/providers/{provider_id}/restore first.",
            param="id",
        )
    await write_one(
        db,
        "UPDATE providers SET enabled = ?, updated_at = ? WHERE id = ?",
        (int(enabled), now_ms(), provider_id),
    )
    return await get_provider(db, provider_id)


_PROVIDER_HISTORY = (
    "SELECT EXISTS (SELECT 1 FROM requests WHERE provider_id = :id)"
    " OR EXISTS (SELECT 1 FROM attempts WHERE provider_id = :id)"
    " OR EXISTS (SELECT 1 FROM providers WHERE id = :id AND (last_used_at IS NOT NULL"
    "   OR success_count > 0 OR error_count > 0))"
)


async def _delete_or_archive(
    db: Database,
    item_id: str,
    *,
    queued: bool,
    history: str,
    lock: str | None = None,
    archive: str,
    delete: tuple[str, ...],
) -> dict[str, Any]:
    """Archive ``item_id`` when ``history`` (an ``EXISTS`` query on ``:id``) finds any or rows
    naming it are still ``queued``, else run the ``delete`` statements; all in one transaction,
    so no history row can slip in between the check and the delete. ``lock`` (a ``SELECT``
    of the row) runs first with the backend's row lock: SQLite's one writer already keeps
    others out, PostgreSQL's ``FOR UPDATE`` waits for (and then sees) any transaction still
    inserting history that references the row."""
    async with db.transaction() as conn:
        if lock is not None:
            await conn.execute(lock + db.row_lock, {"id": item_id})
        async with conn.execute(history, {"id": item_id}) as cursor:
            found = await cursor.fetchone()
        keep = queued or bool(found and found[0])
        if keep:
            await conn.execute(archive, {"id": item_id, "now": now_ms()})
        else:
            for statement in delete:
                await conn.execute(statement, {"id": item_id})
        await bump_config_version(conn)
    return {"id": item_id, "deleted": not keep, "archived": keep}


async def delete_provider(
    db: Database, provider_id: str, *, pending: Collection[str] = ()
) -> dict[str, Any]:
    """Delete a provider, or archive it when history exists or may still arrive.

    ``pending`` holds the ids of providers that rows not yet written refer to (the recorder's
    queue). Returns ``{"id", "deleted": bool, "archived": bool}``.
    """
    await require_provider(db, provider_id)
    return await _delete_or_archive(
        db,
        provider_id,
        queued=provider_id in pending,
        history=_PROVIDER_HISTORY,
        lock="SELECT 1 FROM providers WHERE id = :id",
        archive="UPDATE providers SET archived_at = coalesce(archived_at, :now), enabled = 0,"
        " updated_at = :now WHERE id = :id",
        # Config rows and links go with it (ON DELETE CASCADE).
        delete=("DELETE FROM providers WHERE id = :id",),
    )


async def restore_provider(db: Database, provider_id: str) -> dict[str, Any]:
    """Bring an archived provider back, enabled, with its links and config."""
    state = await require_provider(db, provider_id)
    if state["archived_at"] is None:
        raise Conflict(f"Provider {provider_id!r} is not archived.", param="id")
    await write_one(
        db,
        "UPDATE providers SET archived_at = NULL, enabled = 1, updated_at = ? WHERE id = ?",
        (now_ms(), provider_id),
    )
    return await get_provider(db, provider_id)


async def delete_model(
    db: Database, model_id: str, *, pending: Collection[str] = ()
) -> dict[str, Any]:
    """Delete a model and its links, or archive it (links kept) when requests name it.

    ``pending`` holds the model names of rows not yet written.
    """
    await get_model(db, model_id)
    return await _delete_or_archive(
        db,
        model_id,
        queued=model_id in pending,
        history="SELECT EXISTS (SELECT 1 FROM requests WHERE model = :id)",
        archive="UPDATE models SET archived_at = coalesce(archived_at, :now), updated_at = :now"
        " WHERE id = :id",
        delete=(
            "DELETE FROM provider_models WHERE model_id = :id",
            "DELETE FROM models WHERE id = :id",
        ),
    )


async def restore_model(db: Database, model_id: str) -> dict[str, Any]:
    model = await get_model(db, model_id)
    if model["archived_at"] is None:
        raise Conflict(f"Model {model_id!r} is not archived.", param="id")
    await write_one(
        db,
        "UPDATE models SET archived_at = NULL, updated_at = ? WHERE id = ?",
        (now_ms(), model_id),
    )
    return await get_model(db, model_id)
