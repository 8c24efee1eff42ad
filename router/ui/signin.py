"""Signing in with the admin token, and the sign-in page."""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from router.api.common import services
from router.ui.session import COOKIE, SIGN_IN_COOKIE
from router.ui.web import read_form, redirect, render, secure, ui_of


def _sign_in_page(request: Request, error: str | None, status_code: int = 200) -> Response:
    nonce = secrets.token_hex(16)
    response = render(
        request, "sign_in.html", {"title": "Sign in", "nonce": nonce, "error": error},
        status_code=status_code,
    )  # fmt: skip
    response.set_cookie(SIGN_IN_COOKIE, nonce, max_age=3600, path="/ui/sign-in",
                        secure=secure(request), httponly=True, samesite="strict")  # fmt: skip
    return response


async def sign_in_form(request: Request) -> Response:
    if ui_of(request).sessions.verify(request.cookies.get(COOKIE)) is not None:
        return redirect("/ui/")
    return _sign_in_page(request, None)


async def sign_in(request: Request) -> Response:
    """Check the admin token; a failure is counted, logged and slowed down."""
    sessions = ui_of(request).sessions
    form = await read_form(request)
    cookie = request.cookies.get(SIGN_IN_COOKIE, "")
    given = form.get("csrf", "")
    if not cookie or not hmac.compare_digest(cookie, given):
        return _sign_in_page(
            request, "The form expired or was not sent from this page; try again.", 403
        )
    client = request.client.host if request.client else "unknown"
    if not services(request).auth.is_admin(form.get("token") or None):
        await sessions.failed_sign_in(client)
        return _sign_in_page(request, "That is not the admin token.", 401)
    sessions.signed_in(client)
    value, _ = sessions.issue()
    response = redirect("/ui/")
    response.set_cookie(
        COOKIE, value, max_age=sessions.ttl_ms // 1000, path="/ui", secure=secure(request),
        httponly=True, samesite="strict",
    )  # fmt: skip
    response.delete_cookie(SIGN_IN_COOKIE, path="/ui/sign-in")
    return response
