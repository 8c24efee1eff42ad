"""``GET /v1/stats/timeseries``: usage per time bucket and provider or model (the UI overview)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.common import admin, json_response, services
from router.store import timeseries


@admin
async def usage_timeseries(request: Request) -> Response:
    params = dict(request.query_params)
    return json_response(await timeseries.timeseries(services(request).db, params))


routes = [Route("/v1/stats/timeseries", usage_timeseries, methods=["GET"])]
