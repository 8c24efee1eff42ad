"""Stored Responses API responses: the ``responses`` table (schema/0009_responses.sql).

A stored response keeps the response object as it was answered and the input items it was
given; ``previous_response_id`` links a conversation's responses. Ownership is a column, checked
by the caller's ``owner``: a client key id sees only its own rows, ``EVERY_OWNER`` (the admin
token) sees all.

Retention: :func:`prune_before` deletes responses created before a cutoff in small batches, so a
long prune never holds the writer for long; it runs with the history's pruning
(``history.retention_days``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from router.errors import InvalidRequest
from router.store import validation as check
from router.store.db import Database, Row


class _Every:
    """The owner that sees every response (the admin token)."""

    def __repr__(self) -> str:
        return "EVERY_OWNER"


EVERY_OWNER: Final = _Every()
Owner = str | None | _Every
MAX_CHAIN = 1000  # previous_response_id links followed at most
INPUT_ITEMS_MAX_LIMIT = 100
INPUT_ITEMS_DEFAULT_LIMIT = 20


@dataclass(slots=True)
class StoredResponse:
    id: str
    created_at: int  # Unix ms
    client_key_id: str | None
    request_id: str | None
    model: str
    status: str
    previous_response_id: str | None
    input_items: list[dict[str, Any]]
    response: dict[str, Any]

    def visible_to(self, owner: Owner) -> bool:
        return owner is EVERY_OWNER or owner == self.client_key_id


_COLUMNS = (
    "id, created_at, client_key_id, request_id, model, status, previous_response_id,"
    " input_items, response"
)
# A retried write of the same id replaces the row (SQLite and PostgreSQL both take this form).
_REPLACE = ", ".join(
    f"{column} = excluded.{column}" for column in _COLUMNS.replace(" ", "").split(",")[1:]
)


def _from_row(row: Row) -> StoredResponse:
    return StoredResponse(
        row["id"], row["created_at"], row["client_key_id"], row["request_id"], row["model"],
        row["status"], row["previous_response_id"], orjson.loads(row["input_items"]),
        orjson.loads(row["response"]),
    )  # fmt: skip


async def save_response(db: Database, stored: StoredResponse) -> None:
    """Insert one response (a retried write of the same id replaces it)."""
    await db.execute_write(
        f"INSERT INTO responses ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        f" ON CONFLICT (id) DO UPDATE SET {_REPLACE}",
        (
            stored.id, stored.created_at, stored.client_key_id, stored.request_id, stored.model,
            stored.status, stored.previous_response_id,
            orjson.dumps(stored.input_items).decode(), orjson.dumps(stored.response).decode(),
        ),
    )  # fmt: skip


async def get_response(db: Database, response_id: str, owner: Owner) -> StoredResponse | None:
    """The response ``response_id`` if ``owner`` may see it, else None (as if it did not exist)."""
    row = await db.execute_one(f"SELECT {_COLUMNS} FROM responses WHERE id = ?", (response_id,))
    if row is None:
        return None
    found = _from_row(row)
    return found if found.visible_to(owner) else None


async def conversation(db: Database, response_id: str, owner: Owner) -> list[StoredResponse]:
    """``response_id`` and the responses it continues, oldest first; empty if ``owner`` may not
    see it. The chain stops at a response that was deleted or belongs to someone else."""
    rows = await db.execute(
        f"""WITH RECURSIVE chain(n, id) AS (
                SELECT 0, CAST(? AS TEXT)
                UNION ALL
                SELECT chain.n + 1, r.previous_response_id FROM responses r JOIN chain
                ON r.id = chain.id WHERE r.previous_response_id IS NOT NULL AND chain.n < ?
            )
            SELECT {_COLUMNS}, chain.n FROM chain JOIN responses USING (id) ORDER BY chain.n""",
        (response_id, MAX_CHAIN),
    )
    found: list[StoredResponse] = []
    for row in rows:
        stored = _from_row(row)
        if not stored.visible_to(owner) or (found and found[-1].previous_response_id != stored.id):
            break
        found.append(stored)
    if found and found[0].id != response_id:
        return []
    return found[::-1]


async def delete_response(db: Database, response_id: str, owner: Owner) -> bool:
    """Delete the response if ``owner`` may see it; whether one was deleted."""
    if owner is EVERY_OWNER:
        changed = await db.execute_write("DELETE FROM responses WHERE id = ?", (response_id,))
    else:
        changed = await db.execute_write(
            "DELETE FROM responses WHERE id = ? AND client_key_id IS NOT DISTINCT FROM ?",
            (response_id, owner),
        )
    return changed > 0


async def prune_before(db: Database, cutoff_ms: int, batch: int = 500) -> int:
    """Delete the responses created before ``cutoff_ms`` (Unix ms), ``batch`` rows per
    transaction; returns how many were deleted."""
    total = 0
    while True:
        changed = await db.execute_write(
            "DELETE FROM responses WHERE id IN"
            " (SELECT id FROM responses WHERE created_at < ? LIMIT ?)",
            (cutoff_ms, batch),
        )
        total += changed
        if changed < batch:
            return total


def input_items_page(items: list[dict[str, Any]], params: Mapping[str, str]) -> dict[str, Any]:
    """One page of a response's input items in OpenAI's list shape: ``{"object": "list",
    "data", "first_id", "last_id", "has_more"}``, paged with ``limit`` (1-100, default 20),
    ``order`` (``desc``, the default, or ``asc``), ``after`` and ``before`` (item ids)."""
    allowed = {"limit", "order", "after", "before", "include", "include[]"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidRequest(f"Unknown query parameter {unknown[0]!r}.", param=unknown[0])
    limit_text = params.get("limit", str(INPUT_ITEMS_DEFAULT_LIMIT))
    if not check.is_digits(limit_text) or not 1 <= int(limit_text) <= INPUT_ITEMS_MAX_LIMIT:
        raise InvalidRequest(
            f"Parameter 'limit' must be an integer from 1 to {INPUT_ITEMS_MAX_LIMIT}, "
            f"got {limit_text!r}.",
            param="limit",
        )
    limit = int(limit_text)
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(
            f"Parameter 'order' must be 'asc' or 'desc', got {order!r}.", param="order"
        )
    ordered = items if order == "asc" else items[::-1]
    ids = [item.get("id") for item in ordered]
    start, end = 0, len(ordered)
    for key in ("after", "before"):
        if key in params:
            if params[key] not in ids:
                raise InvalidRequest(
                    f"Parameter {key!r} names no input item of this response: {params[key]!r}.",
                    param=key,
                )
            position = ids.index(params[key])
            if key == "after":
                start = position + 1
            else:
                end = position
    window = ordered[start:end]
    if "before" in params and "after" not in params:
        data = window[-limit:]
        more = len(window) > limit
    else:
        data = window[:limit]
        more = len(window) > limit
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }
