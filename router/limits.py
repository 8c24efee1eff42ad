"""Input limits on the client endpoints, each answered with a clear 4xx before anything goes
upstream: header size (431), body size (413, in :mod:`router.proxy`), number of messages and
JSON nesting depth (400).

Request bodies are not logged unless ``logging.log_bodies`` is on; then at most
``logging.body_max_bytes`` of each, scrubbed of credentials, go to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from router.errors import HeadersTooLarge, InvalidRequest
from router.redact import scrub
from router.settings import Settings

log = logging.getLogger("provider_router.bodies")


def json_depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/objects deeper than ``limit`` (stops at the first such)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend(
                (child, depth + 1) for child in node.values() if isinstance(child, (dict, list))
            )
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
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

    def check_body(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if isinstance(messages, list) and len(messages) > self.max_messages:
            raise InvalidRequest(
                f"The request has {len(messages)} messages, over the limit of "
                f"{self.max_messages} (limits.max_messages).",
                param="messages",
                code="too_many_messages",
            )
        if json_depth_over(body, self.max_json_depth):
            raise InvalidRequest(
                f"The request body nests JSON deeper than {self.max_json_depth} levels "
                "(limits.max_json_depth).",
                code="json_too_deep",
            )

    def log_body(self, request_id: str, raw: bytes) -> None:
        if self.log_bodies:
            shown = raw[: self.log_body_max_bytes].decode("utf-8", "replace")
            more = " (truncated)" if len(raw) > self.log_body_max_bytes else ""
            log.info("Request %s body%s: %s", request_id, more, scrub(shown))
