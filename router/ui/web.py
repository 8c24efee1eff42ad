"""What every UI page and form shares: the session guard, CSRF, forms, rendering, safety headers.

Pages are ``GET`` handlers wrapped in :func:`page` (no session: a redirect to the sign-in page);
actions are ``POST`` handlers wrapped in :func:`action`, which also checks the form's CSRF token.
Every response under ``/ui`` carries a strict Content-Security-Policy (no inline script, nothing
from another origin), ``X-Frame-Options: DENY`` and ``Cache-Control: no-store``
(:class:`SecurityHeaders`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.errors import PayloadTooLarge, RouterError
from router.ui.formatting import FILTERS
from router.ui.session import COOKIE, Session, Sessions

HERE = Path(__file__).parent
MAX_FORM_BYTES = 1024 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: under it browsers send "Origin: null" with the UI's own form posts, which
    # the gateway refuses (router/gateway/origins.py). same-origin still tells no other site.
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds the UI's safety headers to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in _HEADERS}
                kept = [(n, v) for n, v in message.get("headers", []) if n not in names]
                message["headers"] = kept + _HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass
class UI:
    """The UI's per-application parts, kept in ``app.state.ui`` (built in the lifespan)."""

    sessions: Sessions
    templates: Jinja2Templates

    @classmethod
    def build(cls, sessions: Sessions) -> UI:
        env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters.update(FILTERS)
        return cls(sessions, Jinja2Templates(env=env))


def ui_of(request: Request) -> UI:
    found: UI = request.app.state.ui
    return found


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def current_session(request: Request) -> Session | None:
    return ui_of(request).sessions.verify(request.cookies.get(COOKIE))


def render(
    request: Request, template: str, context: Mapping[str, Any], status_code: int = 200
) -> HTMLResponse:
    """Render ``template`` with what every page needs (the session's CSRF token, the nav)."""
    session: Session | None = request.scope.get("ui_session")
    base = {
        "csrf": ui_of(request).sessions.csrf_token(session) if session else "",
        "signed_in": session is not None,
        "path": request.url.path,
    }
    return ui_of(request).templates.TemplateResponse(
        request, template, {**base, **context}, status_code=status_code
    )


def redirect(path: str, **query: str) -> RedirectResponse:
    """A 303 to another UI page (always a path of ours, never one taken from the request)."""
    if query:
        path += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return RedirectResponse(path, status_code=303)


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind our forms send)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"The form is over the limit of {MAX_FORM_BYTES} bytes.")
        chunks.append(chunk)
    pairs = parse_qsl(b"".join(chunks).decode("utf-8", "replace"), keep_blank_values=True)
    return dict(pairs)


Handler = Callable[[Request], Awaitable[Response]]
FormHandler = Callable[[Request, dict[str, str]], Awaitable[Response]]


def _signed_in(request: Request) -> Session | None:
    """The request's valid session, kept in its scope for rendering; None without one."""
    session = current_session(request)
    if session is not None:
        request.scope["ui_session"] = session
    return session


def page(handler: Handler) -> Handler:
    """A page behind the sign-in: no valid session sends the browser to the sign-in page."""

    @wraps(handler)
    async def guarded(request: Request) -> Response:
        if _signed_in(request) is None:
            return redirect("/ui/sign-in")
        try:
            return await handler(request)
        except RouterError as exc:  # an unknown id in the address, say: a page, not JSON
            context = {"title": "Not shown", "message": exc.message}
            return render(request, "message.html", context, status_code=exc.status_code)

    return guarded


def action(handler: FormHandler) -> Handler:
    """A form post behind the sign-in and the CSRF check."""

    @wraps(handler)
    async def guarded(request: Request) -> Response:
        session = _signed_in(request)
        if session is None:
            return redirect("/ui/sign-in")
        form = await read_form(request)
        if not ui_of(request).sessions.check_csrf(session, form.get("csrf")):
            return render(
                request,
                "message.html",
                {
                    "title": "Form refused",
                    "message": "The form's CSRF token is missing or wrong, so nothing was "
                    "changed. Reload the page and try again.",
                },
                status_code=403,
            )
        return await handler(request, form)

    return guarded
