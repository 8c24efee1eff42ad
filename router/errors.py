"""Every error provider-router raises on purpose, and how each reaches a client.

Each class carries the HTTP status and the OpenAI error ``type``/``code`` it is answered with;
one handler renders them all as ``{"error": {"message", "type", "param", "code"}}``.

    RouterError                      500 server_error
    ├── InvalidRequest               400 invalid_request_error
    │   └── InvalidJSON              400 invalid_request_error / invalid_json
    ├── AuthenticationError          401 authentication_error / invalid_api_key
    │   └── KeyRevoked               401 authentication_error / key_revoked (ends a stream)
    ├── PermissionDenied             403 permission_error
    │   ├── OriginNotAllowed         403 permission_error / origin_not_allowed
    │   └── HostNotAllowed           403 permission_error / host_not_allowed
    ├── NotFound                     404 invalid_request_error / not_found
    │   └── ModelNotFound            404 invalid_request_error / model_not_found
    ├── Conflict                     409 invalid_request_error / conflict
    ├── PayloadTooLarge              413 invalid_request_error / request_too_large
    ├── RateLimited                  429 rate_limit_error / rate_limit_exceeded (+ Retry-After)
    │   └── ClientRateLimited        the client key over its own rpm/tpm (counted apart)
    ├── UnsupportedMediaType         415 invalid_request_error / unsupported_media_type
    ├── HeadersTooLarge              431 invalid_request_error / headers_too_large
    ├── NoProviderAvailable          503 service_unavailable / no_provider_available
    │   └── ProvidersCoolingDown     503 service_unavailable / providers_cooling_down
    ├── DatabaseUnavailable          503 service_unavailable / database_unavailable
    │   └── DatabaseFull             507 server_error / insufficient_storage
    ├── GatewayOverloaded            503 service_unavailable / gateway_overloaded (+ Retry-After)
    ├── AllProvidersFailed           502 upstream_error / all_providers_failed
    └── StreamInterrupted            502 upstream_error / stream_interrupted (sent as an SSE event)

    UpstreamError                    one failed attempt at one provider (never shown as is)
    ├── UpstreamConnectError         could not connect              retryable
    ├── UpstreamTimeout              no answer in time              retryable
    ├── UpstreamStatusError          answered with an HTTP error    retryable on 408, 429, 5xx,
    │                                                               and 401/403/404 (the provider's
    │                                                               fault: credential, model)
    ├── UpstreamProtocolError        broken or incomplete answer    retryable
    │   ├── UpstreamResponseTooLarge an answer over a size limit    retryable
    │   └── AdapterFailure           our adapter raised             retryable, not counted
    ├── LocalLimitReached            the proxy's own limit          retryable, not counted
    └── UpstreamUnsupported          the type cannot do this        retryable (next candidate)

Upstream errors are raised by adapters (translated from httpx at the edge) and handled by the
attempt loop in :mod:`router.gateway.handler`; they become :class:`AllProvidersFailed` or are passed
through to the client when the upstream's answer is the client's own fault (a 4xx other than
401, 403 and 404, which say the provider's credential or model is wrong).

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
    # Sent as ``x-should-retry`` when not None: OpenAI's SDKs obey it over their own rules, so
    # False spares a client retries that cannot help.
    should_retry: bool | None = None

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


class KeyRevoked(AuthenticationError):
    """The caller's client key was revoked (or disabled) while its stream was running."""

    default_code = "key_revoked"


class PermissionDenied(RouterError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class OriginNotAllowed(PermissionDenied):
    default_code = "origin_not_allowed"


class HostNotAllowed(PermissionDenied):
    default_code = "host_not_allowed"


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


class ClientRateLimited(RateLimited):
    """The client key is over its own ``rpm_limit`` or ``tpm_limit`` (the same answer as
    :class:`RateLimited`; the metrics count it under ``scope="client_key"``)."""


class UnsupportedMediaType(RouterError):
    status_code = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"


class HeadersTooLarge(RouterError):
    status_code = 431
    error_type = "invalid_request_error"
    default_code = "headers_too_large"


class NoProviderAvailable(RouterError):
    """No enabled provider serves the model: only an operator can change that, so no retry."""

    status_code = 503
    error_type = "service_unavailable"
    default_code = "no_provider_available"
    should_retry: bool | None = False


class ProvidersCoolingDown(NoProviderAvailable):
    """Every candidate's circuit is open; ``retry_after`` (s) is when the first one reopens."""

    default_code = "providers_cooling_down"
    should_retry: bool | None = None  # a cooldown ends: Retry-After says when

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
    """The client's answer to a write the database refused for a reason outside the request: a
    sentence that names the cause and says nothing was changed."""
    text = str(exc).lower()
    if "full" in text or "no space left" in text:
        return DatabaseFull(
            "The database could not be written because its disk is full; nothing was changed."
            " Free space on the database's disk (or lower history.retention_days) and retry."
        )
    if "readonly" in text or "read-only" in text:
        cause = "its file is read-only"
    elif "locked" in text or "busy" in text:
        cause = "another process holds its lock"
    else:
        cause = f"the database reported: {exc}"
    return DatabaseUnavailable(
        f"The database could not be written because {cause}; nothing was changed. Retry later."
    )


class GatewayOverloaded(RouterError):
    """The proxy itself is at a limit (its upstream connections, its open files): not any
    provider's failure. ``retry_after`` in seconds."""

    status_code = 503
    error_type = "service_unavailable"
    default_code = "gateway_overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


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

    def __init__(
        self, message: str, *, upstream: UpstreamError | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.upstream = upstream


class UpstreamError(Exception):
    """One failed attempt at one provider. ``retryable`` tells the router to try the next one."""

    retryable: bool = True
    status_code: int | None = None
    # The OpenAI error code a client sees when this failure ends its request (None: the
    # generic one of the RouterError that reports it).
    code: str | None = None

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


class UpstreamResponseTooLarge(UpstreamProtocolError):
    """The answer passed one of the response limits (headers, body, one stream event)."""

    code = "upstream_response_too_large"


class LocalLimitReached(UpstreamError):
    """The proxy could not make the attempt because of one of its own limits (every upstream
    connection of the pool busy, no file descriptor left). Another provider may still be
    tried, but the provider's circuit is not blamed: it never saw the request. ``limit``
    names the limit, for the log."""

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class AdapterFailure(UpstreamProtocolError):
    """Our adapter raised (a bug, perhaps set off by the client's input): the next candidate is
    tried, but the provider's circuit is not blamed, so no client can open it this way."""


class UpstreamUnsupported(UpstreamError):
    """The provider's type cannot do what was asked (embeddings on Anthropic, say): try another."""


RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
# Answers that say the provider is misconfigured, not that the client erred: the client's key
# never goes upstream, and the model was the router's choice. They fall back and count against
# the provider, under these names.
PROVIDER_FAULTS = {
    401: ("credential rejected", "check the provider's apiKey"),
    403: ("credential rejected", "check the provider's apiKey and its permissions"),
    404: ("model not found", "check the link's upstream_model and the provider's baseURL"),
}


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
        fault = PROVIDER_FAULTS.get(status_code)
        if fault is not None:
            message = f"{message} ({fault[0]}: {fault[1]})"
        super().__init__(message)
        self.status_code = status_code
        self.body = scrub_bytes(body)
        self.content_type = content_type
        self.retry_after = retry_after
        # "credential rejected" / "model not found", or None for any other answer
        self.fault = None if fault is None else fault[0]
        self.retryable = status_code in RETRYABLE_STATUS or fault is not None
