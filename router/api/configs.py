"""A provider's config: ``GET``/``PUT /v1/providers/{id}/config``, ``PATCH``/``DELETE`` one key."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.common import admin, changed, json_body, json_response, services
from router.store import configs


@admin
async def get_config(request: Request) -> Response:
    found = await configs.get_config(services(request).db, request.path_params["provider_id"])
    return json_response(found)


@admin
async def replace_config(request: Request) -> Response:
    app = services(request)
    provider_id = request.path_params["provider_id"]
    found = await configs.replace_config(app.db, provider_id, await json_body(request))
    return await changed(app, found)


@admin
async def set_key(request: Request) -> Response:
    app = services(request)
    provider_id, key = request.path_params["provider_id"], request.path_params["key"]
    found = await configs.set_config_key(app.db, provider_id, key, await json_body(request))
    return await changed(app, found)


@admin
async def delete_key(request: Request) -> Response:
    app = services(request)
    provider_id, key = request.path_params["provider_id"], request.path_params["key"]
    found = await configs.delete_config_key(app.db, provider_id, key)
    return await changed(app, found)


routes = [
    Route("/v1/providers/{provider_id}/config", get_config, methods=["GET"]),
    Route("/v1/providers/{provider_id}/config", replace_config, methods=["PUT"]),
    Route("/v1/providers/{provider_id}/config/{key}", set_key, methods=["PATCH"]),
    Route("/v1/providers/{provider_id}/config/{key}", delete_key, methods=["DELETE"]),
]
