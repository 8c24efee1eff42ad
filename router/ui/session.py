"""UI sessions: a signed, expiring cookie; CSRF tokens bound to it; slowed-down failed sign-ins.

The cookie holds ``<expiry ms>.<session id>.<signature>``, signed with HMAC-SHA256 under a key
derived from the admin token (:meth:`Authenticator.derive_key`): when the admin token changes,
every existing session stops verifying and is refused. The standard library's ``hmac`` is enough
for this, so no signing library is added. A form's CSRF token is an HMAC of the session id under
the same key; the sign-in form, which has no session yet, uses a random double-submit cookie.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field

from router.gateway.auth import Authenticator

log = logging.getLogger("provider_router.ui")

COOKIE = "pr_ui_session"
SIGN_IN_COOKIE = "pr_ui_sign_in"
MAX_SIGN_IN_DELAY_S = 10.0
_FAILURE_WINDOW_S = 15 * 60.0
_MAX_TRACKED = 10_000  # addresses whose recent failures are remembered


@dataclass(frozen=True)
class Session:
    """A verified session: its id (for CSRF and sign-out) and when it ends (Unix ms)."""

    id: str
    expires_at: int


@dataclass
class Sessions:
    """Signs and checks session cookies and CSRF tokens; counts failed sign-ins.

    One per application (built in the lifespan, reached through the app state).
    """

    auth: Authenticator
    ttl_ms: int
    sign_in_delay_s: float
    failed_sign_ins: int = 0
    _ended: set[str] = field(default_factory=set)
    _failures: dict[str, list[float]] = field(default_factory=dict)

    def _key(self) -> bytes:
        return self.auth.derive_key(b"ui-session")

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key(), payload.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> tuple[str, Session]:
        """A new session and its cookie value."""
        session = Session(secrets.token_hex(16), int(time.time() * 1000) + self.ttl_ms)
        payload = f"{session.expires_at}.{session.id}"
        return f"{payload}.{self._sign(payload)}", session

    def verify(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None: forged, expired, signed out, or signed under
        an admin token that has changed since."""
        if not cookie or cookie.count(".") != 2:
            return None
        expires, session_id, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(f"{expires}.{session_id}")):
            return None
        if not expires.isdigit() or int(expires) <= time.time() * 1000:
            return None
        if session_id in self._ended:
            return None
        return Session(session_id, int(expires))

    def end(self, session: Session) -> None:
        """Sign out: this session id is refused from now on, even if its cookie is replayed."""
        if len(self._ended) >= _MAX_TRACKED:
            self._ended.clear()  # the cookies of old sessions expire anyway
        self._ended.add(session.id)

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf.{session.id}")

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf_token(session))

    async def failed_sign_in(self, client: str) -> None:
        """Count a failed sign-in and wait: the delay times the address's recent failures."""
        self.failed_sign_ins += 1
        now = time.monotonic()
        if len(self._failures) >= _MAX_TRACKED and client not in self._failures:
            self._failures.clear()
        recent = [t for t in self._failures.get(client, []) if now - t < _FAILURE_WINDOW_S]
        recent.append(now)
        self._failures[client] = recent
        log.warning(
            "Failed UI sign-in from %s (%d from there in 15 minutes, %d in all)",
            client,
            len(recent),
            self.failed_sign_ins,
        )
        await asyncio.sleep(min(self.sign_in_delay_s * len(recent), MAX_SIGN_IN_DELAY_S))

    def signed_in(self, client: str) -> None:
        self._failures.pop(client, None)
