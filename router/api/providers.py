"""Management endpoints for providers: CRUD, enable/disable, test, reload, archive and restore."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from providers.base import Adapter
from providers.registry import get_adapter_class
from router.api import actions, common
from router.api.common import admin, changed, json_body, json_response, services
from router.api.health import live_state
from router.errors import InvalidRequest
from router.gateway.health import close_recovered, probe_and_record
from router.store import configs, lifecycle, providers


@admin
async def create_provider(request: Request) -> Response:
    app = services(request)
    provider = await providers.create_provider(app.db, await json_body(request))
    return await changed(app, provider, 201)


@admin
async def list_providers(request: Request) -> Response:
    params = request.query_params
    common.only_params(params, ("type", "enabled", "archived", "limit", "cursor"))
    found = await providers.list_providers(
        services(request).db,
        type_name=params.get("type"),
        enabled=common.query_flag(params, "enabled"),
        archived=common.query_flag(params, "archived"),
    )
    for provider in found:
        provider["state"].update(live_state(request, provider["id"], provider["limits"]))
    return json_response(common.page_of(found, params, lambda p: (-p["priority"], p["id"])))


@admin
async def get_provider(request: Request) -> Response:
    provider_id = request.path_params["provider_id"]
    provider = await providers.get_provider(services(request).db, provider_id)
    provider["state"].update(live_state(request, provider_id, provider["limits"]))
    return json_response(provider)


@admin
async def update_provider(request: Request) -> Response:
    app = services(request)
    provider_id = request.path_params["provider_id"]
    provider = await providers.update_provider(app.db, provider_id, await json_body(request))
    return await changed(app, provider)


@admin
async def delete_provider(request: Request) -> Response:
    app = services(request)
    result = await actions.delete_or_archive_provider(app, request.path_params["provider_id"])
    return json_response(result)


@admin
async def restore_provider(request: Request) -> Response:
    app = services(request)
    provider = await lifecycle.restore_provider(app.db, request.path_params["provider_id"])
    return await changed(app, provider)


@admin
async def enable_provider(request: Request) -> Response:
    app = services(request)
    provider = await lifecycle.set_enabled(app.db, request.path_params["provider_id"], True)
    return await changed(app, provider)


@admin
async def disable_provider(request: Request) -> Response:
    app = services(request)
    provider = await lifecycle.set_enabled(app.db, request.path_params["provider_id"], False)
    return await changed(app, provider)


@admin
async def reload_provider(request: Request) -> Response:
    """Rebuild this process's adapter for the provider (fresh connections), then the snapshot."""
    app = services(request)
    provider_id = request.path_params["provider_id"]
    await providers.get_provider(app.db, provider_id)
    snapshot = await app.snapshots.reload(provider_id)
    return json_response({"id": provider_id, "reloaded": True, "config_version": snapshot.version})


async def adapter_to_probe(app: common.Services, provider_id: str) -> tuple[Adapter, bool]:
    """The adapter to probe: the live one, or a temporary one (``True``: close it after)."""
    live = app.snapshots.adapter(provider_id)
    if live is not None:
        return live, False
    provider = await providers.get_provider(app.db, provider_id)
    config = await configs.provider_config(app.db, provider_id)
    adapter_class = get_adapter_class(provider["type"])
    problems = adapter_class.validate_config(config)
    if problems:
        raise InvalidRequest(" ".join(problems), param="config")
    return adapter_class(provider_id, config, app.snapshots.options), True


async def probe_provider(app: common.Services, provider_id: str) -> dict[str, object]:
    provider = await providers.get_provider(app.db, provider_id)
    links = provider["models"]
    default = next((link for link in links if link["is_default"]), links[0] if links else None)
    model = (default["upstream_model"] or default["model_id"]) if default else None
    adapter, temporary = await adapter_to_probe(app, provider_id)
    try:
        # Recorded like a health check, and a success closes an open circuit, as one would.
        timeout_s = app.settings.health_check_timeout_ms / 1000
        results = await probe_and_record(app.db, [(provider_id, adapter, model)], timeout_s)
    finally:
        if temporary:
            await adapter.aclose()
    close_recovered(app.proxy.resilience, results)
    return results[0].result.as_dict()


@admin
async def test_provider(request: Request) -> Response:
    app = services(request)
    return json_response(await probe_provider(app, request.path_params["provider_id"]))


routes = [
    Route("/v1/providers", create_provider, methods=["POST"]),
    Route("/v1/providers", list_providers, methods=["GET"]),
    Route("/v1/providers/{provider_id}", get_provider, methods=["GET"]),
    Route("/v1/providers/{provider_id}", update_provider, methods=["PUT"]),
    Route("/v1/providers/{provider_id}", delete_provider, methods=["DELETE"]),
    Route("/v1/providers/{provider_id}/enable", enable_provider, methods=["POST"]),
    Route("/v1/providers/{provider_id}/disable", disable_provider, methods=["POST"]),
    Route("/v1/providers/{provider_id}/test", test_provider, methods=["POST"]),
    Route("/v1/providers/{provider_id}/reload", reload_provider, methods=["POST"]),
    Route("/v1/providers/{provider_id}/restore", restore_provider, methods=["POST"]),
]
