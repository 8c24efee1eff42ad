"""Input limits on the client endpoints, each answered with a clear 4xx before anything goes
upstream: header size (431), body size (413, in :mod:`handler`), number of messages and
JSON nesting depth (400).

Request and response bodies are not logged unless ``logging.log_bodies`` is on; then at most
``logging.body_max_bytes`` of each, scrubbed of credentials, go to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from starlette.types import Message, Send

from router.errors import HeadersTooLarge, InvalidRequest
from router.redact import scrub
from router.settings import Settings

log = logging.getLogger("provider_router.bodies")


def json_depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/objects deeper than ``limit`` (stops at the first such)."""
    stack = [value]
    depths = [1]
    while stack:
        node = stack.pop()
        depth = depths.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append(child)
                depths.append(depth + 1)
    return False


class InputLimits:
    """The limits of one running proxy (from its settings)."""

    def __init__(self, settings: Settings) -> None:
        self.max_header_bytes = settings.max_header_bytes
        self.max_messages = settings.max_messages
        self.max_json_depth = settings.max_json_depth
        self.log_bodies = settings.log_bodies
        self.log_body_max_bytes = settings.log_body_max_bytes

    def check_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 4
        if size > self.max_header_bytes:
            raise HeadersTooLarge(
                f"The request headers take {size} bytes, over the limit of "
                f"{self.max_header_bytes} bytes (limits.max_header_bytes)."
            )

    def check_body(self, raw: bytes, body: dict[str, Any]) -> None:
        """Check a parsed request ``body`` (``raw`` is its JSON text)."""
        messages = body.get("messages")
        if isinstance(messages, list) and len(messages) > self.max_messages:
            raise InvalidRequest(
                f"The request has {len(messages)} messages, over the limit of "
                f"{self.max_messages} (limits.max_messages).",
                param="messages",
                code="too_many_messages",
            )
        # Nesting needs brackets: a body with fewer of them than the limit (most chat requests)
        # cannot be too deep, and counting them runs in C.
        brackets = raw.count(b"{") + raw.count(b"[")
        if brackets > self.max_json_depth and json_depth_over(body, self.max_json_depth):
            raise InvalidRequest(
                f"The request body nests JSON deeper than {self.max_json_depth} levels "
                "(limits.max_json_depth).",
                code="json_too_deep",
            )

    def log_body(self, request_id: str, raw: bytes, what: str = "Request") -> None:
        """Log ``raw`` (a request or response body) if body logging is on: cut and scrubbed."""
        if self.log_bodies:
            shown = raw[: self.log_body_max_bytes].decode("utf-8", "replace")
            more = " (truncated)" if len(raw) > self.log_body_max_bytes else ""
            log.info("%s %s body%s: %s", what, request_id, more, scrub(shown))

    def capture(self, send: Send) -> tuple[Send, bytearray]:
        """``send`` that also keeps the first body bytes it sends (one more than the limit, to
        tell a cut body), for :meth:`log_body` of a streamed response."""
        kept = bytearray()
        limit = self.log_body_max_bytes + 1

        async def capturing(message: Message) -> None:
            if len(kept) < limit and message["type"] == "http.response.body":
                kept.extend(message.get("body", b"")[: limit - len(kept)])
            await send(message)

        return capturing, kept
