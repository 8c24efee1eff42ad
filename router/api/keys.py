"""Client keys: ``POST|GET /v1/keys`` and ``GET|DELETE /v1/keys/{id}``.

The key itself appears once, in the answer to ``POST``; afterwards only its prefix is shown.
A change reloads this process's key table at once; other processes follow within about a second
(``config_version``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api import actions
from router.api.common import admin, json_body, json_response, services
from router.errors import InvalidRequest
from router.store import client_keys


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidRequest(
            f"Query parameter 'limit' must be an integer from 1 to 1000, got {raw!r}.",
            param="limit",
        )
    return int(raw)


@admin
async def create_key(request: Request) -> Response:
    app = services(request)
    created = await actions.create_client_key(app, await json_body(request))
    return json_response(created, status_code=201)


@admin
async def list_keys(request: Request) -> Response:
    page, cursor = await client_keys.list_keys(
        services(request).db, limit=_limit(request), cursor=request.query_params.get("cursor")
    )
    return json_response({"data": page, "next_cursor": cursor})


@admin
async def get_key(request: Request) -> Response:
    return json_response(
        await client_keys.get_key(services(request).db, request.path_params["key_id"])
    )


@admin
async def revoke_key(request: Request) -> Response:
    revoked = await actions.revoke_client_key(services(request), request.path_params["key_id"])
    return json_response(revoked)


routes = [
    Route("/v1/keys", create_key, methods=["POST"]),
    Route("/v1/keys", list_keys, methods=["GET"]),
    Route("/v1/keys/{key_id}", get_key, methods=["GET"]),
    Route("/v1/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
