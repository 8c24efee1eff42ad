"""``GET /v1/models`` in OpenAI's list shape (or Anthropic's, for Anthropic clients), and model
management."""

from __future__ import annotations

import datetime

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
from router.doors.messages import MessagesDoor
from router.errors import InvalidRequest, ModelNotFound, RouterError
from router.gateway.auth import client_token
from router.store import lifecycle, models


def _anthropic_flavoured(request: Request) -> bool:
    """Anthropic's SDKs and Claude Code send ``anthropic-version``, or a key as ``x-api-key``."""
    headers = request.headers
    return "anthropic-version" in headers or (
        "x-api-key" in headers and "authorization" not in headers
    )


def _anthropic_page(request: Request, models: list[tuple[str, int]]) -> Response:
    """Anthropic's model list: ``limit`` (1-1000, default 20), ``after_id``/``before_id``."""
    params = request.query_params
    raw = params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidRequest(
            f"limit must be an integer from 1 to 1000, got {raw!r}.", param="limit"
        )
    limit = int(raw)
    ids = [model_id for model_id, _ in models]
    after, before = params.get("after_id"), params.get("before_id")
    for name, value in (("after_id", after), ("before_id", before)):
        if value is not None and value not in ids:
            raise InvalidRequest(f"{name} {value!r} is not a model on this list.", param=name)
    if before is not None:
        end = ids.index(before)
        chosen = models[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        start = ids.index(after) + 1 if after is not None else 0
        chosen = models[start : start + limit]
        has_more = start + limit < len(models)
    data = [
        {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": datetime.datetime.fromtimestamp(created, datetime.UTC)
            .isoformat()
            .replace("+00:00", "Z"),
        }
        for model_id, created in chosen
    ]
    page = {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    return json_response(page)


async def list_models(request: Request) -> Response:
    """The models clients can ask for: OpenAI's ``{"object": "list", "data": [...]}``.

    Guarded like chat completions once client keys are in use; a key limited to some models
    sees only those. An Anthropic client gets Anthropic's list shape, with its paging."""
    app = services(request)
    if _anthropic_flavoured(request):
        try:
            key = app.auth.authenticate_client(request.headers.raw)
            visible = [
                (model_id, created)
                for model_id, created in app.snapshots.current.models.items()
                if key is None or key.models is None or model_id in key.models
            ]
            return _anthropic_page(request, visible)
        except RouterError as exc:
            status, body = MessagesDoor().error(exc)  # errors in the client's dialect too
            return Response(body, status, media_type="application/json")
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


async def get_model(request: Request) -> Response:
    """One model. The admin token gets the management detail (name, description,
    capabilities, timestamps), plus OpenAI's fields so SDKs read it too; anyone else is a
    client (guarded like chat completions) and gets OpenAI's model object, or Anthropic's to an
    Anthropic client, for a model it may ask for."""
    app = services(request)
    model_id = request.path_params["model_id"]
    if app.auth.is_admin(client_token(request.headers.raw)):
        model = await models.get_model(app.db, model_id)
        created = model["created_at"] // 1000
        return json_response({"object": "model", "created": created,
                              "owned_by": "provider-router", **model})  # fmt: skip
    anthropic = _anthropic_flavoured(request)
    try:
        key = app.auth.authenticate_client(request.headers.raw)
        created = app.snapshots.current.models.get(model_id)
        if created is None or (key is not None and key.models is not None
                               and model_id not in key.models):  # fmt: skip
            raise ModelNotFound(f"The model {model_id!r} does not exist.", param="model")
    except RouterError as exc:
        if not anthropic:
            raise
        status, body = MessagesDoor().error(exc)
        return Response(body, status, media_type="application/json")
    if anthropic:
        stamp = datetime.datetime.fromtimestamp(created, datetime.UTC).isoformat()
        return json_response({"type": "model", "id": model_id, "display_name": model_id,
                              "created_at": stamp.replace("+00:00", "Z")})  # fmt: skip
    return json_response(
        {"id": model_id, "object": "model", "created": created, "owned_by": "provider-router"}
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
