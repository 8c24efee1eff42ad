"""``GET /v1/models`` in OpenAI's list shape (for clients), and model management."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.store import catalog

from .common import admin, json_body, json_response, services


async def list_models(request: Request) -> Response:
    """The models clients can ask for: OpenAI's ``{"object": "list", "data": [...]}``."""
    snapshot = services(request).snapshots.current
    data = [
        {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "provider-router",
            "providers": [c.provider_id for c in snapshot.routes.get(model_id, ())],
        }
        for model_id, created in snapshot.models.items()
    ]
    return json_response({"object": "list", "data": data})


@admin
async def create_model(request: Request) -> Response:
    app = services(request)
    model = await catalog.create_model(app.db, await json_body(request))
    await app.snapshots.rebuild()
    return json_response(model, 201)


@admin
async def get_model(request: Request) -> Response:
    return json_response(
        await catalog.get_model(services(request).db, request.path_params["model_id"])
    )


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models", create_model, methods=["POST"]),
    Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
]
