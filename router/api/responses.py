"""Stored responses: ``GET``/``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``,
and the answer to a WebSocket upgrade on ``GET /v1/responses``.

A client key sees only the responses it created (any other id is a 404, as if it did not exist);
the admin token sees all. ``POST /v1/responses`` itself is the Responses front door, served on the
fast path (:mod:`router.doors.responses`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.common import json_response, services
from router.doors.responses_keeper import ResponseKeeper
from router.errors import InvalidRequest, NotFound
from router.store.responses import EVERY_OWNER, Owner, input_items_page

UPGRADE_REFUSED = (
    "provider-router serves the Responses API over HTTP only; send POST /v1/responses "
    "(WebSocket mode is not supported)."
)


def _caller(request: Request) -> tuple[ResponseKeeper, Owner]:
    app = services(request)
    key = app.auth.authenticate_client(request.scope["headers"])
    keeper = app.proxy.responses_door.keeper
    assert keeper is not None
    return keeper, EVERY_OWNER if key is None else key.id


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"No response with id {response_id!r}.", param="response_id")


async def get_response(request: Request) -> Response:
    keeper, owner = _caller(request)
    response_id = request.path_params["response_id"]
    found = await keeper.get(response_id, owner)
    if found is None:
        raise _not_found(response_id)
    return json_response(found.response)


async def delete_response(request: Request) -> Response:
    keeper, owner = _caller(request)
    response_id = request.path_params["response_id"]
    if not await keeper.delete(response_id, owner):
        raise _not_found(response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})


async def list_input_items(request: Request) -> Response:
    keeper, owner = _caller(request)
    response_id = request.path_params["response_id"]
    found = await keeper.get(response_id, owner)
    if found is None:
        raise _not_found(response_id)
    params = dict(request.query_params)
    return json_response(input_items_page(found.input_items, params))


async def refuse_upgrade(request: Request) -> Response:
    """``GET /v1/responses``: Codex tries a WebSocket upgrade here first and falls back to HTTP
    on 426 at once; a plain GET is not a Responses call either."""
    if request.headers.get("upgrade", "").lower() == "websocket":
        error = InvalidRequest(UPGRADE_REFUSED, code="websocket_not_supported")
        return Response(
            error.body(), status_code=426, media_type="application/json",
            headers={"upgrade": "HTTP/1.1", "connection": "Upgrade"},
        )  # fmt: skip
    error = InvalidRequest("Create a response with POST /v1/responses.")
    return Response(error.body(), status_code=405, media_type="application/json",
                    headers={"allow": "POST"})  # fmt: skip


routes = [
    Route("/v1/responses", refuse_upgrade, methods=["GET"]),
    Route("/responses", refuse_upgrade, methods=["GET"]),
    Route("/v1/responses/{response_id}", get_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
]
