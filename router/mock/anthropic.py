"""The fake upstream's Anthropic side: ``POST /v1/messages`` and ``GET /v1/models``.

It shares the fake's :class:`~router.mock.state.MockState`: options, request log and faults
(``status:<code>``, ``hang``, ``disconnect``, ``truncate``, latency, chunk count and pacing), and
answers with the same words as the OpenAI fake, so tests drive both formats the same way. It
checks what the real API checks and the adapter must get right: the ``anthropic-version``
header, ``x-api-key`` (when ``api_key`` is set), a positive ``max_tokens``, only user and
assistant turns that alternate, and every ``tool_use`` answered by a ``tool_result`` in the next
turn. Errors come in Anthropic's shape, ``{"type": "error", "error": {"type", "message"}}``.

A tool call is answered when the request has ``tools`` and either ``tool_choice`` forces one
(``any`` or ``tool``), the last user message asks with ``mock-tool-call[:NAME]``
(:mod:`router.mock.tools`) or it names a tool; its input is built from the tool's schema
(strings "mock", numbers 1, booleans true). A turn that carries tool results gets text.

``POST /v1/messages/count_tokens`` counts words. ``GET /v1/models`` answers in Anthropic's list
shape when the request has ``anthropic-version``, and in OpenAI's otherwise (both APIs use that
path).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from router.mock.answers import answer_pieces, count_words
from router.mock.faults import BodyStream, json_reply
from router.mock.openai import OpenAIFake
from router.mock.options import CUT_SHORT, MockOptions
from router.mock.state import MockState
from router.mock.tools import requested_tool, sample_input

MODELS = ("mock-claude",)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error in Anthropic's shape, its type chosen by the status."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": f"req_mock_{uuid.uuid4().hex[:16]}",
    }
    return Response(orjson.dumps(body), status, headers, "application/json")


def _injected_error(status: int) -> Response:
    note = f"(mock upstream, fail=status:{status})"
    if status == 529:
        return anthropic_error(529, f"Overloaded {note}")
    if status == 429:
        return anthropic_error(429, f"Rate limit reached {note}.", {"retry-after": "1"})
    return anthropic_error(status, f"Request refused {note}.")


def anthropic_routes(state: MockState) -> list[Route]:
    """The routes of the fake sharing ``state`` (to add before the OpenAI ``/v1/models``)."""
    fake = _AnthropicFake(state)
    return [
        Route("/v1/messages", fake.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", fake.count_tokens, methods=["POST"]),
        Route("/v1/models", fake.models, methods=["GET"]),
    ]


class _AnthropicFake:
    def __init__(self, state: MockState) -> None:
        self.state = state
        self.openai = OpenAIFake(state)

    async def _accept(self, request: Request, opts: MockOptions) -> dict[str, Any] | Response:
        """Log the request, check headers and key; return its JSON object body or an error."""
        body = await self.state.record(request)
        if not request.headers.get("anthropic-version"):
            return anthropic_error(400, "anthropic-version: header is required")
        if opts.api_key is not None and request.headers.get("x-api-key") != opts.api_key:
            return anthropic_error(401, "invalid x-api-key")
        if request.method == "GET":
            return {}
        if not isinstance(body, dict):
            return anthropic_error(400, "The request body must be a JSON object.")
        return body

    async def models(self, request: Request) -> Response:
        if "anthropic-version" not in request.headers:
            return await self.openai.models(request)
        accepted = await self._accept(request, self.state.options)
        if isinstance(accepted, Response):
            return accepted
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in MODELS
        ]
        page = {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
        return Response(orjson.dumps(page), media_type="application/json")

    async def messages(self, request: Request) -> ASGIApp:
        opts = self.state.options
        body = await self._accept(request, opts)
        if isinstance(body, Response):
            return body
        problem = _check_request(body)
        if problem:
            return anthropic_error(400, problem)
        answer = _Answer(body, opts)
        if body.get("stream") is True:
            delay = opts.chunk_delay_ms / 1000
            return await self._deliver(request, opts, lambda kind: answer.stream(kind, delay))
        return await self._deliver(request, opts, lambda kind: json_reply(answer.message(), kind))

    async def count_tokens(self, request: Request) -> Response:
        """``POST /v1/messages/count_tokens``: the words of the messages and the system text."""
        body = await self._accept(request, self.state.options)
        if isinstance(body, Response):
            return body
        problem = _check_request({**body, "max_tokens": 1})
        if problem:
            return anthropic_error(400, problem)
        system = body.get("system")
        words = count_words(body["messages"]) + (
            len(system.split()) if isinstance(system, str) else 0
        )
        return Response(orjson.dumps({"input_tokens": words}), media_type="application/json")

    async def _deliver(
        self, request: Request, opts: MockOptions, reply: Callable[[str], ASGIApp]
    ) -> ASGIApp:
        return await self.state.faults.deliver(
            request,
            opts,
            reply,
            refuse=_injected_error,
            hung=lambda: anthropic_error(529, "The mock upstream stopped waiting (fail=hang)."),
        )


def _check_request(body: dict[str, Any]) -> str | None:
    """What the real API would refuse in ``body``, as its message; None when fine."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if type(max_tokens) is not int or max_tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    open_calls: set[str] = set()
    previous = None
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if role == previous:
            return f"messages.{i}: roles must alternate between 'user' and 'assistant'"
        previous = role
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            return f"messages.{i}.content: must be a non-empty string or list of blocks"
        if not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks):
            return f"messages.{i}.content: every block must be an object with a 'type'"
        answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if open_calls - answered:
            return (
                f"messages.{i}: tool_use ids were found without tool_result blocks immediately "
                f"after: {', '.join(sorted(open_calls - answered))}"
            )
        open_calls = {b["id"] for b in blocks if b.get("type") == "tool_use"}
        for block in blocks:
            if block.get("type") == "text" and not block.get("text"):
                return f"messages.{i}: text content blocks must be non-empty"
    return None


def _tool_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name")]
    choice = body.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {}
    last = body["messages"][-1]
    content = last["content"]
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not tools or last["role"] != "user" or choice.get("type") == "none":
        return None
    if any(b.get("type") == "tool_result" for b in blocks):
        return None
    if choice.get("type") == "any":
        return tools[0]
    if choice.get("type") == "tool":
        return next((t for t in tools if t["name"] == choice.get("name")), None)
    said = " ".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    asked = requested_tool(said, [t["name"] for t in tools])
    if asked is not None:
        return next(t for t in tools if t["name"] == asked)
    return next((t for t in tools if t["name"] in said), None)


class _Answer:
    """One deterministic answer, as a whole message or as its event stream."""

    def __init__(self, body: dict[str, Any], opts: MockOptions) -> None:
        pieces = answer_pieces(opts.chunks)
        self.stop_reason = "end_turn"
        self.stop_sequence: str | None = None
        stops = body.get("stop_sequences") or []
        for i, piece in enumerate(pieces):
            if piece.strip() in stops:
                pieces, self.stop_reason, self.stop_sequence = pieces[:i], "stop_sequence", piece
                break
        if body["max_tokens"] < len(pieces):
            pieces, self.stop_reason = pieces[: body["max_tokens"]], "max_tokens"
        self.pieces = pieces
        self.tool: dict[str, Any] | None = None
        tool = _tool_to_call(body) if self.stop_reason == "end_turn" else None
        if tool is not None:
            self.stop_reason = "tool_use"
            self.tool = {
                "type": "tool_use",
                "id": f"toolu_mock_{uuid.uuid4().hex[:20]}",
                "name": tool["name"],
                "input": sample_input(tool.get("input_schema")),
            }
        system = body.get("system")
        system_words = len(system.split()) if isinstance(system, str) else 0
        self.input_tokens = count_words(body["messages"]) + system_words
        self.output_tokens = len(pieces) + (1 if self.tool else 0)
        self.head = {
            "id": f"msg_mock_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": opts.model_prefix + body["model"],
        }

    def message(self) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if self.pieces:
            content.append({"type": "text", "text": "".join(self.pieces)})
        if self.tool:
            content.append(self.tool)
        return {
            **self.head,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }

    def stream(self, kind: str, delay: float) -> ASGIApp:
        def event(data: dict[str, Any]) -> bytes:
            name = str(data["type"]).encode()
            return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"

        usage = {"input_tokens": self.input_tokens, "output_tokens": 1}
        started = {**self.head, "content": [], "stop_reason": None, "stop_sequence": None}
        events = [event({"type": "message_start", "message": {**started, "usage": usage}})]
        events.append(event({"type": "ping"}))
        events.append(
            event(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            )
        )
        first_delta = len(events)
        broken = kind in CUT_SHORT
        for piece in self.pieces[: len(self.pieces) // 2] if broken else self.pieces:
            delta = {"type": "text_delta", "text": piece}
            events.append(event({"type": "content_block_delta", "index": 0, "delta": delta}))
        paced = range(first_delta, len(events))
        if not broken:
            events.append(event({"type": "content_block_stop", "index": 0}))
            if self.tool:
                events.extend(self._tool_events(event))
            stop = {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence}
            final = {"output_tokens": self.output_tokens}
            events.append(event({"type": "message_delta", "delta": stop, "usage": final}))
            events.append(event({"type": "message_stop"}))
        elif kind == "error_event":
            # What Anthropic sends when it is overloaded after the answer began.
            error = {"type": "overloaded_error", "message": "Overloaded (mock upstream)"}
            events.append(event({"type": "error", "error": error}))
        return BodyStream(events, paced, delay, abort=kind == "disconnect")

    def _tool_events(self, event: Callable[[dict[str, Any]], bytes]) -> list[bytes]:
        assert self.tool is not None
        started = {**self.tool, "input": {}}
        arguments = orjson.dumps(self.tool["input"]).decode()
        half = len(arguments) // 2
        events = [event({"type": "content_block_start", "index": 1, "content_block": started})]
        for part in ("", arguments[:half], arguments[half:]):
            delta = {"type": "input_json_delta", "partial_json": part}
            events.append(event({"type": "content_block_delta", "index": 1, "delta": delta}))
        events.append(event({"type": "content_block_stop", "index": 1}))
        return events
