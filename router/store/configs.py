"""A provider's config: how its values are validated, stored, read in clear and shown masked.

Every read and write of ``provider_configs`` rows goes through this module: :func:`write_config`
encrypts sensitive values (:mod:`router.store.credentials`), :func:`provider_config` reads them
in clear for building adapters, :func:`masked_config` is what clients see. The config is also a
resource of its own (read it masked, replace it, set or remove one key). A masked value sent back
(as a UI that shows the masked form would) stands for the stored secret and never replaces it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.registry import get_adapter_class
from router.errors import InvalidRequest, NotFound
from router.store import validation as check
from router.store.credentials import check_key_current, decode_value, encode_value
from router.store.db import Connection, Database
from router.store.lookups import require_provider
from router.store.version import bump_config_version, now_ms

MASK = "****"


def mask(value: Any) -> str:
    """The masked form of a secret: ``****`` plus at most its last 4 characters."""
    if isinstance(value, str) and len(value) >= 12:
        return MASK + value[-4:]
    return MASK


def is_masked(value: Any) -> bool:
    """True for a value in the masked form, which stands for the stored secret."""
    return isinstance(value, str) and value.startswith(MASK)


def without_masked(config: Any) -> Any:
    """Drop masked values a client sent back: they stand for the stored secret, unchanged."""
    if not isinstance(config, dict):
        return config
    return {key: value for key, value in config.items() if not is_masked(value)}


def validate_config(type_name: str, config: Any, *, partial: bool) -> dict[str, Any]:
    """Check ``config`` against the provider type's keys (all required ones unless ``partial``)."""
    if not isinstance(config, dict):
        raise InvalidRequest("Field 'config' must be an object of config keys.", param="config")
    problems = get_adapter_class(type_name).validate_config(config, partial=partial)
    if problems:
        raise InvalidRequest(" ".join(problems), param="config")
    return config


async def write_config(
    conn: Connection,
    provider_id: str,
    type_name: str,
    config: Mapping[str, Any],
    db: Database,
) -> None:
    """Upsert each key in the caller's transaction; ``None`` removes the key, a masked sensitive
    value is skipped (it stands for the stored secret)."""
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


async def get_config(db: Database, provider_id: str) -> dict[str, Any]:
    """``GET .../config``: the provider's config, masked."""
    await require_provider(db, provider_id)
    return {"provider_id": provider_id, "config": await masked_config(db, provider_id)}


async def replace_config(db: Database, provider_id: str, body: Any) -> dict[str, Any]:
    """``PUT``: the config becomes exactly the keys given; a masked value keeps the stored one."""
    data = check.object_body(body)
    check.only_fields(data, ("config",))
    if "config" not in data:
        raise InvalidRequest("Field 'config' is required.", param="config")
    row = await require_provider(db, provider_id)
    stored = await provider_config(db, provider_id)
    wanted = validate_config(row["type"], data["config"], partial=True)
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
    validate_config(row["type"], final, partial=False)
    changes: dict[str, Any] = {key: None for key in stored if key not in final}
    changes.update({k: v for k, v in wanted.items() if v is not None and not is_masked(v)})
    async with db.transaction() as conn:
        await write_config(conn, provider_id, row["type"], changes, db)
        await bump_config_version(conn)
    return await get_config(db, provider_id)


async def set_config_key(db: Database, provider_id: str, key: str, body: Any) -> dict[str, Any]:
    """``PATCH .../config/{key}`` with ``{"value", "is_sensitive"?}``."""
    data = check.object_body(body)
    check.only_fields(data, ("value", "is_sensitive"))
    row = await require_provider(db, provider_id)
    if "value" not in data or data["value"] is None:
        raise InvalidRequest(
            f"Field 'value' is required; remove a key with "
            f"DELETE /v1/providers/{provider_id}/config/{key}.",
            param="value",
        )
    value = data["value"]
    validate_config(row["type"], {key: value}, partial=True)
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
    validate_config(row["type"], {**stored, key: value}, partial=False)
    async with db.transaction() as conn:
        await write_config(conn, provider_id, row["type"], {key: value}, db)
        await bump_config_version(conn)
    return await get_config(db, provider_id)


async def delete_config_key(db: Database, provider_id: str, key: str) -> dict[str, Any]:
    """``DELETE .../config/{key}``, refused when the type requires the key."""
    row = await require_provider(db, provider_id)
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
        await write_config(conn, provider_id, row["type"], {key: None}, db)
        await bump_config_version(conn)
    return await get_config(db, provider_id)
