"""Request history: ``GET /v1/requests`` and ``GET /v1/requests/{id}``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.common import admin, json_response, services
from router.store import history


@admin
async def list_requests(request: Request) -> Response:
    params = dict(request.query_params)
    return json_response(await history.list_requests(services(request).db, params))


@admin
async def get_request(request: Request) -> Response:
    found = await history.get_request(services(request).db, request.path_params["request_id"])
    return json_response(found)


routes = [
    Route("/v1/requests", list_requests, methods=["GET"]),
    Route("/v1/requests/{request_id}", get_request, methods=["GET"]),
]
