"""Failed client authentications (``auth_failures``), read back for an audit.

The recorder sums refused client keys per minute, source address, presented key prefix and
endpoint (:meth:`router.gateway.recorder.Recorder.auth_failed`): one row per group, not per
attempt, so anyone who reaches the port cannot grow the database, while an operator still sees
who tried, with which key, how often and when. The key prefix is the first characters of a key
in the ``pr-`` form (what ``api_keys.prefix`` holds), ``(none)`` when no key was sent and
``(other)`` for anything else, so no part of another secret is ever stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.errors import InvalidRequest
from router.store.db import Database
from router.store.history import (
    MAX_TIME_MS,
    decode_text_cursor,
    encode_text_cursor,
    parse_limit,
    parse_time,
)

_COLUMNS = "minute, source, key_prefix, endpoint, failures, first_at, last_at"


async def list_auth_failures(db: Database, params: Mapping[str, str]) -> dict[str, Any]:
    """``{"data": [...], "next_cursor": ...}``, newest minute first, filtered by ``source``,
    ``key_prefix`` and a time range (``since`` inclusive, ``until`` exclusive)."""
    allowed = {"limit", "cursor", "since", "until", "source", "key_prefix"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidRequest(f"Unknown query parameter {unknown[0]!r}.", param=unknown[0])
    limit = parse_limit(params.get("limit"))
    where = ["minute >= ?", "minute < ?"]
    args: list[Any] = [parse_time(params, "since", 0), parse_time(params, "until", MAX_TIME_MS)]
    for key in ("source", "key_prefix"):
        if key in params:
            where.append(f"{key} = ?")
            args.append(params[key])
    if "cursor" in params:
        minute, sep, rest = decode_text_cursor(params["cursor"]).partition("\n")
        parts = rest.split("\n")
        if not sep or not minute.isdigit() or len(parts) != 3:
            raise InvalidRequest(f"The cursor {params['cursor']!r} is not valid.", param="cursor")
        where.append("(minute, source, key_prefix, endpoint) < (?, ?, ?, ?)")
        args.extend([int(minute), *parts])
    rows = await db.execute(
        f"SELECT {_COLUMNS} FROM auth_failures WHERE {' AND '.join(where)}"
        " ORDER BY minute DESC, source DESC, key_prefix DESC, endpoint DESC LIMIT ?",
        (*args, limit + 1),
    )
    data = [dict(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = data[-1]
        next_cursor = encode_text_cursor(
            "\n".join(str(last[k]) for k in ("minute", "source", "key_prefix", "endpoint"))
        )
    return {"data": data, "next_cursor": next_cursor}
