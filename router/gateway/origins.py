"""What a web page may make a browser do to the gateway: nothing, unless the operator says so.

A page on any site can make its visitor's browser send a "simple" request (a form post, or a
``fetch`` with a ``text/plain`` body) to ``http://127.0.0.1:8080`` without asking first; with DNS
rebinding (a name of the attacker's that resolves to 127.0.0.1) it can read the answer too. An
open gateway (no client key yet) would run and bill such a request. :class:`WebGuard` refuses,
before any endpoint runs:

- a request whose ``Origin`` is neither the gateway's own (the admin UI's forms) nor listed in
  ``server.cors_origins`` (403 ``origin_not_allowed``); listed origins get CORS headers and
  answered preflights;
- while the gateway is open, a ``Host`` that is not a loopback name (``localhost``,
  ``*.localhost``, 127.0.0.0/8, ``[::1]``) or listed in ``server.allowed_hosts`` (403
  ``host_not_allowed``): what DNS rebinding needs;
- a body sent to a JSON endpoint (everything but the UI's forms) without a JSON content type
  (415 ``unsupported_media_type``): no simple request can carry one.

Programs (SDKs, curl) send no ``Origin`` and a JSON content type, and reach the gateway by the
name it is served under, so none of this touches them.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from router.errors import HostNotAllowed, OriginNotAllowed, UnsupportedMediaType
from router.gateway.auth import Authenticator, is_loopback
from router.settings import Settings

Scope = MutableMapping[str, Any]
Headers = list[tuple[bytes, bytes]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_EXPOSED = b"x-request-id, x-provider-router-provider, retry-after"
_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
_MAX_CACHED = 64


def host_name(host: bytes) -> str:
    """The name in a ``Host`` header, without its port, lower-cased (``[::1]:80`` -> ``::1``)."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    name, colon, port = text.rpartition(":")
    return name if colon and port.isdigit() else text


def is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class WebGuard:
    """The Host, Origin and content-type rules of one running gateway (from its settings)."""

    def __init__(self, settings: Settings, auth: Authenticator) -> None:
        self.auth = auth
        self.allowed_hosts = frozenset(host.lower() for host in settings.allowed_hosts)
        self.any_host = "*" in self.allowed_hosts
        self.cors_origins = frozenset(o.rstrip("/").encode() for o in settings.cors_origins)
        self.any_origin = b"*" in self.cors_origins
        self._hosts: dict[bytes, bool] = {}
        self._types: dict[bytes, bool] = {}

    def host_allowed(self, host: bytes) -> bool:
        known = self._hosts.get(host)
        if known is None:
            name = host_name(host)
            known = is_loopback(name) or name.endswith(".localhost") or name in self.allowed_hosts
            if len(self._hosts) < _MAX_CACHED:  # a client can send any name
                self._hosts[host] = known
        return known

    def admit(self, scope: Scope) -> bytes | None:
        """Check one HTTP request; raise a :class:`RouterError` to refuse it.

        Returns the ``Origin`` of an allowed cross-origin request (its answer needs CORS
        headers), else None.
        """
        # One dict built in C beats a Python loop over the headers (a browser sends each of
        # these once; a duplicate from a program is its own business).
        headers = dict(scope["headers"])
        host = headers.get(b"host")
        if (
            host is not None
            and not self.any_host
            and not (self._hosts.get(host) or self.host_allowed(host))
            and not self.auth.client_keys_required
        ):
            raise HostNotAllowed(
                f"Host {host_name(host)!r} is not allowed: while no client key exists the "
                "gateway answers only to loopback names (localhost, 127.0.0.1, [::1]). List "
                "the names it is served under in server.allowed_hosts, or create a client key."
            )
        cross = None
        origin = headers.get(b"origin")
        if origin is not None and (host is None or origin.partition(b"://")[2] != host):
            if not (self.any_origin or origin in self.cors_origins):
                raise OriginNotAllowed(
                    f"Requests from the web origin {origin.decode('latin-1')!r} are not "
                    "allowed; list it in server.cors_origins to let its pages call the gateway."
                )
            cross = origin
        if scope["method"] in _BODY_METHODS:
            content_type = headers.get(b"content-type")
            json = content_type is not None and self.is_json(content_type)
            if (
                not json
                and (
                    headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
                )
                and not scope["path"].startswith("/ui")
            ):
                got = "none" if content_type is None else repr(content_type.decode("latin-1"))
                raise UnsupportedMediaType(
                    "The request body must be JSON, sent with 'Content-Type: application/json' "
                    f"(got {got})."
                )
        return cross

    def is_json(self, content_type: bytes) -> bool:
        known = self._types.get(content_type)
        if known is None:
            known = is_json(content_type)
            if len(self._types) < _MAX_CACHED:
                self._types[content_type] = known
        return known

    @staticmethod
    def is_preflight(scope: Scope) -> bool:
        return scope["method"] == "OPTIONS" and any(
            name == b"access-control-request-method" for name, _ in scope["headers"]
        )

    @staticmethod
    def preflight_headers(origin: bytes, request_headers: Iterable[tuple[bytes, bytes]]) -> Headers:
        """The answer to an allowed origin's preflight: any method the API has, the headers it
        asked for (it is trusted), cached for ten minutes."""
        asked = b", ".join(v for n, v in request_headers if n == b"access-control-request-headers")
        headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", _METHODS),
            (b"access-control-max-age", b"600"),
            (b"vary", b"origin, access-control-request-method, access-control-request-headers"),
        ]
        if asked:
            headers.append((b"access-control-allow-headers", asked))
        return headers

    @staticmethod
    def cors_headers(origin: bytes) -> Headers:
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", _EXPOSED),
            (b"vary", b"origin"),
        ]
