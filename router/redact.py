"""Scrubbing credentials out of text before it is logged, recorded or answered.

Upstream credentials travel in ``Authorization``, ``x-api-key``, ``x-goog-api-key`` and
``api-key`` headers or a ``key=`` query parameter; exception texts (httpx puts URLs in them),
reprs of header dicts and upstream error bodies can all carry them. :func:`scrub` replaces the
value in each of those shapes with ``[redacted]``, and so does every credential the process
has decrypted (:func:`remember`), wherever it appears; :class:`ScrubbingFormatter` applies it to
every formatted log line, tracebacks included. Error messages are scrubbed where they are made
(:mod:`router.errors`), so records and client answers are clean too.

Example::

    scrub("GET https://h/v1/models?key=AIza123&alt=sse")  # 'GET https://h/v1/models?key=[redacted]&alt=sse'
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

_HEADER_NAMES = r"(?:authorization|proxy-authorization|x-api-key|x-goog-api-key|api[-_]?key)"
_PATTERNS = (
    # A header with its value: "Authorization: Bearer x", "'x-api-key': 'x'", "api-key=x",
    # escaped JSON (\"apiKey\": \"x\"), bytes (b"x-api-key": b"x") and the tuples of raw
    # header lists ((b"x-api-key", b"x")).
    re.compile(
        rf"""(?P<head>(?:\(\s*b?["']{_HEADER_NAMES}["']\s*,|\\?["']{_HEADER_NAMES}\\?["']\s*[:=]"""
        rf"""|{_HEADER_NAMES}\\?["']?\s*[:=])"""
        r"""\s*(?:b?\\?["'])?(?:(?:bearer|basic|token)\s+)?)"""
        r"""(?!(?:bearer|basic|token)\b)(?P<secret>[^\s"',;&}\]<\[\\][^\s"',;&}\]\\]*)""",
        re.IGNORECASE,
    ),
    # A bare bearer token anywhere. (Placeholders such as "<key>" are left alone.)
    re.compile(r"(?P<head>\bbearer\s+)(?P<secret>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE),
    # A key in a query string or form: ?key=..., &api_key=..., access_token=...
    re.compile(
        r"(?P<head>[?&;](?:key|api_key|apikey|access_token|token)=)(?P<secret>[^&\s\"'#]+)",
        re.IGNORECASE,
    ),
)


# Credentials this process has decrypted or stored (longest first): replaced wherever they
# appear, whatever the shape around them (an upstream error echoing "Incorrect API key: sk-..."
# has no header name a pattern could catch). A tuple, swapped whole, so a log call on another
# thread never iterates while it changes. Short values are left to the patterns: a dummy key
# such as "ollama" would otherwise blank out every provider named like it.
_known: tuple[str, ...] = ()
MIN_KNOWN_CHARS = 12


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _strings(item)]
    return []


def remember(value: object) -> None:
    """Scrub ``value`` (a credential; the strings inside a dict or list) from now on."""
    global _known
    new = {text for text in _strings(value) if len(text) >= MIN_KNOWN_CHARS} - set(_known)
    if new:
        _known = tuple(sorted({*_known, *new}, key=len, reverse=True))


def public_url(url: str) -> str:
    """``url`` with the password of its user info masked, for logs, answers and pages.

    Example: ``public_url("redis://:pw@cache:6379/0")`` is ``'redis://:****@cache:6379/0'``.
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user}{colon and ':****'}@{host}"


def _replace(match: re.Match[str]) -> str:
    if match["secret"] == REDACTED:
        return match[0]
    return match["head"] + REDACTED


def scrub(text: str) -> str:
    """``text`` with every known credential and credential-shaped value replaced."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    lowered = text.lower()
    if not any(word in lowered for word in ("key", "auth", "bearer", "token")):
        return text  # the common case: nothing that could carry a credential
    for pattern in _PATTERNS:
        text = pattern.sub(_replace, text)
    return text


def scrub_bytes(data: bytes) -> bytes:
    """:func:`scrub` for a body: the same bytes back unless something had to be redacted."""
    text = data.decode("utf-8", "replace")
    cleaned = scrub(text)
    return data if cleaned == text else cleaned.encode("utf-8")


class ScrubbingFormatter(logging.Formatter):
    """A formatter whose output (message, arguments and traceback) passes through :func:`scrub`."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def install(logger: logging.Logger | None = None, fmt: str | None = None) -> None:
    """Give every handler of ``logger`` (the root logger by default) a scrubbing formatter."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        current = handler.formatter
        handler.setFormatter(
            ScrubbingFormatter(fmt or (current._fmt if current is not None else None))
        )
