"""The UI's actions (``POST``): each turns a form into the body the management API takes and calls
the same service function, so validation and error messages are the API's own.

A form only converts text to the types the API expects (a number typed as digits becomes an
integer); a value it cannot convert is passed on as text, for the service to refuse with its
usual sentence. A failed action re-renders the page with that sentence and changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from router.api import actions
from router.api.common import services
from router.api.providers import probe_provider
from router.errors import RouterError
from router.store import client_keys, lifecycle, links, ui_metadata
from router.store import providers as provider_store
from router.ui import pages
from router.ui.session import COOKIE
from router.ui.web import action, redirect, render, secure, ui_of


def _number(text: str) -> Any:
    stripped = text.strip()
    if stripped.lstrip("-").isdigit() and stripped.isascii():
        return int(stripped)
    try:
        return float(stripped)
    except ValueError:
        return stripped


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text  # the service says what shape it wanted


def _config(form: dict[str, str], type_name: str, *, creating: bool) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for field in pages.config_fields(type_name):
        key, text = field["key"], form.get(f"config.{field['key']}", "")
        if not text.strip():
            if not creating and not field["sensitive"]:
                config[key] = None  # emptied: remove the key; an empty secret stays as it is
            continue
        if field["kind"] == "int":
            config[key] = _number(text)
        elif field["kind"] == "bool":
            config[key] = {"true": True, "false": False}.get(text, text)
        elif field["kind"] == "object":
            config[key] = _json(text)
        else:
            config[key] = text
    return config


def _provider_body(form: dict[str, str], type_name: str, *, creating: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"name": form.get("name", "")}
    if creating:
        body["type"] = type_name
        body["enabled"] = form.get("enabled") == "on"
        if form.get("id", "").strip():
            body["id"] = form["id"].strip()
    for key in ("priority", "weight"):
        if form.get(key, "").strip():
            body[key] = _number(form[key])
    body["description"] = form.get("description") or None
    limits = {
        name: _number(form[f"limit.{name}"])
        for name in ("rpm", "rpd", "tpm")
        if form.get(f"limit.{name}", "").strip()
    }
    body["limits"] = limits or None
    body["config"] = _config(form, type_name, creating=creating)
    return body


def _metadata_body(form: dict[str, str]) -> dict[str, Any]:
    text = form.get("preferences", "").strip()
    return {
        "display_name": form.get("display_name", "").strip() or None,
        "preferences": _json(text) if text else {},
    }


@action
async def create_provider(request: Request, form: dict[str, str]) -> Response:
    app = services(request)
    type_name = form.get("type", "")
    try:
        body = _provider_body(form, type_name, creating=True)
        metadata = _metadata_body(form)
        provider = await provider_store.create_provider(app.db, body)
        await app.snapshots.rebuild()
    except RouterError as exc:
        context = {
            "title": "Add a provider",
            "types": pages.sorted_types(),
            "type_name": type_name,
            "fields": pages.config_fields(type_name) if type_name in pages.sorted_types() else [],
            "provider": None,
            "form": form,
            "error": exc.message,
        }
        return render(request, "provider_form.html", context, status_code=exc.status_code)
    try:
        await ui_metadata.set_metadata(app.db, provider["id"], metadata)
    except RouterError as exc:
        return await _provider_error(request, provider["id"], exc)
    return redirect(f"/ui/providers/{provider['id']}", done="created")


async def _provider_error(request: Request, provider_id: str, exc: RouterError) -> Response:
    context = await pages.provider_context(request, provider_id)
    return render(
        request, "provider.html", {**context, "error": exc.message}, status_code=exc.status_code
    )


@action
async def update_provider(request: Request, form: dict[str, str]) -> Response:
    app = services(request)
    provider_id = request.path_params["provider_id"]
    try:
        current = await provider_store.get_provider(app.db, provider_id)
        body = _provider_body(form, current["type"], creating=False)
        metadata = _metadata_body(form)
        await provider_store.update_provider(app.db, provider_id, body)
        await app.snapshots.rebuild()
        await ui_metadata.set_metadata(app.db, provider_id, metadata)
    except RouterError as exc:
        return await _provider_error(request, provider_id, exc)
    return redirect(f"/ui/providers/{provider_id}", done="saved")


@action
async def provider_action(request: Request, form: dict[str, str]) -> Response:
    """Enable, Disable, Test, Reset circuit, Archive, Restore: one button each."""
    app = services(request)
    provider_id, verb = request.path_params["provider_id"], request.path_params["verb"]
    try:
        if verb == "test":
            result = await probe_provider(app, provider_id)
            context = await pages.provider_context(request, provider_id)
            return render(request, "provider.html", {**context, "test": result})
        if verb in ("enable", "disable"):
            await lifecycle.set_enabled(app.db, provider_id, verb == "enable")
            done = f"{verb}d"
        elif verb == "reset":
            await actions.reset_circuit(app, provider_id)
            done = "reset"
        elif verb == "archive":
            result = await actions.delete_or_archive_provider(app, provider_id)
            if result["deleted"]:
                return redirect("/ui/providers", done="deleted")
            done = "archived"
        elif verb == "restore":
            await lifecycle.restore_provider(app.db, provider_id)
            done = "restored"
        else:
            return render(
                request, "message.html",
                {"title": "Unknown action", "message": f"There is no action {verb!r}."},
                status_code=404,
            )  # fmt: skip
        await app.snapshots.rebuild()
    except RouterError as exc:
        return await _provider_error(request, provider_id, exc)
    back = "/ui/providers" if form.get("back") == "list" else f"/ui/providers/{provider_id}"
    return redirect(back, done=done)


@action
async def link_model(request: Request, form: dict[str, str]) -> Response:
    app = services(request)
    provider_id = form.get("provider_id", "")
    body: dict[str, Any] = {"model_id": form.get("model_id", "").strip()}
    if form.get("is_default") == "on":
        body["is_default"] = True
    if form.get("upstream_model", "").strip():
        body["upstream_model"] = form["upstream_model"].strip()
    for key in ("input_cost_per_1k", "output_cost_per_1k"):
        if form.get(key, "").strip():
            body[key] = _number(form[key])
    if form.get("currency", "").strip():
        body["currency"] = form["currency"].strip()
    try:
        await links.link_model(app.db, provider_id, body)
        await app.snapshots.rebuild()
    except RouterError as exc:
        return await _models_error(request, exc)
    return redirect("/ui/models", done="linked")


async def _models_error(request: Request, exc: RouterError) -> Response:
    context = {**await pages.models_context(request), "error": exc.message}
    return render(request, "models.html", context, status_code=exc.status_code)


async def _link_change(
    request: Request, form: dict[str, str], change: Callable[..., Awaitable[Any]], done: str
) -> Response:
    app = services(request)
    try:
        await change(app.db, form.get("provider_id", ""), form.get("model_id", ""))
        await app.snapshots.rebuild()
    except RouterError as exc:
        return await _models_error(request, exc)
    return redirect("/ui/models", done=done)


@action
async def unlink_model(request: Request, form: dict[str, str]) -> Response:
    return await _link_change(request, form, links.unlink_model, "unlinked")


@action
async def set_default_model(request: Request, form: dict[str, str]) -> Response:
    return await _link_change(request, form, links.set_default, "default")


@action
async def create_key(request: Request, form: dict[str, str]) -> Response:
    app = services(request)
    body: dict[str, Any] = {"name": form.get("name", "").strip()}
    for key in ("rpm_limit", "tpm_limit"):
        if form.get(key, "").strip():
            body[key] = _number(form[key])
    models = [m.strip() for m in form.get("models", "").split(",") if m.strip()]
    if models:
        body["models"] = models
    created, error, status = None, None, 200
    try:
        created = await actions.create_client_key(app, body)
    except RouterError as exc:
        error, status = exc.message, exc.status_code
    keys = await client_keys.all_keys(app.db)
    return render(
        request,
        "keys.html",
        {
            "title": "Client keys",
            "keys": keys,
            "created": created,
            "error": error,
            "form": form,
        },
        status_code=status,
    )


@action
async def revoke_key(request: Request, form: dict[str, str]) -> Response:
    app = services(request)
    try:
        await actions.revoke_client_key(app, request.path_params["key_id"])
    except RouterError as exc:
        keys = await client_keys.all_keys(app.db)
        return render(
            request, "keys.html",
            {"title": "Client keys", "keys": keys, "created": None, "error": exc.message},
            status_code=exc.status_code,
        )  # fmt: skip
    return redirect("/ui/keys", done="revoked")


@action
async def sign_out(request: Request, form: dict[str, str]) -> Response:
    ui_of(request).sessions.end(request.scope["ui_session"])
    response = redirect("/ui/sign-in")
    response.delete_cookie(COOKIE, path="/ui", secure=secure(request), httponly=True,
                           samesite="strict")  # fmt: skip
    return response
