"""Every error provider-router raises on purpose, and how each reaches a client.

Each class carries the HTTP status and the OpenAI error ``type``/``code`` it is answered with;
one handler renders them all as ``{"error": {"message", "type", "param", "code"}}``.

    RouterError                      500 server_error
    ├── InvalidRequest               400 invalid_request_error
    │   └── InvalidJSON              400 invalid_request_error / invalid_json
    ├── AuthenticationError          401 authentication_error / invalid_api_key
    ├── PermissionDenied             403 permission_error
    ├── NotFound                     404 invalid_request_error / not_found
    │   └── ModelNotFound            404 invalid_request_error / model_not_found
    ├── Conflict                     409 invalid_request_error / conflict
    ├── PayloadTooLarge              413 invalid_request_error / request_too_large
    ├── RateLimited                  429 rate_limit_error / rate_limit_exceeded (+ Retry-After)
    ├── HeadersTooLarge              431 invalid_request_error / headers_too_large
    ├── NoProviderAvailable          503 service_unavailable / no_provider_available
    │   └── ProvidersCoolingDown     503 service_unavailable / providers_cooling_down
    ├── DatabaseUnavailable          503 service_unavailable / database_unavailable
    │   └── DatabaseFull             507 server_error / insufficient_storage
    ├── AllProvidersFailed           502 upstream_error / all_providers_failed
    └── StreamInterrupted            502 upstream_error / stream_interrupted (sent as an SSE event)

    UpstreamError                    one failed attempt at one provider (never shown as is)
    ├── UpstreamConnectError         could not connect              retryable
    ├── UpstreamTimeout              no answer in time              retryable
    ├── UpstreamStatusError          answered with an HTTP error    retryable on 408, 429, 5xx
    ├── UpstreamProtocolError        broken or incomplete answer    retryable
    │   └── AdapterFailure           our adapter raised             retryable, not counted
    └── UpstreamUnsupported          the type cannot do this        retryable (next candidate)

Upstream errors are raised by adapters (translated from httpx at the edge) and handled by the
attempt loop in :mod:`router.gateway.handler`; they become :class:`AllProvidersFailed` or are passed
through to the client when the upstream's answer is the client's own fault (a 4xx).

Every message passes through :func:`router.redact.scrub` when the error is made, so no
credential reaches a client, a log line or a history row through an error.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from router.redact import scrub, scrub_bytes


class RouterError(Exception):
    """Base class: an error with an HTTP status and an OpenAI error type and code."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        message = scrub(message)
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidRequest(RouterError):
    status_code = 400
    error_type = "invalid_request_error"


class InvalidJSON(InvalidRequest):
    default_code = "invalid_json"


class AuthenticationError(RouterError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(RouterError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFound(RouterError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class Conflict(RouterError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLarge(RouterError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(RouterError):
    """Every candidate (or the client) is at a rate limit; ``retry_after`` in seconds."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, param: str | None = None):
        super().__init__(message, param=param)
        self.retry_after = retry_after


class HeadersTooLarge(RouterError):
    status_code = 431
    error_type = "invalid_request_error"
    default_code = "headers_too_large"


class NoProviderAvailable(RouterError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "no_provider_available"


class ProvidersCoolingDown(NoProviderAvailable):
    """Every candidate's circuit is open; ``retry_after`` (s) is when the first one reopens."""

    default_code = "providers_cooling_down"

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailable(RouterError):
    """A management write the database could not take (locked, read-only, I/O error); nothing
    was changed. Built by :func:`database_write_error`."""

    status_code = 503
    error_type = "service_unavailable"
    default_code = "database_unavailable"


class DatabaseFull(DatabaseUnavailable):
    status_code = 507
    error_type = "server_error"
    default_code = "insufficient_storage"


def database_write_error(exc: Exception) -> DatabaseUnavailable:
    """The client's answer to a write SQLite refused for a reason outside the request: a
    sentence that names the cause and says nothing was changed."""
    text = str(exc).lower()
    if "full" in text:
        return DatabaseFull(
            "The database could not be written because its disk is full; nothing was changed."
            " Free space on the database's disk (or lower history.retention_days) and retry."
        )
    if "readonly" in text or "read-only" in text:
        cause = "its file is read-only"
    elif "locked" in text or "busy" in text:
        cause = "another process holds its lock"
    else:
        cause = f"SQLite reported: {exc}"
    return DatabaseUnavailable(
        f"The database could not be written because {cause}; nothing was changed. Retry later."
    )


class AllProvidersFailed(RouterError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "all_providers_failed"


class StreamInterrupted(RouterError):
    """A stream that broke off after its first byte; ``upstream`` is the failure that ended it
    (so a door can answer in its own terms, e.g. Anthropic's ``overloaded_error``)."""

    status_code = 502
    error_type = "upstream_error"
    default_code = "stream_interrupted"

    def __init__(self, message: str, *, upstream: UpstreamError | None = None) -> None:
        super().__init__(message)
        self.upstream = upstream


class UpstreamError(Exception):
    """One failed attempt at one provider. ``retryable`` tells the router to try the next one."""

    retryable: bool = True
    status_code: int | None = None

    def __init__(self, message: str) -> None:
        message = scrub(message)
        super().__init__(message)
        self.message = message


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamError):
    pass


class AdapterFailure(UpstreamProtocolError):
    """Our adapter raised (a bug, perhaps set off by the client's input): the next candidate is
    tried, but the provider's circuit is not blamed, so no client can open it this way."""


class UpstreamUnsupported(UpstreamError):
    """The provider's type cannot do what was asked (embeddings on Anthropic, say): try another."""


RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an HTTP error; ``body`` is its answer, kept to pass on."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: bytes,
        content_type: str = "application/json",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = scrub_bytes(body)
        self.content_type = content_type
        self.retry_after = retry_after
        self.retryable = status_code in RETRYABLE_STATUS
