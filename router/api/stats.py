"""``GET /v1/stats``: usage per provider or per model, computed in SQL."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.common import admin, json_response, services
from router.store import stats


@admin
async def usage_stats(request: Request) -> Response:
    params = dict(request.query_params)
    return json_response(await stats.usage_stats(services(request).db, params))


routes = [Route("/v1/stats", usage_stats, methods=["GET"])]
