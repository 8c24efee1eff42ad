"""Who may call what: the admin token guards the management API; client keys guard the proxy.

The admin token comes as ``Authorization: Bearer`` or ``x-api-key``, like a client key.
``/v1/chat/completions`` and ``/v1/embeddings`` need a valid client key (or the admin token) once
any client key was ever created, or when ``auth.require_client_keys`` is true; until then they
accept any caller. A caller's key is never forwarded upstream. Client keys live in memory (a dict
keyed by their SHA-256), reloaded when ``config_version`` changes; ``last_used_at`` is written in
batches by :meth:`Authenticator.watch`, never per request.

The admin token comes from the settings (config file or ``PROVIDER_ROUTER_ADMIN_TOKEN``). When
neither sets it, one is generated on first start into ``admin-token`` beside the database, with
mode 0600, and the log says where it is (never what it is).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Iterable

import orjson

from router.errors import AuthenticationError
from router.gateway.snapshots import ConfigChanges
from router.secrets import create_file_once
from router.settings import Settings, SettingsError
from router.store import client_keys
from router.store.backend import database_for
from router.store.client_keys import ClientKey as ClientKey
from router.store.db import Database
from router.store.version import config_version, now_ms

log = logging.getLogger("provider_router.auth")
TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret


def resolve_admin_token(settings: Settings) -> str:
    """The admin token from the settings, or the one kept in the token file (made if missing)."""
    if settings.admin_token:
        return settings.admin_token
    path = settings.state_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            if path.stat().st_mode & 0o077:
                log.warning(
                    "The admin token file %s can be read by other users; restrict it with "
                    "`chmod 600 %s`.",
                    path,
                    path,
                )
            return token
        path.unlink()  # an empty file (a crash while writing it) holds no token to keep
    token = "pr-admin-" + secrets.token_urlsafe(32)
    found = create_file_once(path, token)
    if found == token:
        log.warning("No admin token was configured; generated one into %s (mode 0600).", path)
    return found


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header in raw ASGI headers, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def client_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The caller's token: ``Authorization: Bearer``, else ``x-api-key`` (Anthropic's SDKs and
    Claude Code send a key that way)."""
    token = bearer_token(headers)
    if token is not None:
        return token
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1").strip() or None
    return None


def presented_prefix(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """What a refused caller's key may be remembered by: the first characters of a key in our
    ``pr-`` form (as ``api_keys.prefix`` stores them), else only whether one was sent; never a
    part of some other secret pasted into the header."""
    token = client_token(headers)
    if token is None:
        return "(none)"
    if token.startswith(client_keys.KEY_PREFIX) and token.isascii():
        return token[: client_keys.PREFIX_CHARS]
    return "(other)"


_MISSING = (
    "This endpoint needs a client key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
)
_INVALID = "The API key is not valid."


class Authenticator:
    def __init__(self, admin_token: str, *, require_client_keys: bool = False) -> None:
        self._admin = admin_token.encode()
        self._require = require_client_keys
        self._any_keys = False
        self._keys: dict[str, ClientKey] = {}
        # The ids of the usable keys: a stream started with a key stops once it is not here.
        self.live_ids: frozenset[str] = frozenset()
        self._version: int | None = None
        self._used: dict[str, int] = {}

    @property
    def client_keys_required(self) -> bool:
        return self._require or self._any_keys

    async def reload(self, db: Database) -> None:
        """Load the key table from the database (at start, and after a key changed)."""
        version = await config_version(db)
        any_keys, rows = await client_keys.key_table(db)
        self._keys = {
            row["hash"]: ClientKey(
                id=row["id"],
                name=row["name"],
                rpm_limit=row["rpm_limit"],
                tpm_limit=row["tpm_limit"],
                models=frozenset(orjson.loads(row["models"])) if row["models"] else None,
                expires_at=row["expires_at"],
            )
            for row in rows
        }
        self.live_ids = frozenset(key.id for key in self._keys.values())
        self._any_keys = any_keys
        self._version = version

    def authenticate_client(self, headers: Iterable[tuple[bytes, bytes]]) -> ClientKey | None:
        """The caller's client key; None for the admin token or while keys are not required.

        Raises :class:`AuthenticationError` otherwise. Every path hashes the token, looks it up
        and compares it with the admin token, so the answer takes as long for an unknown key as
        for a revoked one or a valid one.
        """
        token = client_token(headers)
        digest = hashlib.sha256((token or "").encode()).hexdigest()
        found = self._keys.get(digest)
        admin = self.is_admin(token)
        if found is not None and found.expires_at is not None and found.expires_at <= now_ms():
            found = None
        if found is not None:
            self._used[found.id] = now_ms()
            return found
        if admin or not self.client_keys_required:
            return None
        raise AuthenticationError(_MISSING if token is None else _INVALID)

    async def flush_last_used(self, db: Database) -> None:
        used, self._used = self._used, {}
        try:
            await client_keys.record_last_used(db, used)
        except Exception:
            for key_id, stamp in used.items():
                self._used[key_id] = max(stamp, self._used.get(key_id, 0))
            raise

    async def watch(
        self, db: Database, interval_s: float, changes: ConfigChanges | None = None
    ) -> None:
        """Reload keys when another process changed them (checked every ``interval_s`` and on
        every config notification); write ``last_used_at`` in batches."""
        changes = changes or ConfigChanges()
        woken = changes.subscribe()
        while True:
            await changes.wait(woken, interval_s)
            try:
                if await config_version(db) != self._version:
                    await self.reload(db)
                await self.flush_last_used(db)
            except Exception:
                log.exception("Could not refresh the client keys; retrying")

    def derive_key(self, purpose: bytes) -> bytes:
        """A key derived from the admin token for ``purpose`` (the UI signs sessions with it),
        so that changing the admin token invalidates whatever was signed with the old one."""
        return hmac.new(self._admin, b"provider-router:" + purpose, hashlib.sha256).digest()

    def is_admin(self, token: str | None) -> bool:
        # Compare in constant time, and do the same work when the token is missing.
        given = (token or "").encode()
        return hmac.compare_digest(given, self._admin) and token is not None

    def require_admin(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Raise :class:`AuthenticationError` unless the caller sent the admin token, as a bearer
        token or as ``x-api-key`` (the same two ways a client key comes)."""
        token = client_token(headers)
        if not self.is_admin(token):
            raise AuthenticationError(
                "This endpoint needs the admin token: send 'Authorization: Bearer <admin token>' "
                "or 'x-api-key: <admin token>'."
                if token is None
                else "The admin token is not valid."
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def exposure_problem(settings: Settings, db: Database) -> str | None:
    """Why serving on ``settings.host`` would be unsafe, or None if it is not.

    Bound to a non-loopback address, anyone who can reach the port could use every provider
    key unless client keys are required (a key exists, or ``auth.require_client_keys``).
    """
    if is_loopback(settings.host) or settings.require_client_keys or settings.allow_open_proxy:
        return None
    any_keys, _ = await client_keys.key_table(db)
    if any_keys:
        return None
    return (
        f"Refusing to listen on {settings.host}: with no client key, anyone who can reach "
        "this address could spend every provider key stored here. Either create a client key "
        "(`provider-router keys create --name NAME`), set auth.require_client_keys = true "
        "(or PROVIDER_ROUTER_REQUIRE_CLIENT_KEYS=true) and use the admin token until you do, "
        "listen on 127.0.0.1, or, if a gateway in front already authenticates callers, set "
        "PROVIDER_ROUTER_ALLOW_OPEN_PROXY=true."
    )


async def check_exposure(settings: Settings) -> None:
    """Stop start-up (:class:`SettingsError`) if :func:`exposure_problem` finds a problem."""
    db = database_for(settings)
    await db.open()
    try:
        problem = await exposure_problem(settings, db)
    finally:
        await db.close()
    if problem is not None:
        raise SettingsError(problem)
