"""Who may call what: the admin token guards the management API.

Client keys are not issued yet, so ``/v1/chat/completions`` and ``/v1/embeddings`` accept any
caller (any key the SDK sends, the admin token included) and never forward it upstream.

The admin token comes from the settings (config file or ``PROVIDER_ROUTER_ADMIN_TOKEN``). When
neither sets it, one is generated on first start into ``admin-token`` beside the database, with
mode 0600, and the log says where it is (never what it is).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Iterable

from router.errors import AuthenticationError
from router.settings import Settings

log = logging.getLogger("provider_router.auth")
TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret


def resolve_admin_token(settings: Settings) -> str:
    """The admin token from the settings, or the one kept in the token file (made if missing)."""
    if settings.admin_token:
        return settings.admin_token
    path = settings.database_path.parent / TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "pr-admin-" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    log.warning("No admin token was configured; generated one into %s (mode 0600).", path)
    return token


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header in raw ASGI headers, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class Authenticator:
    def __init__(self, admin_token: str) -> None:
        self._admin = admin_token.encode()

    def is_admin(self, token: str | None) -> bool:
        # Compare in constant time, and do the same work when the token is missing.
        given = (token or "").encode()
        return hmac.compare_digest(given, self._admin) and token is not None

    def require_admin(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        token = bearer_token(headers)
        if not self.is_admin(token):
            raise AuthenticationError(
                "This endpoint needs the admin token: send 'Authorization: Bearer <admin token>'."
                if token is None
                else "The admin token is not valid."
            )
