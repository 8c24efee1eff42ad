"""``GET /v1/auth-failures``: refused client keys, counted per minute, source and key prefix."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.common import admin, json_response, services
from router.store import auth_failures


@admin
async def list_auth_failures(request: Request) -> Response:
    params = dict(request.query_params)
    return json_response(await auth_failures.list_auth_failures(services(request).db, params))


routes = [Route("/v1/auth-failures", list_auth_failures, methods=["GET"])]
