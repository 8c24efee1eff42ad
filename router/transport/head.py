"""The request head: the request line and header lines an HTTP/1.1 request starts with."""

from __future__ import annotations

from typing import Final

import httpx

__all__ = ["CHUNKED_END", "chunk", "request_head"]

_METHODS: Final = {
    name: name.encode("ascii")
    for name in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")
}

# The last chunk and the empty trailer section that end a chunked body.
CHUNKED_END: Final = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """``data`` framed as one chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def request_head(request: httpx.Request) -> tuple[bytes, bool]:
    """The request line and headers, as given, and whether the body is sent chunked.

    Raises ``httpx.LocalProtocolError`` when a CR or LF inside the target, a header name or a
    value would smuggle in other header lines.
    """
    method = request.method
    verb = _METHODS.get(method) or method.encode("ascii")
    parts = [verb, b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    raw = request.headers.raw
    for name, value in raw:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    lines = len(raw) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b" " in verb:
        raise httpx.LocalProtocolError("Invalid character in the request head.", request=request)
    chunked = False
    if b"transfer-encoding" in head.lower():  # httpx sets it for streaming bodies
        for name, value in raw:
            if name.lower() == b"transfer-encoding":
                chunked = value.rstrip().lower().endswith(b"chunked")
    return head, chunked
