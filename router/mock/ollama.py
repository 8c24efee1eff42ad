"""Ollama's native API on the fake upstream: ``/api/chat``, ``/api/embed`` and ``/api/tags``.

These routes share the fake's :class:`~router.mock.state.MockState`: its
options (latency, ``chunks``, ``chunk_delay_ms``, ``fail``, ``api_key``) and its request log, so a
test drives them like the OpenAI routes. The answers are Ollama's: ``/api/chat`` streams
newline-delimited JSON unless the request says ``"stream": false`` (Ollama's default is to
stream), the last line carries ``"done": true``, the reason and the token counts, and errors are
``{"error": "..."}``. The words are the OpenAI fake's ("mock reply alpha ..."), so tests can
compare the two.

Failure modes: ``fail=truncate`` ends a stream without its ``done`` line (and cuts a JSON body in
half), ``fail=disconnect`` drops the connection half-way, ``status:N`` answers N in Ollama's form.

A tool call: when the request has ``tools`` and the last message is a user message that says
"tool", the answer calls the first tool with ``{"query": <that message>}``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from router.mock.answers import answer_pieces, count_words, embed
from router.mock.faults import BodyStream, json_reply
from router.mock.openai import accept, deliver
from router.mock.options import CUT_SHORT
from router.mock.state import MockState
from router.mock.tools import requested_tool

_NDJSON_HEADERS = [(b"content-type", b"application/x-ndjson")]
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_TAGS_BODY = orjson.dumps(
    {
        "models": [
            {
                "name": "mock-llama:latest",
                "model": "mock-llama:latest",
                "modified_at": "2026-01-01T00:00:00Z",
                "size": 1,
                "digest": "0" * 64,
                "details": {"format": "gguf", "family": "mock"},
            }
        ]
    }
)


def ollama_routes(state: MockState) -> list[Route]:
    """The Ollama routes of the fake sharing ``state``."""
    mock = _OllamaMock(state)
    return [
        Route("/api/chat", mock.chat, methods=["POST"]),
        Route("/api/embed", mock.embed, methods=["POST"]),
        Route("/api/tags", mock.tags, methods=["GET"]),
    ]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps({"error": message}), status, headers, "application/json")


def _as_ollama(reply: ASGIApp) -> ASGIApp:
    """Rewrite an OpenAI-shaped error of the shared code paths into Ollama's shape."""
    if not isinstance(reply, Response) or reply.status_code < 400:
        return reply
    try:
        message = orjson.loads(reply.body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = bytes(reply.body).decode("utf-8", "replace")
    retry_after = reply.headers.get("retry-after")
    headers = {"retry-after": retry_after} if retry_after else None
    return _error(reply.status_code, message, headers)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def _check_messages(messages: Any) -> str | None:
    """What is wrong with ``messages`` for Ollama, or None."""
    if not isinstance(messages, list):
        return "messages must be an array"
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return "each message needs a role of system, user, assistant or tool"
        if not isinstance(message.get("content", ""), str):
            return "message content must be a string"
        for image in message.get("images") or []:
            try:
                base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError, TypeError):
                return "invalid image input"
    return None


def _tool_call(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not messages:
        return None
    last = messages[-1]
    text = last.get("content") or ""
    if last.get("role") != "user" or "tool" not in text.lower():
        return None
    names = [str((t.get("function") or {}).get("name", "tool")) for t in tools]
    name = requested_tool(text, names) or names[0]
    return {"function": {"name": name, "arguments": {"query": text}}}


def _chat_stream(
    head: dict[str, Any],
    pieces: tuple[str, ...],
    call: dict[str, Any] | None,
    final: dict[str, Any],
    delay: float,
    kind: str,
) -> ASGIApp:
    def line(message: dict[str, Any], **extra: Any) -> bytes:
        return orjson.dumps({**head, "message": message, **extra}) + b"\n"

    broken = kind in CUT_SHORT
    lines = []
    if call is not None:
        lines.append(line({"role": "assistant", "content": "", "tool_calls": [call]}, done=False))
    else:
        for piece in pieces[: len(pieces) // 2] if broken else pieces:
            lines.append(line({"role": "assistant", "content": piece}, done=False))
    if not broken:
        lines.append(line({"role": "assistant", "content": ""}, **final))
    return BodyStream(
        lines, range(1, len(lines)), delay, abort=kind == "disconnect", headers=_NDJSON_HEADERS
    )


class _OllamaMock:
    def __init__(self, state: MockState) -> None:
        self.state = state

    async def chat(self, request: Request) -> ASGIApp:
        opts = self.state.options
        body = await accept(self.state, request, opts)
        if isinstance(body, Response):
            return _as_ollama(body)
        messages = body.get("messages")
        problem = _check_messages(messages)
        if problem is not None:
            return _error(400, problem)
        assert isinstance(messages, list)
        options = body.get("options") or {}
        if not isinstance(options, dict):
            return _error(400, "options must be an object")
        pieces, reason = answer_pieces(opts.chunks), "stop"
        limit = options.get("num_predict")
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(pieces):
            pieces, reason = pieces[:limit], "length"
        call = _tool_call(body, messages)
        if call is not None:
            pieces = ("",)
        head = {"model": opts.model_prefix + body["model"], "created_at": _now()}
        final = {
            "done": True,
            "done_reason": reason,
            "total_duration": 1_000_000,
            "prompt_eval_count": count_words(messages),
            "eval_count": len(pieces),
        }
        if body.get("stream", True) is not False:
            delay = opts.chunk_delay_ms / 1000
            reply = await deliver(
                self.state,
                request,
                opts,
                lambda kind: _chat_stream(head, pieces, call, final, delay, kind),
            )
            return _as_ollama(reply)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces)}
        if call is not None:
            message["tool_calls"] = [call]
        answer = {**head, "message": message, **final}
        reply = await deliver(self.state, request, opts, lambda kind: json_reply(answer, kind))
        return _as_ollama(reply)

    async def embed(self, request: Request) -> ASGIApp:
        opts = self.state.options
        body = await accept(self.state, request, opts)
        if isinstance(body, Response):
            return _as_ollama(body)
        given = body.get("input")
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(400, "invalid input type")
        answer = {
            "model": opts.model_prefix + body["model"],
            "embeddings": [embed(t) for t in texts],
            "total_duration": 1_000_000,
            "prompt_eval_count": max(1, sum(len(t.split()) for t in texts)),
        }
        reply = await deliver(self.state, request, opts, lambda kind: json_reply(answer, kind))
        return _as_ollama(reply)

    async def tags(self, request: Request) -> Response:
        refused = await accept(self.state, request, self.state.options)
        if isinstance(refused, Response):
            result = _as_ollama(refused)
            assert isinstance(result, Response)
            return result
        return Response(_TAGS_BODY, media_type="application/json")
