"""What every management endpoint shares: admin auth, JSON in and out, the services object."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from router.errors import InvalidJSON, InvalidRequest, PayloadTooLarge
from router.gateway.auth import Authenticator
from router.gateway.handler import Proxy
from router.gateway.metrics import Metrics
from router.gateway.recorder import Recorder
from router.gateway.snapshots import SnapshotManager
from router.gateway.tracing import Tracing
from router.settings import Settings
from router.store import history
from router.store.db import Database

Endpoint = Callable[[Request], Awaitable[Response]]

# How long a delete waits for the recorder to write what it holds before it decides; when the
# queue does not drain in time the provider is archived, never deleted (rows may still refer to it).
RECORDER_WAIT_S = 2.0


def query_flag(params: Mapping[str, str], key: str) -> bool | None:
    value = params.get(key)
    if value is None:
        return None
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidRequest(f"Parameter {key!r} must be true or false, got {value!r}.", param=key)


def only_params(params: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidRequest(f"Unknown query parameter {unknown[0]!r}.", param=unknown[0])


def page_of(
    items: list[dict[str, Any]], params: Mapping[str, str], sort_key: Callable[[Any], Any]
) -> dict[str, Any]:
    """``{"data", "next_cursor"}`` for a small, fully loaded list already sorted by ``sort_key``.

    The cursor is the last item's id; the next page starts after that item's sort position, so
    it stays right when items are added or removed between pages.
    """
    limit = history.parse_limit(params.get("limit"))
    start = 0
    if "cursor" in params:
        last_id = history.decode_text_cursor(params["cursor"])
        keys = {item["id"]: sort_key(item) for item in items}
        if last_id not in keys:
            raise InvalidRequest(f"The cursor {params['cursor']!r} is not valid.", param="cursor")
        start = next((i for i, item in enumerate(items) if sort_key(item) > keys[last_id]),
                     len(items))  # fmt: skip
    data = items[start : start + limit]
    more = start + limit < len(items)
    return {
        "data": data,
        "next_cursor": history.encode_text_cursor(data[-1]["id"]) if more else None,
    }


async def changed(app: Services, data: Any, status_code: int = 200) -> Response:
    """The answer to a management write: rebuild this process's routing snapshot at once (other
    processes follow through ``config_version``), then answer with ``data``."""
    await app.snapshots.rebuild()
    return json_response(data, status_code)


async def recorder_drained(app: Services) -> bool:
    """Wait (briefly) until every history row queued so far is written; False if it did not."""
    try:
        await asyncio.wait_for(app.recorder.flush(), RECORDER_WAIT_S)
    except TimeoutError:
        return False
    return True


@dataclass
class Services:
    """Everything the lifespan opens, reachable from handlers as ``request.app.state.services``."""

    settings: Settings
    db: Database
    snapshots: SnapshotManager
    recorder: Recorder
    auth: Authenticator
    proxy: Proxy
    metrics: Metrics | None = None
    tracing: Tracing | None = None


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def json_response(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


async def json_body(request: Request) -> Any:
    limit = services(request).settings.max_body_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # stop at the limit, not after reading it all
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"The request body is not valid JSON: {exc}.") from None


def admin(endpoint: Endpoint) -> Endpoint:
    """Require the admin token before running ``endpoint``."""

    @wraps(endpoint)
    async def guarded(request: Request) -> Response:
        services(request).auth.require_admin(request.scope["headers"])
        return await endpoint(request)

    return guarded
