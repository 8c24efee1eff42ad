"""The Anthropic Messages door: ``POST /v1/messages`` (Claude Code, the Anthropic SDKs).

To an ``anthropic`` provider the client's body passes through with only the model replaced, and
the upstream's bytes come back (:meth:`Adapter.send_native`). To every other type the request is
translated into the chat interface (:mod:`router.doors.messages_request`) and the answer back
(:mod:`router.doors.messages_answer`). Errors are Anthropic's: ``{"type": "error", "error":
{"type", "message"}}`` with Anthropic's statuses; 529 ``overloaded_error`` when no provider could
serve the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from providers.anthropic.adapter import ERROR_STATUS
from providers.base import ChatStream, Reply
from router.doors.base import FrontDoor, RouterRequest
from router.doors.chat import parse_object
from router.doors.messages_answer import MessagesStream, event, message_from_completion
from router.doors.messages_request import chat_body
from router.errors import (
    AllProvidersFailed,
    GatewayOverloaded,
    InvalidRequest,
    NoProviderAvailable,
    RouterError,
    StreamInterrupted,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)

DIALECT = "anthropic.messages"
COUNT_DIALECT = "anthropic.messages.count_tokens"
# Client headers a pass-through forwards; the rest (credentials above all) stay here.
FORWARDED_HEADERS = (b"anthropic-version", b"anthropic-beta")

# Anthropic's error type for each status it uses (the inverse of the adapter's table); headers
# over our limit (431, which Anthropic has no type of its own for) are a request too large.
ERROR_TYPES = {status: kind for kind, status in ERROR_STATUS.items()} | {431: "request_too_large"}


def is_messages_path(path: str) -> bool:
    """Whether ``path`` belongs to the Messages API (``/v1/messages`` and below; the fast path
    also serves it without ``/v1``), whose errors are in Anthropic's shape."""
    path = path.removeprefix("/v1")
    return path == "/messages" or path.startswith("/messages/")


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def upstream_type(failure: UpstreamError | None) -> str:
    """Anthropic's error type for an upstream failure: the upstream's own when it named one (an
    Anthropic upstream's ``overloaded_error`` arrives as the error's ``code``), else its status's;
    ``api_error`` for failures without a status (a broken or stalled stream)."""
    if not isinstance(failure, UpstreamStatusError) or failure.status_code is None:
        return "api_error"
    try:
        data = orjson.loads(failure.body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code in ERROR_STATUS:
        return code
    return error_type(failure.status_code)


def error_body(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


@dataclass(frozen=True, slots=True)
class _State:
    model: str
    stops: list[str]


def forwarded_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in FORWARDED_HEADERS
    }


def check_messages(body: dict[str, Any], *, max_tokens: bool) -> None:
    """What every Messages request needs before it can be routed."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("Field 'messages' must be a non-empty array.", param="messages")
    if max_tokens:
        value = body.get("max_tokens")
        if type(value) is not int or value < 1:
            raise InvalidRequest(
                f"Field 'max_tokens' is required and must be a positive integer, got {value!r}.",
                param="max_tokens",
            )
    stream = body.get("stream", False)
    if stream is None:
        # OpenAI reads null as "not streamed"; an upstream given the body as it is may not.
        del body["stream"]
    elif not isinstance(stream, bool):
        raise InvalidRequest("Field 'stream' must be true, false or null.", param="stream")


class MessagesDoor(FrontDoor):
    """``POST /v1/messages``."""

    endpoint: ClassVar[str] = "messages"
    dialect: ClassVar[str | None] = DIALECT

    def parse(self, raw: bytes, headers: list[tuple[bytes, bytes]]) -> RouterRequest:
        body = parse_object(raw)
        check_messages(body, max_tokens=True)
        stops = body.get("stop_sequences") or []
        return RouterRequest(
            body["model"],
            chat_body(body),
            stream=body.get("stream") is True,
            native=body,
            native_headers=forwarded_headers(headers),
            state=_State(body["model"], stops if isinstance(stops, list) else []),
        )

    def reply(self, reply: Reply, request: RouterRequest) -> Reply:
        try:
            data = orjson.loads(reply.body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError("The upstream's answer is not JSON.") from exc
        if not isinstance(data, dict):
            raise UpstreamProtocolError("The upstream's answer is not a JSON object.")
        state: _State = request.state
        body = message_from_completion(data, state.model, state.stops)
        return Reply(body, reply.usage, reply.status_code)

    def stream(self, stream: ChatStream, request: RouterRequest) -> ChatStream:
        state: _State = request.state
        return MessagesStream(stream, state.model, state.stops).chat_stream()

    def error(self, exc: RouterError) -> tuple[int, bytes]:
        if isinstance(exc, NoProviderAvailable | AllProvidersFailed | GatewayOverloaded):
            return 529, error_body("overloaded_error", exc.message)
        status = exc.status_code
        return status, error_body(error_type(status), exc.message)

    def upstream_error(self, exc: UpstreamStatusError) -> tuple[int, bytes, str]:
        status = exc.status_code or 502
        try:
            data = orjson.loads(exc.body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("type") == "error":
            return status, exc.body, "application/json"  # an Anthropic upstream's own words
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if not isinstance(message, str) or not message:
            message = exc.message
        return status, error_body(error_type(status), message), "application/json"

    def stream_error(self, exc: RouterError, request: RouterRequest | None = None) -> bytes:
        if isinstance(exc, StreamInterrupted):
            kind = upstream_type(exc.upstream)
        else:  # the router's own reason (a revoked key: authentication_error)
            kind = error_type(exc.status_code)
        data = {"type": "error", "error": {"type": kind, "message": exc.message}}
        return event("error", data)
