"""A provider's config as its own resource: read it masked, replace it, set or remove one key.

Every read and write of ``provider_configs`` rows goes through :mod:`router.store.catalog`
(``_write_config``, ``provider_config``, ``masked_config``), which own how values are stored. A
masked value sent back (as a UI that shows the masked form would) stands for the stored secret
and never replaces it.
"""

from __future__ import annotations

from typing import Any

from providers.registry import get_adapter_class
from router.errors import InvalidRequest, NotFound
from router.store import validation as check
from router.store.catalog import (
    _provider_row,
    _validate_config,
    _write_config,
    bump_config_version,
    is_masked,
    masked_config,
    provider_config,
)
from router.store.db import Database


async def get_config(db: Database, provider_id: str) -> dict[str, Any]:
    await _provider_row(db, provider_id)
    return {"provider_id": provider_id, "config": await masked_config(db, provider_id)}


async def replace_config(db: Database, provider_id: str, body: Any) -> dict[str, Any]:
    """``PUT``: the config becomes exactly the keys given; a masked value keeps the stored one."""
    data = check.object_body(body)
    check.only_fields(data, ("config",))
    if "config" not in data:
        raise InvalidRequest("Field 'config' is required.", param="config")
    row = await _provider_row(db, provider_id)
    stored = await provider_config(db, provider_id)
    wanted = _validate_config(row["type"], data["config"], partial=True)
    final: dict[str, Any] = {}
    for key, value in wanted.items():
        if is_masked(value):
            if key not in stored:
                raise InvalidRequest(
                    f"Config key {key!r} has a masked value but no stored value to keep.",
                    param=f"config.{key}",
                )
            final[key] = stored[key]
        elif value is not None:
            final[key] = value
    _validate_config(row["type"], final, partial=False)
    changes: dict[str, Any] = {key: None for key in stored if key not in final}
    changes.update({k: v for k, v in wanted.items() if v is not None and not is_masked(v)})
    async with db.transaction() as conn:
        await _write_config(conn, provider_id, row["type"], changes, db)
        await bump_config_version(conn)
    return await get_config(db, provider_id)


async def set_config_key(db: Database, provider_id: str, key: str, body: Any) -> dict[str, Any]:
    """``PATCH .../config/{key}`` with ``{"value", "is_sensitive"?}``."""
    data = check.object_body(body)
    check.only_fields(data, ("value", "is_sensitive"))
    row = await _provider_row(db, provider_id)
    if "value" not in data or data["value"] is None:
        raise InvalidRequest(
            f"Field 'value' is required; remove a key with "
            f"DELETE /v1/providers/{provider_id}/config/{key}.",
            param="value",
        )
    value = data["value"]
    _validate_config(row["type"], {key: value}, partial=True)
    spec = get_adapter_class(row["type"]).config_keys[key]
    sensitive = check.boolean(data, "is_sensitive")
    if sensitive is not None and sensitive != spec.sensitive:
        # Sensitivity is part of the provider type's contract, so the adapter declares it.
        state = "always" if spec.sensitive else "never"
        raise InvalidRequest(
            f"Config key {key!r} of type {row['type']!r} is {state} sensitive.",
            param="is_sensitive",
        )
    stored = await provider_config(db, provider_id)
    if is_masked(value):
        if key not in stored:
            raise InvalidRequest(
                f"Config key {key!r} has a masked value but no stored value to keep.",
                param="value",
            )
        return await get_config(db, provider_id)
    _validate_config(row["type"], {**stored, key: value}, partial=False)
    async with db.transaction() as conn:
        await _write_config(conn, provider_id, row["type"], {key: value}, db)
        await bump_config_version(conn)
    return await get_config(db, provider_id)


async def delete_config_key(db: Database, provider_id: str, key: str) -> dict[str, Any]:
    row = await _provider_row(db, provider_id)
    stored = await provider_config(db, provider_id)
    if key not in stored:
        raise NotFound(f"Provider {provider_id!r} has no config key {key!r}.", param="key")
    rest = {k: v for k, v in stored.items() if k != key}
    problems = get_adapter_class(row["type"]).validate_config(rest, partial=False)
    if problems:
        raise InvalidRequest(
            f"Config key {key!r} cannot be removed: {' '.join(problems)}", param="key"
        )
    async with db.transaction() as conn:
        await _write_config(conn, provider_id, row["type"], {key: None}, db)
        await bump_config_version(conn)
    return await get_config(db, provider_id)
