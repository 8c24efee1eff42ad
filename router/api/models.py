"""``GET /v1/models`` in OpenAI's list shape (for clients), and model management."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.common import (
    admin,
    changed,
    json_body,
    json_response,
    recorder_drained,
    services,
)
from router.store import lifecycle, models


async def list_models(request: Request) -> Response:
    """The models clients can ask for: OpenAI's ``{"object": "list", "data": [...]}``.

    Guarded like chat completions once client keys are in use; a key limited to some models
    sees only those."""
    app = services(request)
    key = app.auth.authenticate_client(request.headers.raw)
    allowed = key.models if key is not None else None
    snapshot = app.snapshots.current
    data = [
        {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "provider-router",
            "providers": [c.provider_id for c in snapshot.routes.get(model_id, ())],
        }
        for model_id, created in snapshot.models.items()
        if allowed is None or model_id in allowed
    ]
    return json_response({"object": "list", "data": data})


@admin
async def create_model(request: Request) -> Response:
    app = services(request)
    model = await models.create_model(app.db, await json_body(request))
    return await changed(app, model, 201)


@admin
async def get_model(request: Request) -> Response:
    return json_response(
        await models.get_model(services(request).db, request.path_params["model_id"])
    )


@admin
async def update_model(request: Request) -> Response:
    app = services(request)
    model_id = request.path_params["model_id"]
    model = await models.update_model(app.db, model_id, await json_body(request))
    return await changed(app, model)


@admin
async def delete_model(request: Request) -> Response:
    app = services(request)
    model_id = request.path_params["model_id"]
    await models.get_model(app.db, model_id)
    pending = () if await recorder_drained(app) else (model_id,)
    result = await lifecycle.delete_model(app.db, model_id, pending=pending)
    return await changed(app, result)


@admin
async def restore_model(request: Request) -> Response:
    app = services(request)
    model = await lifecycle.restore_model(app.db, request.path_params["model_id"])
    return await changed(app, model)


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models", create_model, methods=["POST"]),
    Route("/v1/models/{model_id:path}/restore", restore_model, methods=["POST"]),
    Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
    Route("/v1/models/{model_id:path}", update_model, methods=["PUT"]),
    Route("/v1/models/{model_id:path}", delete_model, methods=["DELETE"]),
]
