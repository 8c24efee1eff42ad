"""The UI's pages (``GET``): overview, providers, models, client keys, requests, settings.

Every figure comes from the same store functions the management API answers with; live state
(circuits, rate-limit use) from this process's :class:`~router.resilience.policy.Resilience`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from providers.base import ROUTER_CONFIG_KEYS
from providers.registry import adapter_types, get_adapter_class
from router.api.common import services
from router.errors import RouterError
from router.redact import public_url
from router.settings import file_settings
from router.store import client_keys, history, links, timeseries, ui_metadata
from router.store import models as model_store
from router.store import providers as provider_store
from router.ui import charts
from router.ui.web import page, render

WINDOWS = {"hour": 3600_000, "day": 86400_000, "week": 7 * 86400_000, "month": 30 * 86400_000}
SECRET_SETTINGS = {"admin_token", "secret_key", "metrics_token"}
NOTICES = {
    "created": "Provider created.",
    "saved": "Changes saved.",
    "enabled": "Provider enabled.",
    "disabled": "Provider disabled.",
    "reset": "Circuit reset: the provider may be tried again now.",
    "archived": "Provider archived: routing skips it; its history stays.",
    "deleted": "Provider deleted (it had no history).",
    "restored": "Provider restored and enabled.",
    "linked": "Model linked.",
    "unlinked": "Model unlinked.",
    "default": "Default model set.",
    "revoked": "Client key revoked.",
}


def notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


async def live_providers(request: Request, archived: bool | None = False) -> list[dict[str, Any]]:
    """Providers with their live circuit and rate-limit state, and their UI metadata."""
    app = services(request)
    found = await provider_store.list_providers(app.db, archived=archived)
    metadata = await ui_metadata.all_metadata(app.db)
    for provider in found:
        provider["state"].update(app.proxy.resilience.state(provider["id"], provider["limits"]))
        provider["ui"] = metadata.get(provider["id"], ui_metadata.EMPTY)
        provider["headroom"] = headroom(provider)
    return found


def headroom(provider: dict[str, Any]) -> list[str]:
    """Rate-limit use against each configured limit, as text such as ``12 / 60 per minute``."""
    limits = provider.get("limits") or {}
    usage = provider["state"]["usage"] or {}
    shown = []
    for key, used, unit in (
        ("rpm", usage.get("requests_last_minute", 0), "requests per minute"),
        ("rpd", usage.get("requests_last_day", 0), "requests per day"),
        ("tpm", usage.get("tokens_last_minute", 0), "tokens per minute"),
    ):
        if limits.get(key):
            shown.append(f"{used} / {limits[key]} {unit}")
    return shown


@page
async def overview(request: Request) -> Response:
    app = services(request)
    window = request.query_params.get("window", "day")
    if window not in WINDOWS:
        window = "day"
    now = int(time.time() * 1000)
    params = {"since": str(now - WINDOWS[window]), "until": str(now)}
    by_provider = await timeseries.timeseries(app.db, {**params, "group_by": "provider"})
    by_model = await timeseries.totals(app.db, {**params, "group_by": "model"})
    buckets, series = by_provider["buckets"], by_provider["series"]
    return render(
        request,
        "overview.html",
        {
            "title": "Overview",
            "refresh": 30,  # seconds; ui.js reloads the page (the numbers are live)
            "window": window,
            "windows": list(WINDOWS),
            "stats": by_provider,
            "models": by_model,
            "requests_chart": charts.request_bars(buckets, series),
            "latency_chart": charts.latency_bars(buckets, series),
            "providers": await live_providers(request),
        },
    )


@page
async def providers_page(request: Request) -> Response:
    return render(
        request,
        "providers.html",
        {
            "title": "Providers",
            "notice": notice(request),
            "providers": await live_providers(request, archived=None),
            "types": sorted(adapter_types()),
        },
    )


def config_fields(type_name: str, config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The form fields of a provider type: its adapter's config keys, then the router's own."""
    adapter = get_adapter_class(type_name)
    fields = []
    shown = config or {}
    for source, keys in (("adapter", adapter.config_keys), ("router", ROUTER_CONFIG_KEYS)):
        for key, spec in keys.items():
            kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
            kind = "object" if dict in kinds else "bool" if bool in kinds else (
                "int" if int in kinds else "text"
            )  # fmt: skip
            value = shown.get(key)
            fields.append(
                {
                    "key": key,
                    "kind": kind,
                    "required": spec.required,
                    "sensitive": spec.sensitive,
                    "description": spec.description,
                    "group": source,
                    # A secret is never put back into a form: the masked text is only a hint.
                    "value": "" if spec.sensitive or value is None else value,
                    "masked": value if spec.sensitive else None,
                }
            )
    return fields


def sorted_types() -> list[str]:
    return sorted(adapter_types())


@page
async def new_provider(request: Request) -> Response:
    types = sorted_types()
    type_name = request.query_params.get("type", "openai")
    if type_name not in types:
        type_name = types[0]
    return render(
        request,
        "provider_form.html",
        {
            "title": "Add a provider",
            "types": types,
            "type_name": type_name,
            "fields": config_fields(type_name),
            "provider": None,
            "form": {},
        },
    )


async def provider_context(request: Request, provider_id: str) -> dict[str, Any]:
    app = services(request)
    provider = await provider_store.get_provider(app.db, provider_id)
    provider["state"].update(app.proxy.resilience.state(provider_id, provider["limits"]))
    provider["ui"] = await ui_metadata.get_metadata(app.db, provider_id)
    provider["headroom"] = headroom(provider)
    return {
        "title": provider["ui"]["display_name"] or provider["name"],
        "provider": provider,
        "type_name": provider["type"],
        "types": [provider["type"]],
        "fields": config_fields(provider["type"], provider["config"])
        if provider["available"]
        else [],
        "form": {},
    }


@page
async def provider_page(request: Request) -> Response:
    context = await provider_context(request, request.path_params["provider_id"])
    return render(request, "provider.html", {**context, "notice": notice(request)})


async def models_context(request: Request) -> dict[str, Any]:
    app = services(request)
    models = await model_store.list_models(app.db)
    providers = await provider_store.list_providers(app.db)
    rows = []
    for provider in providers:
        for link in await links.list_links(app.db, provider["id"]):
            rows.append(
                {
                    **link,
                    "priority": provider["priority"],
                    "weight": provider["weight"],
                    "enabled": provider["enabled"],
                    "archived": provider["archived_at"],
                }
            )
    rows.sort(key=lambda r: (r["model_id"], -r["priority"], r["provider_id"]))
    return {
        "title": "Models",
        "models": models,
        "links": rows,
        "providers": [p for p in providers if p["archived_at"] is None],
        "notice": notice(request),
    }


@page
async def models_page(request: Request) -> Response:
    return render(request, "models.html", await models_context(request))


@page
async def keys_page(request: Request) -> Response:
    keys = await client_keys.all_keys(services(request).db)
    return render(
        request,
        "keys.html",
        {"title": "Client keys", "keys": keys, "notice": notice(request), "created": None},
    )


FILTERS = ("status", "provider_id", "model", "client_key_id", "endpoint")


def to_ms(text: str) -> str:
    """A ``datetime-local`` field's UTC time as Unix ms; other text goes on as it is, for the
    service to accept (digits) or refuse with its own sentence."""
    try:
        moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        return text
    return str(int(moment.timestamp() * 1000))


@page
async def requests_page(request: Request) -> Response:
    app = services(request)
    query = {k: v for k, v in request.query_params.items() if v and k in (*FILTERS, "cursor")}
    error = None
    for key in ("since", "until"):
        text = request.query_params.get(key, "")
        if text:
            query[key] = to_ms(text)
    try:
        found = await history.list_requests(app.db, query)
    except RouterError as exc:
        error, found = exc.message, {"data": [], "next_cursor": None}
    return render(
        request,
        "requests.html",
        {
            "title": "Requests",
            "rows": found["data"],
            "next_cursor": found["next_cursor"],
            "filters": {k: request.query_params.get(k, "") for k in (*FILTERS, "since", "until")},
            "statuses": history.STATUSES,
            "error": error,
        },
    )


def trace_steps(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The routing trace as rows: each candidate in order, with what happened to it."""
    trace = found.get("trace") or {}
    attempts: dict[str, list[dict[str, Any]]] = {}
    for attempt in found["attempt_details"]:
        attempts.setdefault(attempt["provider_id"], []).append(attempt)
    skipped = {pid: (reason, until) for pid, reason, until in trace.get("skipped", []) if pid}
    steps = []
    for position, provider_id in enumerate(trace.get("candidates", []), start=1):
        if provider_id in skipped:
            reason, until = skipped[provider_id]
            steps.append(
                {
                    "n": position,
                    "provider_id": provider_id,
                    "outcome": "skipped",
                    "reason": reason,
                    "until": until,
                    "attempts": [],
                }
            )
        elif provider_id in attempts:
            steps.append(
                {
                    "n": position,
                    "provider_id": provider_id,
                    "outcome": "tried",
                    "attempts": attempts.pop(provider_id),
                }
            )
        else:
            steps.append(
                {
                    "n": position,
                    "provider_id": provider_id,
                    "outcome": "not reached",
                    "attempts": [],
                }
            )
    for provider_id in trace.get("disabled", []):
        steps.append(
            {
                "n": None,
                "provider_id": provider_id,
                "outcome": "skipped",
                "reason": "disabled",
                "until": None,
                "attempts": [],
            }
        )
    for provider_id, rest in attempts.items():  # attempts with no trace (older rows)
        steps.append({"n": None, "provider_id": provider_id, "outcome": "tried", "attempts": rest})
    return steps


@page
async def request_page(request: Request) -> Response:
    found = await history.get_request(services(request).db, request.path_params["request_id"])
    trace = found.get("trace") or {}
    return render(
        request,
        "request.html",
        {
            "title": f"Request {found['id']}",
            "r": found,
            "steps": trace_steps(found),
            "key_refused": any(s[1] == "key_not_allowed" for s in trace.get("skipped", [])),
        },
    )


@page
async def settings_page(request: Request) -> Response:
    app = services(request)
    settings = app.settings
    rows = []
    for setting, name in file_settings():
        value = getattr(settings, name)
        if name == "redis_url" and value:
            value = public_url(value)
        if name in SECRET_SETTINGS:
            # Not even the last characters: these are the keys to everything else.
            if value:
                value = "(set, hidden)"
            elif name == "metrics_token":
                value = "(not set: only the admin token opens /metrics)"
            else:
                value = "(generated into a file beside the database)"
        rows.append(
            {
                "name": setting,
                "value": value,
                "source": settings.sources.get(name, "default"),
            }
        )
    rows.append(
        {
            "name": "allow_open_proxy (environment only)",
            "value": settings.allow_open_proxy,
            "source": settings.sources.get("allow_open_proxy", "default"),
        }
    )
    return render(
        request,
        "settings.html",
        {
            "title": "Settings",
            "rows": rows,
            "config_path": settings.config_path,
            "failed_sign_ins": request.app.state.ui.sessions.failed_sign_ins,
        },
    )
