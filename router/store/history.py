"""Reading request history back: ``requests`` rows with their ``attempts``.

Lists are newest first and paginated with an opaque cursor (the last row's time and id), which
stays correct while new rows arrive, unlike an offset.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

from router.errors import InvalidRequest, NotFound
from router.store import validation as check
from router.store.db import Database, Row

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
_REQUEST_COLUMNS = (
    "id, created_at, endpoint, client_key_id, model, provider_id, upstream_model, stream, status,"
    " status_code, latency_ms, ttft_ms, prompt_tokens, completion_tokens, total_tokens, cost,"
    " currency, attempts, error"
)


def encode_cursor(created_at: int, request_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at}:{request_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, _, request_id = raw.partition(":")
        if not check.is_digits(created_at) or int(created_at) > MAX_TIME_MS or not request_id:
            raise ValueError(cursor)
        return int(created_at), request_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest(f"The cursor {cursor!r} is not valid.", param="cursor") from None


def encode_text_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_text_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest(f"The cursor {cursor!r} is not valid.", param="cursor") from None


MAX_TIME_MS = 2**53  # beyond any real timestamp, and within what SQLite and JSON hold exactly


def parse_time(params: Mapping[str, str], key: str, default: int) -> int:
    """Query parameter ``key`` as a Unix time in milliseconds, or ``default`` when absent."""
    value = params.get(key)
    if value is None:
        return default
    if not check.is_digits(value) or int(value) > MAX_TIME_MS:
        raise InvalidRequest(
            f"Parameter {key!r} must be a Unix time in milliseconds, got {value!r}.", param=key
        )
    return int(value)


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not check.is_digits(value) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidRequest(
            f"Parameter 'limit' must be an integer from 1 to {MAX_LIMIT}, got {value!r}.",
            param="limit",
        )
    return int(value)


def _request_dict(row: Row) -> dict[str, Any]:
    data = dict(row)
    data["stream"] = bool(data["stream"])
    return data


STATUSES = ("success", "error", "client_closed")  # RequestRecord.status
# The name requests used before it became the attempts' one (schema 0005); still accepted.
_OLD_STATUS = {"client_disconnected": "client_closed"}


async def list_requests(db: Database, params: Mapping[str, str]) -> dict[str, Any]:
    """``{"data": [...], "next_cursor": ...}`` filtered by model, provider_id (the provider that
    answered, or the last one tried), tried_provider_id (any attempt went to it), status,
    client_key_id, endpoint, and a time range (``since`` inclusive, ``until`` exclusive)."""
    allowed = {
        "limit", "cursor", "model", "provider_id", "status", "since", "until", "client_key_id",
        "endpoint", "tried_provider_id",
    }  # fmt: skip
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidRequest(f"Unknown query parameter {unknown[0]!r}.", param=unknown[0])
    limit = parse_limit(params.get("limit"))
    where: list[str] = []
    args: list[Any] = []
    if "status" in params and params["status"] in _OLD_STATUS:
        params = {**params, "status": _OLD_STATUS[params["status"]]}
    if "status" in params and params["status"] not in STATUSES:
        raise InvalidRequest(
            f"Parameter 'status' must be one of {', '.join(STATUSES)}, got {params['status']!r}.",
            param="status",
        )
    for key in ("model", "provider_id", "status", "client_key_id", "endpoint"):
        if key in params:
            where.append(f"{key} = ?")
            args.append(params[key])
    if "tried_provider_id" in params:
        where.append("id IN (SELECT request_id FROM attempts WHERE provider_id = ?)")
        args.append(params["tried_provider_id"])
    for key, operator in (("since", ">="), ("until", "<")):
        if key in params:
            where.append(f"created_at {operator} ?")
            args.append(parse_time(params, key, 0))
    if "cursor" in params:
        created_at, request_id = decode_cursor(params["cursor"])
        where.append("(created_at, id) < (?, ?)")
        args.extend([created_at, request_id])
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = await db.execute(
        f"SELECT {_REQUEST_COLUMNS} FROM requests {clause}"
        " ORDER BY created_at DESC, id DESC LIMIT ?",
        (*args, limit + 1),
    )
    data = [_request_dict(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = data[-1]
        next_cursor = encode_cursor(last["created_at"], last["id"])
    return {"data": data, "next_cursor": next_cursor}


async def get_request(db: Database, request_id: str) -> dict[str, Any]:
    row = await db.execute_one(
        f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE id = ?", (request_id,)
    )
    if row is None:
        raise NotFound(f"No request with id {request_id!r}.", param="id")
    data = _request_dict(row)
    attempts = await db.execute(
        "SELECT n, provider_id, started_at, status, status_code, latency_ms, error FROM attempts"
        " WHERE request_id = ? ORDER BY n",
        (request_id,),
    )
    data["attempt_details"] = [dict(a) for a in attempts]
    trace = await db.execute_one("SELECT trace FROM requests WHERE id = ?", (request_id,))
    data["trace"] = orjson.loads(trace["trace"]) if trace and trace["trace"] else None
    return data
