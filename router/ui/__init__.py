"""The admin web UI, served at ``/ui`` by the same process (issue 14).

Server-rendered HTML (Jinja2 through Starlette's templates), a stylesheet and a little JavaScript,
all shipped in this package: nothing is fetched from elsewhere. Sign in with the admin token;
every action calls the same service functions as the management API.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from router.ui import forms, pages, signin
from router.ui.web import HERE, UI, SecurityHeaders

__all__ = ["UI", "mount"]


def mount() -> BaseRoute:
    """The ``/ui`` mount: every page, action and static file, behind the safety headers."""
    router = Router(
        routes=[
            Route("/", pages.overview, methods=["GET"]),
            Route("/sign-in", signin.sign_in_form, methods=["GET"]),
            Route("/sign-in", signin.sign_in, methods=["POST"]),
            Route("/sign-out", forms.sign_out, methods=["POST"]),
            Route("/providers", pages.providers_page, methods=["GET"]),
            Route("/providers", forms.create_provider, methods=["POST"]),
            Route("/providers/new", pages.new_provider, methods=["GET"]),
            Route("/providers/{provider_id}", pages.provider_page, methods=["GET"]),
            Route("/providers/{provider_id}", forms.update_provider, methods=["POST"]),
            Route("/providers/{provider_id}/{verb}", forms.provider_action, methods=["POST"]),
            Route("/models", pages.models_page, methods=["GET"]),
            Route("/models/link", forms.link_model, methods=["POST"]),
            Route("/models/unlink", forms.unlink_model, methods=["POST"]),
            Route("/models/default", forms.set_default_model, methods=["POST"]),
            Route("/keys", pages.keys_page, methods=["GET"]),
            Route("/keys", forms.create_key, methods=["POST"]),
            Route("/keys/{key_id}/revoke", forms.revoke_key, methods=["POST"]),
            Route("/requests", pages.requests_page, methods=["GET"]),
            Route("/requests/{request_id}", pages.request_page, methods=["GET"]),
            Route("/settings", pages.settings_page, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]
    )
    return Mount("/ui", app=SecurityHeaders(router))
