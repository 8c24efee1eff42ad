"""Row lookups the entity modules share: an id that does not exist is a NotFound naming it.

They sit below :mod:`router.store.providers`, :mod:`router.store.configs`,
:mod:`router.store.links` and :mod:`router.store.lifecycle`, which all need to know that a
provider or link exists before they write, without importing each other.
"""

from __future__ import annotations

from router.errors import NotFound
from router.store.db import Database, Row


async def require_provider(db: Database, provider_id: str) -> Row:
    """The provider's ``providers`` row; :class:`NotFound` when there is none."""
    row = await db.execute_one("SELECT * FROM providers WHERE id = ?", (provider_id,))
    if row is None:
        raise NotFound(f"No provider with id {provider_id!r}.", param="id")
    return row


async def require_model(db: Database, model_id: str) -> Row:
    """The model's ``models`` row; :class:`NotFound` when there is none."""
    row = await db.execute_one("SELECT * FROM models WHERE id = ?", (model_id,))
    if row is None:
        raise NotFound(f"No model with id {model_id!r}.", param="id")
    return row


async def require_link(db: Database, provider_id: str, model_id: str) -> Row:
    """The ``provider_models`` row linking the two; :class:`NotFound` for a missing provider or
    link."""
    await require_provider(db, provider_id)
    row = await db.execute_one(
        "SELECT * FROM provider_models WHERE provider_id = ? AND model_id = ?",
        (provider_id, model_id),
    )
    if row is None:
        raise NotFound(
            f"Model {model_id!r} is not linked to provider {provider_id!r}.", param="model_id"
        )
    return row
