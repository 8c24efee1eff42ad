"""Management endpoints for providers and their model links."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.store import catalog

from .common import admin, json_body, json_response, services
from .health import live_state


@admin
async def create_provider(request: Request) -> Response:
    app = services(request)
    provider = await catalog.create_provider(app.db, await json_body(request))
    await app.snapshots.rebuild()
    return json_response(provider, 201)


@admin
async def list_providers(request: Request) -> Response:
    return json_response({"data": await catalog.list_providers(services(request).db)})


@admin
async def get_provider(request: Request) -> Response:
    provider_id = request.path_params["provider_id"]
    provider = await catalog.get_provider(services(request).db, provider_id)
    provider["state"].update(live_state(request, provider_id))
    return json_response(provider)


@admin
async def update_provider(request: Request) -> Response:
    app = services(request)
    provider_id = request.path_params["provider_id"]
    provider = await catalog.update_provider(app.db, provider_id, await json_body(request))
    await app.snapshots.rebuild()
    return json_response(provider)


@admin
async def list_links(request: Request) -> Response:
    app = services(request)
    provider_id = request.path_params["provider_id"]
    await catalog.get_provider(app.db, provider_id)
    return json_response({"data": await catalog.list_links(app.db, provider_id)})


@admin
async def link_model(request: Request) -> Response:
    app = services(request)
    provider_id = request.path_params["provider_id"]
    link = await catalog.link_model(app.db, provider_id, await json_body(request))
    await app.snapshots.rebuild()
    return json_response(link, 201)


routes = [
    Route("/v1/providers", create_provider, methods=["POST"]),
    Route("/v1/providers", list_providers, methods=["GET"]),
    Route("/v1/providers/{provider_id}", get_provider, methods=["GET"]),
    Route("/v1/providers/{provider_id}", update_provider, methods=["PUT"]),
    Route("/v1/providers/{provider_id}/models", list_links, methods=["GET"]),
    Route("/v1/providers/{provider_id}/models", link_model, methods=["POST"]),
]
