"""The OpenAI doors: ``/v1/chat/completions`` and ``/v1/embeddings``.

The router's internal request *is* an OpenAI body, so these doors only check it: answers and
streams are the adapters' own bytes, passed on with no work per chunk.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from router.doors.base import FrontDoor, RouterRequest
from router.errors import InvalidJSON, InvalidRequest


def parse_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object with a string ``model``."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Field 'model' is required and must be a string.", param="model")
    return body


def parse_request(raw: bytes, required: tuple[str, ...]) -> dict[str, Any]:
    """Parse and check an OpenAI request body that must have the ``required`` fields."""
    body = parse_object(raw)
    for key in required:
        if key not in body:
            raise InvalidRequest(f"Field {key!r} is required.", param=key)
    if "messages" in required and (not isinstance(body["messages"], list) or not body["messages"]):
        raise InvalidRequest("Field 'messages' must be a non-empty array.", param="messages")
    stream = body.get("stream", False)
    if stream is None:
        # OpenAI reads null as "not streamed"; an upstream given the body as it is may not.
        del body["stream"]
    elif not isinstance(stream, bool):
        raise InvalidRequest("Field 'stream' must be true, false or null.", param="stream")
    if not isinstance(body.get("stream_options") or {}, dict):
        # Read by the proxy and every adapter: a wrong type must not reach them (it would
        # fail the attempt and count against the provider's circuit).
        raise InvalidRequest("Field 'stream_options' must be an object.", param="stream_options")
    return body


class ChatDoor(FrontDoor):
    """``POST /v1/chat/completions``: OpenAI chat in, OpenAI chat out."""

    endpoint: ClassVar[str] = "chat.completions"
    translates: ClassVar[bool] = False
    stream_end: ClassVar[bytes] = b"data: [DONE]\n\n"

    def parse(self, raw: bytes, headers: list[tuple[bytes, bytes]]) -> RouterRequest:
        body = parse_request(raw, ("messages",))
        return RouterRequest(body["model"], body, stream=body.get("stream") is True)


class EmbeddingsDoor(FrontDoor):
    """``POST /v1/embeddings``: never streamed."""

    endpoint: ClassVar[str] = "embeddings"
    translates: ClassVar[bool] = False

    def parse(self, raw: bytes, headers: list[tuple[bytes, bytes]]) -> RouterRequest:
        body = parse_request(raw, ("input",))
        return RouterRequest(body["model"], body, embeddings=True)
