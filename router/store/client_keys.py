"""Client keys (the ``api_keys`` table): who may call ``/v1/chat/completions``.

A key is ``pr-`` plus 43 random URL-safe characters. Only its SHA-256 (hex) and its first
characters (``prefix``, to tell keys apart in a list) are stored: the key itself is returned once,
by :func:`create_key`. Creating or revoking a key bumps ``config_version``, so every running
proxy reloads its in-memory key table within about a second.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from router.errors import InvalidRequest, NotFound, PermissionDenied
from router.store import validation as check
from router.store.db import Database, Row
from router.store.version import bump_config_version, now_ms

KEY_PREFIX = "pr-"
PREFIX_CHARS = 10
FIELDS = ("name", "rpm_limit", "tpm_limit", "models", "expires_at")


@dataclass(frozen=True, slots=True)
class ClientKey:
    """An authenticated client key, as the proxy sees it (the limits are for rate limiting)."""

    id: str
    name: str
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    models: frozenset[str] | None = None
    expires_at: int | None = None

    def check_model(self, model: str) -> None:
        if self.models is not None and model not in self.models:
            raise PermissionDenied(
                f"This client key may not use model {model!r}.", param="model", code="model_denied"
            )


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_dict(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "enabled": bool(row["enabled"]) and row["revoked_at"] is None,
        "rpm_limit": row["rpm_limit"],
        "tpm_limit": row["tpm_limit"],
        "models": orjson.loads(row["models"]) if row["models"] else None,
        "expires_at": row["expires_at"],
        "created_at": row["created_at"],
        "last_used_at": row["last_used_at"],
        "revoked_at": row["revoked_at"],
    }


def _models(data: dict[str, Any]) -> list[str] | None:
    models = data.get("models")
    if models is None:
        return None
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m for m in models)
    ):
        raise InvalidRequest(
            "Field 'models' must be a non-empty list of model ids, or left out for all models.",
            param="models",
        )
    return sorted(set(models))


async def create_key(db: Database, data: Any) -> dict[str, Any]:
    """Create a client key; the answer holds the key itself under ``key`` (shown only here)."""
    data = check.object_body(data)
    check.only_fields(data, FIELDS)
    name = check.text(data, "name", required=True)
    rpm_limit = check.integer(data, "rpm_limit", minimum=1)
    tpm_limit = check.integer(data, "tpm_limit", minimum=1)
    models = _models(data)
    expires_at = check.integer(data, "expires_at", minimum=1)
    if expires_at is not None and expires_at <= now_ms():
        raise InvalidRequest(
            f"Field 'expires_at' ({expires_at}) is in the past; give Unix milliseconds.",
            param="expires_at",
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(8)
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO api_keys (id, name, prefix, hash, rpm_limit, tpm_limit, models,"
            " expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key_id,
                name,
                key[:PREFIX_CHARS],
                hash_key(key),
                rpm_limit,
                tpm_limit,
                orjson.dumps(models).decode() if models is not None else None,
                expires_at,
                now_ms(),
            ),
        )
        await bump_config_version(conn)
    created = await get_key(db, key_id)
    created["key"] = key
    return created


async def get_key(db: Database, key_id: str) -> dict[str, Any]:
    row = await db.execute_one("SELECT * FROM api_keys WHERE id = ?", (key_id,))
    if row is None:
        raise NotFound(f"No client key with id {key_id!r}.", param="id")
    return key_dict(row)


async def list_keys(
    db: Database, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of keys in id order, and the cursor of the next page (or None)."""
    rows = await db.execute(
        "SELECT * FROM api_keys WHERE id > ? ORDER BY id LIMIT ?", (cursor or "", limit + 1)
    )
    page = [key_dict(row) for row in rows[:limit]]
    return page, (page[-1]["id"] if len(rows) > limit else None)


async def all_keys(db: Database) -> list[dict[str, Any]]:
    rows = await db.execute("SELECT * FROM api_keys ORDER BY created_at, id")
    return [key_dict(row) for row in rows]


async def revoke_key(db: Database, key_id: str) -> dict[str, Any]:
    """Revoke a key for good; revoking it again changes nothing."""
    await get_key(db, key_id)
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "UPDATE api_keys SET enabled = 0, revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now_ms(), key_id),
        )
        if cursor.rowcount:
            await bump_config_version(conn)
    return await get_key(db, key_id)


async def key_table(db: Database) -> tuple[bool, list[Row]]:
    """(whether any key was ever created, the usable keys) for the in-memory key table."""
    rows = await db.execute(
        "SELECT id, name, hash, rpm_limit, tpm_limit, models, expires_at, enabled, revoked_at"
        " FROM api_keys"
    )
    usable = [row for row in rows if row["enabled"] and row["revoked_at"] is None]
    return bool(rows), usable


async def record_last_used(db: Database, used: dict[str, int]) -> None:
    """Write a batch of ``last_used_at`` stamps (one transaction, never one per request)."""
    if used:
        latest = db.greatest("coalesce(last_used_at, 0)", "?")
        await db.execute_write_many(
            f"UPDATE api_keys SET last_used_at = {latest} WHERE id = ?",
            [(stamp, key_id) for key_id, stamp in used.items()],
        )
