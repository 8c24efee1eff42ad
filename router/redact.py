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

import json
import logging
import re
from collections.abc import Iterable

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


# Every match of a pattern above contains one of these (a header name, "bearer", or a query
# parameter's "key="/"token="), so text without any of them skips the regular expressions. They
# are narrower than "key" or "token": an access log line ("tokens=12+40", "client_key_id") must
# not pay for three regular expressions it cannot match.
_TRIGGERS = ("authorization", "api-key", "api_key", "apikey", "bearer", "key=", "token=")

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
    if not any(word in lowered for word in _TRIGGERS):
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


# A provider's own credentials shorter than this are not scrubbed from its answers: no real key
# is that short, and a placeholder such as "ollama" or "EMPTY" would blank out ordinary words.
MIN_PROVIDER_SECRET_CHARS = 8
_REDACTED_BYTES = REDACTED.encode()


class Scrubber:
    """One provider's credentials, scrubbed from every byte its upstream sends back.

    Unlike :func:`scrub` (process-wide, for logs), this knows exactly which values to look for,
    so it needs no shape around them and no minimum beyond ``MIN_PROVIDER_SECRET_CHARS``: an
    upstream that echoes the key it received, in a JSON body, an SSE event or the prose of a
    401, has it replaced by ``[redacted]`` before anything reads the answer.

    Example::

        scrubber = Scrubber(["sk-abcdefghij"])
        scrubber.bytes(b'{"error": "bad key sk-abcdefghij"}')  # b'{"error": "bad key [redacted]"}'
    """

    __slots__ = ("_last_bytes", "_needles", "_texts")

    def __init__(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if len(s) >= MIN_PROVIDER_SECRET_CHARS}
        # The value as it is, and as a JSON string would carry it when that differs.
        forms = set(values)
        for value in values:
            escaped = json.dumps(value)[1:-1]
            if escaped != value:
                forms.add(escaped)
        ordered = sorted(forms, key=len, reverse=True)
        self._texts = tuple(ordered)
        self._needles = tuple(text.encode() for text in ordered)
        self._last_bytes = frozenset(b for needle in self._needles for b in needle)

    def __bool__(self) -> bool:
        return bool(self._needles)

    def text(self, text: str) -> str:
        for secret in self._texts:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def found(self, data: bytes) -> bool:
        """Whether ``data`` holds one of the credentials."""
        return any(secret in data for secret in self._needles)

    def bytes(self, data: bytes) -> bytes:
        """``data`` scrubbed: the same object when there was nothing to replace."""
        for secret in self._needles:
            if secret in data:
                data = data.replace(secret, _REDACTED_BYTES)
        return data

    def stream(self) -> StreamScrubber:
        """A scrubber for one body that arrives in pieces (a match may span two)."""
        return StreamScrubber(self._needles, self._last_bytes)


class StreamScrubber:
    """Scrubs a body piece by piece, holding back the end of a piece only while it could be the
    start of a credential (so an SSE event, which ends with a blank line, is never held)."""

    __slots__ = ("_held", "_last_bytes", "_needles")

    def __init__(self, needles: tuple[bytes, ...], last_bytes: frozenset[int]) -> None:
        self._needles = needles
        # A piece can end inside a credential only if its last byte occurs in one.
        self._last_bytes = last_bytes
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        """``data`` scrubbed, less any tail held back for the next piece."""
        if self._held:
            data = self._held + data
            self._held = b""
        for secret in self._needles:
            if secret in data:
                data = data.replace(secret, _REDACTED_BYTES)
        if not data or data[-1] not in self._last_bytes:
            return data
        hold = 0
        size = len(data)
        for secret in self._needles:
            # The earliest start, within the last len(secret) - 1 bytes, of a suffix of data
            # that is a prefix of the secret.
            first = secret[:1]
            at = data.find(first, max(0, size - len(secret) + 1))
            while at != -1:
                if secret.startswith(data[at:]):
                    hold = max(hold, size - at)
                    break
                at = data.find(first, at + 1)
        if hold:
            self._held = data[size - hold :]
            return data[: size - hold]
        return data

    def end(self) -> bytes:
        """What was held back, at the end of the body (it was not a credential after all)."""
        held, self._held = self._held, b""
        return held
