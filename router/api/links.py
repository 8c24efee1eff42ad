"""Provider-model links: list, link (creating the model), unlink, and the default model."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.common import admin, changed, json_body, json_response, services
from router.store import links, providers


@admin
async def list_links(request: Request) -> Response:
    app = services(request)
    provider_id = request.path_params["provider_id"]
    await providers.get_provider(app.db, provider_id)
    return json_response({"data": await links.list_links(app.db, provider_id), "next_cursor": None})


@admin
async def link_model(request: Request) -> Response:
    app = services(request)
    provider_id = request.path_params["provider_id"]
    link = await links.link_model(app.db, provider_id, await json_body(request))
    return await changed(app, link, 201)


@admin
async def unlink_model(request: Request) -> Response:
    app = services(request)
    provider_id, model_id = request.path_params["provider_id"], request.path_params["model_id"]
    await links.unlink_model(app.db, provider_id, model_id)
    return await changed(app, {"provider_id": provider_id, "model_id": model_id, "deleted": True})


@admin
async def set_default(request: Request) -> Response:
    app = services(request)
    provider_id, model_id = request.path_params["provider_id"], request.path_params["model_id"]
    found = await links.set_default(app.db, provider_id, model_id)
    return await changed(app, {"data": found, "next_cursor": None})


routes = [
    Route("/v1/providers/{provider_id}/models", list_links, methods=["GET"]),
    Route("/v1/providers/{provider_id}/models", link_model, methods=["POST"]),
    Route(
        "/v1/providers/{provider_id}/models/{model_id:path}/default", set_default, methods=["PUT"]
    ),
    Route("/v1/providers/{provider_id}/models/{model_id:path}", unlink_model, methods=["DELETE"]),
]
