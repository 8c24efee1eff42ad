"""What every management endpoint shares: admin auth, JSON in and out, the services object."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from router.auth import Authenticator
from router.errors import InvalidJSON
from router.proxy import Proxy
from router.recorder import Recorder
from router.settings import Settings
from router.snapshots import SnapshotManager
from router.store.db import Database

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class Services:
    """Everything the lifespan opens, reachable from handlers as ``request.app.state.services``."""

    settings: Settings
    db: Database
    snapshots: SnapshotManager
    recorder: Recorder
    auth: Authenticator
    proxy: Proxy


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def json_response(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > services(request).settings.max_body_bytes:
        raise InvalidJSON("The request body is too large.")
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
