"""What every adapter needs to call its upstream: a lean HTTP client and error translation.

``UpstreamClient`` keeps httpx's request and response types (so adapters read ``httpx.Response``
and tests mock upstreams with respx) but skips the work ``httpx.AsyncClient`` does per request
that a proxy has no use for: merging the base URL, default headers and cookies into every
request, a client-wide cookie jar, the auth and redirect loops. Here the URL of each path, the
headers and the timeouts are built once per provider, and a request goes straight to the
transport. Not keeping cookies is also a correctness point: one upstream's cookie must not
follow the next client's request.

The transport is found through ``AsyncClient._transport_for_url``, the method respx patches, so
a test's respx routes still see every request. httpx is pinned, and the tests cover this path.
Which transport a provider gets (the own HTTP/1.1 one, or httpx's own for HTTP/2 and proxies)
is decided by :mod:`router.transport.egress` from the keys in ``HTTP_CONFIG_KEYS``.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import errno
import math
import os
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson

from providers.base import AdapterOptions, ConfigKey
from router.errors import (
    InvalidRequest,
    LocalLimitReached,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponseTooLarge,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.redact import Scrubber
from router.transport.egress import Egress, TransportKind, open_transport, tls_context
from router.transport.limits import ResponseLimits, ResponseTooLarge, guard

_MAX_CACHED_URLS = 64

# How every HTTP adapter reaches its upstream (router/transport/egress.py); each adapter's
# config_keys include these.
HTTP_CONFIG_KEYS: Mapping[str, ConfigKey] = {
    "proxy": ConfigKey(
        (str, bool),
        sensitive=True,
        description='HTTP CONNECT proxy URL; "" or false: none, whatever HTTPS_PROXY says',
    ),
    "caBundle": ConfigKey(str, description="PEM file of the CAs to trust instead of the system's"),
    "clientCert": ConfigKey(str, description="PEM file holding a client certificate and its key"),
    "http2": ConfigKey(bool, description="offer HTTP/2 (runs on httpx's transport)"),
}

__all__ = [
    "HTTP_CONFIG_KEYS",
    "UpstreamClient",
    "call_json",
    "client_from_config",
    "credentials_in",
    "egress_from_config",
    "header_problems",
    "http_config_problems",
    "open_stream",
    "retry_after_seconds",
    "status_error",
    "translate_httpx_error",
]


class UpstreamClient:
    """One provider's HTTP client: a base URL, fixed headers, timeouts and a connection pool.

    ``transport_kind`` says which transport serves it: ``"own"`` or ``"httpx"``.
    """

    transport_kind: TransportKind

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        timeout: httpx.Timeout,
        *,
        max_connections: int = 256,
        egress: Egress | None = None,
        limits: ResponseLimits | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limits = limits = limits or ResponseLimits()
        scrubber = Scrubber(secrets)
        self.scrubber: Scrubber | None = scrubber if scrubber else None
        transport, self.transport_kind = open_transport(
            self.base_url,
            egress or Egress(),
            max_connections=max_connections,
            max_header_bytes=limits.max_header_bytes,
        )
        self._client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, transport=transport
        )
        host = httpx.URL(self.base_url).netloc
        self._headers = [(b"host", host)] + [
            (name.lower().encode("ascii"), value.encode("utf-8")) for name, value in headers.items()
        ]
        self._extensions = {"timeout": timeout.as_dict()}
        self._urls: dict[str, httpx.URL] = {}

    def url(self, path: str) -> httpx.URL:
        """The absolute URL of ``path`` (relative to the base URL), built once per path."""
        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(self.base_url + path)
            if len(self._urls) < _MAX_CACHED_URLS:  # paths with page tokens would grow it
                self._urls[path] = url
        return url

    def build(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        raw = self._headers
        if headers:
            # A header given here replaces the fixed one of the same name (a client's
            # anthropic-version passed through, say).
            extra = [(k.lower().encode("ascii"), v.encode("utf-8")) for k, v in headers.items()]
            names = {name for name, _ in extra}
            raw = [h for h in raw if h[0] not in names] + extra
        else:
            raw = list(raw)
        if content is not None:
            raw.append((b"content-length", b"%d" % len(content)))
        request = httpx.Request(
            method,
            self.url(path),
            headers=raw,
            stream=httpx.ByteStream(content or b""),
            extensions=self._extensions,
        )
        request.read()
        return request

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send ``request``; unless ``stream``, read the whole body and release the connection.

        The answer comes back decoded, within the provider's :class:`ResponseLimits` (past one,
        reading it raises :class:`ResponseTooLarge`) and scrubbed of the provider's credentials.
        """
        transport = self._client._transport_for_url(request.url)
        response = await transport.handle_async_request(request)
        response.request = request
        guard(response, self.limits, self.scrubber, streamed=stream)
        if not stream:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    async def post(self, path: str, content: bytes, *, stream: bool = False) -> httpx.Response:
        return await self.send(self.build("POST", path, content), stream=stream)

    async def get(self, path: str) -> httpx.Response:
        return await self.send(self.build("GET", path))

    async def aclose(self) -> None:
        await self._client.aclose()


async def call_json(
    client: UpstreamClient,
    provider_id: str,
    path: str,
    payload: bytes | None,
    on_status: Callable[[httpx.Response, bytes], UpstreamError],
) -> dict[str, Any]:
    """GET ``path`` (POST ``payload`` when given) and return the JSON object it answers.

    A status >= 400 raises what ``on_status`` makes of the answer (each upstream words its
    errors differently); a body that is not a JSON object is an ``UpstreamProtocolError``.
    """
    try:
        if payload is None:
            response = await client.get(path)
        else:
            response = await client.post(path, payload)
    except httpx.HTTPError as exc:
        raise translate_httpx_error(provider_id, exc) from exc
    if response.status_code >= 400:
        raise on_status(response, response.content)
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError(
            f"Provider {provider_id!r} answered HTTP {response.status_code} "
            "with a body that is not JSON."
        ) from exc
    if not isinstance(data, dict):
        raise UpstreamProtocolError(
            f"Provider {provider_id!r} answered with JSON that is not an object."
        )
    return data


async def open_stream(
    client: UpstreamClient,
    provider_id: str,
    path: str,
    payload: bytes,
    on_status: Callable[[httpx.Response, bytes], UpstreamError],
) -> httpx.Response:
    """POST ``payload`` and return the response with its body still to read (the caller closes
    it). A status >= 400 reads the error body, closes, and raises what ``on_status`` makes of it.
    """
    try:
        response = await client.post(path, payload, stream=True)
    except httpx.HTTPError as exc:
        raise translate_httpx_error(provider_id, exc) from exc
    if response.status_code < 400:
        return response
    try:
        error_body = await response.aread()
    except httpx.HTTPError as exc:
        raise translate_httpx_error(provider_id, exc) from exc
    finally:
        await response.aclose()
    raise on_status(response, error_body)


def credentials_in(config: Mapping[str, Any]) -> list[str]:
    """The credentials a provider's config holds, to scrub from its upstream's answers: its
    ``apiKey``, the values of its ``headers``, the password of its ``proxy``."""
    found = []
    key = config.get("apiKey")
    if isinstance(key, str):
        found.append(key)
    headers = config.get("headers")
    if isinstance(headers, Mapping):
        found += [value for value in headers.values() if isinstance(value, str)]
    proxy = config.get("proxy")
    if isinstance(proxy, str) and proxy:
        with contextlib.suppress(ValueError):
            password = urlsplit(proxy).password
            if password:
                found.append(password)
    return found


def client_from_config(
    config: Mapping[str, Any],
    options: AdapterOptions,
    base_url: str,
    headers: Mapping[str, str],
) -> UpstreamClient:
    """The client of one provider: its ``timeout`` (ms) and ``headers`` config, then ``headers``.

    The adapter's own headers (credentials, versions) come last, so a configured extra header
    cannot replace them.
    """
    timeout_ms = int(config.get("timeout") or options.timeout_ms)
    # The read timeout bounds any one wait for bytes; the router's own first-byte and idle
    # timers decide when a wait is too long, so a provider's longer ones must not be cut short.
    for key in ("firstByteTimeout", "idleTimeout"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            timeout_ms = max(timeout_ms, value)
    connect_ms = int(config.get("connectTimeout") or min(timeout_ms, options.connect_timeout_ms))
    extra = config.get("headers") or {}
    # Checked when written; a row from before that check (or edited by hand) must not break
    # the framing of every request, so it makes the provider unusable instead (the snapshot
    # logs why and routes around it).
    problems = header_problems(extra)
    if problems:
        raise InvalidRequest("The provider's config cannot be used: " + " ".join(problems))
    # Waiting for a free connection must end before the first-byte timer does, or the wait (a
    # limit of ours) would be reported as the provider's timeout.
    pool_ms = min(options.pool_timeout_ms, timeout_ms)
    first_byte = config.get("firstByteTimeout")
    if isinstance(first_byte, int) and not isinstance(first_byte, bool) and first_byte > 1:
        pool_ms = min(pool_ms, first_byte // 2)
    merged = {"content-type": "application/json"}
    merged.update({str(k): str(v) for k, v in extra.items()})
    merged.update(headers)
    try:
        return UpstreamClient(
            base_url.rstrip("/"),
            merged,
            httpx.Timeout(timeout_ms / 1000, connect=connect_ms / 1000, pool=pool_ms / 1000),
            max_connections=options.max_connections,
            egress=egress_from_config(config),
            limits=options.response_limits,
            secrets=credentials_in(config),
        )
    except (OSError, ValueError, ImportError) as exc:
        # Checked when written, but a file can go away later, and the environment's proxy is
        # not checked at all (a socks:// one needs a package we do not ship).
        problems = _egress_problems(config) or [str(exc)]
        raise InvalidRequest(
            "The provider's config cannot be used: " + " ".join(problems), param="config"
        ) from exc


def egress_from_config(config: Mapping[str, Any]) -> Egress:
    """The ``proxy``, ``caBundle``, ``clientCert`` and ``http2`` keys of a provider's config."""
    proxy = config.get("proxy")
    return Egress(
        proxy="" if proxy is False else (proxy if isinstance(proxy, str) else None),
        ca_bundle=config.get("caBundle") or None,
        client_cert=config.get("clientCert") or None,
        http2=config.get("http2") is True,
    )


_CREDENTIAL_PARAMS = frozenset(
    {"key", "apikey", "token", "accesstoken", "secret", "password", "sig", "signature", "auth"}
)


def _credential_param(name: str) -> bool:
    return name.lower().replace("-", "").replace("_", "") in _CREDENTIAL_PARAMS


def http_config_problems(config: Mapping[str, Any], *, allow_query: bool = True) -> list[str]:
    """What is wrong with the ``baseURL``, ``timeout`` and ``headers`` every HTTP type takes."""
    problems = []
    base_url = config.get("baseURL")
    if isinstance(base_url, str) and base_url:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(
                f"Config key 'baseURL' must be an http:// or https:// URL, got {base_url!r}."
            )
        elif parts.username or parts.password:
            problems.append("Config key 'baseURL' must not carry credentials; use 'apiKey'.")
        elif parts.query and not allow_query:
            problems.append(
                "Config key 'baseURL' must not carry a query; a key goes in 'apiKey' "
                "(sent in a header, never in a URL)."
            )
        elif any(_credential_param(name) for name, _ in parse_qsl(parts.query)):
            # A URL is stored and shown in clear; credentials belong in encrypted keys.
            problems.append(
                "Config key 'baseURL' must not carry a credential in its query; put the key in "
                "'apiKey' or 'headers' (stored encrypted, sent in a header)."
            )
    timeout = config.get("timeout")
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout <= 0:
        problems.append(f"Config key 'timeout' is in milliseconds and must be > 0, got {timeout}.")
    headers = config.get("headers")
    if isinstance(headers, dict):
        problems += header_problems(headers)
    return problems + _egress_problems(config)


# Headers the transport owns (framing, the connection, the origin) or that only mean something
# between one client and one proxy: one set in config would be sent twice, or contradict the
# framing the transport writes.
_RESERVED_HEADERS = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
        "te", "trailer", "expect", "http2-settings",
    }
)  # fmt: skip
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_problems(headers: Mapping[Any, Any]) -> list[str]:
    """What is wrong with a provider's extra ``headers``, one sentence per header, naming it.

    Values are never quoted: they often hold a credential.
    """
    problems = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            problems.append(
                f"Config key 'headers': {name!r} is not a valid header name (ASCII letters, "
                "digits and !#$%&'*+-.^_`|~ only)."
            )
        elif name.lower() in _RESERVED_HEADERS or name.lower().startswith("proxy-"):
            problems.append(
                f"Config key 'headers': header {name!r} is not allowed; provider-router sets "
                "the framing and connection headers itself (Host, Content-Length, "
                "Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE, Trailer, Expect, "
                "Proxy-*)."
            )
        elif not isinstance(value, str):
            problems.append(
                f"Config key 'headers' must map header names to strings; header {name!r} does not."
            )
        elif _BAD_VALUE.search(value):
            problems.append(
                f"Config key 'headers': the value of header {name!r} contains a line break or "
                "another control character."
            )
    return problems


def _egress_problems(config: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``proxy``, ``caBundle`` and ``clientCert``: a bad URL, a file that is
    missing or is not what it should be (checked at write time, not at the first request)."""
    problems = []
    proxy = config.get("proxy")
    if proxy is True:
        problems.append("Config key 'proxy' must be a proxy URL, \"\" or false, got true.")
    elif isinstance(proxy, str) and proxy:
        parts = urlsplit(proxy)
        try:
            port_ok = parts.port is not None or parts.scheme in ("http", "https")
        except ValueError:
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            # The URL may hold a proxy password: name its scheme, not the value.
            problems.append(
                "Config key 'proxy' must be an http:// or https:// proxy URL such as "
                f"http://proxy.internal:3128, got one with scheme {parts.scheme or 'none'!r}."
            )
        elif parts.path not in ("", "/") or parts.query:
            problems.append("Config key 'proxy' must be a proxy's address, without a path.")
    for key, label in (("caBundle", "a PEM file of CA certificates"),
                       ("clientCert", "a PEM file with a certificate and its key")):  # fmt: skip
        path = config.get(key)
        if not isinstance(path, str) or not path:
            continue
        try:
            if key == "caBundle":
                tls_context(path, None)
            else:
                tls_context(None, path)
        except FileNotFoundError:
            problems.append(f"Config key {key!r} names {path!r}, which does not exist.")
        except (OSError, ssl.SSLError) as exc:
            problems.append(
                f"Config key {key!r} names {path!r}, which is not {label} ({exc.strerror or exc})."
            )
    return problems


# A connection that failed for one of these reasons failed here, not at the provider.
_LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_LOCAL_ERRNO_TEXT = re.compile(r"\[Errno (" + "|".join(map(str, sorted(_LOCAL_ERRNOS))) + r")\]")


def _local_errno(exc: BaseException) -> int | None:
    """The errno of a local resource shortage (no file descriptor, no buffer space) behind
    ``exc``, found along its chain of causes or in its text; None when there is none."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in _LOCAL_ERRNOS:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    found = _LOCAL_ERRNO_TEXT.search(str(exc))
    return int(found.group(1)) if found else None


def translate_httpx_error(provider_id: str, exc: httpx.HTTPError) -> UpstreamError:
    """Map an httpx failure to the most specific upstream error. The message holds no URL."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, ResponseTooLarge):
        return UpstreamResponseTooLarge(f"Provider {provider_id!r}: {detail}.")
    if isinstance(exc, httpx.PoolTimeout):
        return LocalLimitReached(
            f"Every connection to provider {provider_id!r} is busy "
            "(upstream.max_connections); the request was not sent.",
            limit="upstream.max_connections",
        )
    if isinstance(exc, httpx.ConnectError):
        number = _local_errno(exc)
        if number is not None:
            return LocalLimitReached(
                f"provider-router could not open a connection to provider {provider_id!r}: "
                f"{os.strerror(number)} (a limit of this process or host, such as "
                "RLIMIT_NOFILE); the request was not sent.",
                limit="open files (RLIMIT_NOFILE)"
                if number in (errno.EMFILE, errno.ENFILE)
                else "socket buffers (kernel memory)",
            )
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamConnectError(f"Provider {provider_id!r}: connect timed out.")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamConnectError(f"Provider {provider_id!r}: could not connect ({detail}).")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(
            f"Provider {provider_id!r}: no answer in time ({type(exc).__name__})."
        )
    return UpstreamProtocolError(f"Provider {provider_id!r}: broken answer ({detail}).")


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds: delay-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000" parses as naive; an HTTP-date is always GMT
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def status_error(provider_id: str, response: httpx.Response, body: bytes) -> UpstreamStatusError:
    """An upstream's error answer as an exception carrying its status, body and Retry-After."""
    reason = ""
    try:
        data = orjson.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            reason = str(error.get("message", ""))[:300]
        elif isinstance(error, str):
            reason = error[:300]
    except orjson.JSONDecodeError:
        reason = body[:200].decode("utf-8", "replace")
    suffix = f": {reason}" if reason else ""
    return UpstreamStatusError(
        f"Provider {provider_id!r} answered HTTP {response.status_code}{suffix}",
        status_code=response.status_code,
        body=body,
        content_type=response.headers.get("content-type", "application/json"),
        retry_after=retry_after_seconds(response),
    )
