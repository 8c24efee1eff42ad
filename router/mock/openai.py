"""The OpenAI API on the fake upstream: ``/v1/chat/completions``, ``/v1/embeddings``,
``/v1/models``.

Answers are deterministic: ``chunks`` words ("mock reply alpha ..."), identical whether streamed
or not; a request with tools whose last user turn says ``mock-tool-call`` or
``mock-tool-call:NAME`` gets a tool call instead (:mod:`router.mock.tools`); errors come in
OpenAI's shape. The Ollama fake reuses :func:`accept` (its API checks the
same ``Authorization`` header) and the Anthropic fake hands plain ``GET /v1/models`` back here.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from router.mock.answers import answer_pieces, count_words, embed
from router.mock.faults import JSON, BodyStream, json_reply
from router.mock.options import CUT_SHORT, MockOptions
from router.mock.state import MockState
from router.mock.tools import openai_tool_answer, openai_tool_call

DONE = b"data: [DONE]\n\n"
MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": "mock-gpt", "object": "model", "created": 0, "owned_by": "mock"}],
    }
)


def openai_error(
    status: int,
    message: str,
    *,
    kind: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error in OpenAI's shape."""
    if kind is None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(orjson.dumps(body), status, headers, JSON)


def injected_error(status: int, retry_after: float | None = 1) -> Response:
    """The answer to ``fail=status:<status>``, in OpenAI's shape."""
    note = f"(mock upstream, fail=status:{status})"
    headers = None if retry_after is None else {"retry-after": f"{retry_after:g}"}
    if status == 429:
        return openai_error(
            429,
            f"Rate limit reached {note}.",
            kind="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if status >= 500:
        return openai_error(status, f"The server had an error processing your request {note}.")
    return openai_error(status, f"Request refused {note}.")


def hang_error() -> Response:
    """The answer a request held by ``fail=hang`` gets when it is released."""
    return openai_error(503, "The mock upstream stopped waiting (fail=hang).", code="mock_hang")


async def accept(
    state: MockState, request: Request, opts: MockOptions
) -> dict[str, Any] | Response:
    """Log the request, check the key, and return its JSON object body or an error."""
    body = await state.record(request)
    if opts.api_key is not None and request.headers.get("authorization") != (
        f"Bearer {opts.api_key}"
    ):
        return openai_error(401, "Incorrect API key provided.", code="invalid_api_key")
    if request.method == "GET":
        return {}
    if not isinstance(body, dict):
        return openai_error(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return openai_error(400, "You must provide a model parameter.", param="model")
    return body


async def deliver(state: MockState, request: Request, opts: MockOptions, reply: Any) -> ASGIApp:
    """:meth:`Faults.deliver <router.mock.faults.Faults.deliver>` with OpenAI's error shapes."""
    return await state.faults.deliver(
        request,
        opts,
        reply,
        refuse=lambda status: injected_error(status, opts.retry_after_s),
        hung=hang_error,
    )


def openai_routes(state: MockState) -> list[Route]:
    """The OpenAI endpoints of the fake sharing ``state``."""
    fake = OpenAIFake(state)
    return [
        Route("/v1/chat/completions", fake.chat, methods=["POST"]),
        Route("/v1/embeddings", fake.embeddings, methods=["POST"]),
        Route("/v1/models", fake.models, methods=["GET"]),
    ]


def _token_ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(type(t) is int and 0 <= t < 2**31 for t in value)
    )


def embedding_input(given: Any) -> tuple[list[str] | None, int]:
    """The texts to embed and their token count, from any ``input`` OpenAI accepts: a string,
    strings, one array of token ids, or arrays of them (what LangChain sends by default; a
    token array is embedded as the text of its ids). ``(None, 0)`` for anything else."""
    if isinstance(given, str):
        return [given], max(1, len(given.split()))
    if _token_ids(given):
        return [" ".join(map(str, given))], len(given)
    if not isinstance(given, list) or not given:
        return None, 0
    if all(isinstance(t, str) for t in given):
        return given, max(1, sum(len(t.split()) for t in given))
    if all(_token_ids(t) for t in given):
        return [" ".join(map(str, t)) for t in given], sum(len(t) for t in given)
    return None, 0


class OpenAIFake:
    """The OpenAI endpoint handlers over one :class:`MockState`."""

    def __init__(self, state: MockState) -> None:
        self.state = state

    async def chat(self, request: Request) -> ASGIApp:
        """``POST /v1/chat/completions``, streamed or not."""
        opts = self.state.options
        body = await accept(self.state, request, opts)
        if isinstance(body, Response):
            return body
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
        ):
            return openai_error(
                400, "'messages' must be a non-empty array of messages.", param="messages"
            )
        pieces, finish = answer_pieces(opts.chunks), "stop"
        for name in ("max_completion_tokens", "max_tokens"):
            limit = body.get(name)
            if limit is None:
                continue
            if type(limit) is not int or limit < 1:
                return openai_error(400, f"'{name}' must be a positive integer.", param=name)
            if limit < len(pieces):
                pieces, finish = pieces[:limit], "length"
        prompt = count_words(messages)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(pieces),
            "total_tokens": prompt + len(pieces),
        }
        head = {
            "id": f"chatcmpl-mock-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": opts.model_prefix + body["model"],
        }
        call = openai_tool_call(body, opts.tool_calls)
        if call is not None:
            options = body.get("stream_options")
            with_usage = isinstance(options, dict) and options.get("include_usage") is True
            stream, delay = body.get("stream") is True, opts.chunk_delay_ms / 1000
            return await deliver(
                self.state,
                request,
                opts,
                lambda kind: openai_tool_answer(
                    head, call, prompt, stream, with_usage, delay, kind
                ),
            )
        if body.get("stream") is True:
            options = body.get("stream_options")
            with_usage = isinstance(options, dict) and options.get("include_usage") is True
            delay = opts.chunk_delay_ms / 1000
            return await deliver(
                self.state,
                request,
                opts,
                lambda kind: _chat_stream(head, pieces, finish, usage, with_usage, delay, kind),
            )
        message = {"role": "assistant", "content": "".join(pieces)}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        answer = {**head, "choices": [choice], "usage": usage}
        return await deliver(self.state, request, opts, lambda kind: json_reply(answer, kind))

    async def embeddings(self, request: Request) -> ASGIApp:
        """``POST /v1/embeddings``."""
        opts = self.state.options
        body = await accept(self.state, request, opts)
        if isinstance(body, Response):
            return body
        texts, tokens = embedding_input(body.get("input"))
        if texts is None:
            return openai_error(
                400,
                "'input' must be a string, a non-empty array of strings, an array of token ids "
                "or a non-empty array of token-id arrays.",
                param="input",
            )
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": embed(t)}
                for i, t in enumerate(texts)
            ],
            "model": opts.model_prefix + body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return await deliver(self.state, request, opts, lambda kind: json_reply(answer, kind))

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``."""
        refused = await accept(self.state, request, self.state.options)
        if isinstance(refused, Response):
            return refused
        return Response(MODELS_BODY, media_type=JSON)


def _chat_stream(
    head: dict[str, Any],
    pieces: tuple[str, ...],
    finish: str,
    usage: dict[str, int],
    with_usage: bool,
    delay: float,
    kind: str,
) -> ASGIApp:
    choice: dict[str, Any] = {"index": 0, "delta": {"role": "assistant", "content": ""}}
    choice |= {"logprobs": None, "finish_reason": None}
    frame: dict[str, Any] = {**head, "object": "chat.completion.chunk", "choices": [choice]}
    if with_usage:
        frame["usage"] = None  # OpenAI sends an explicit null on every chunk but the last

    def event() -> bytes:
        return b"data: " + orjson.dumps(frame) + b"\n\n"

    events = [event()]
    broken = kind in CUT_SHORT or kind == "stall"
    for piece in pieces[: len(pieces) // 2] if broken else pieces:
        choice["delta"] = {"content": piece}
        events.append(event())
    paced = range(1, len(events))
    if not broken:
        choice["delta"], choice["finish_reason"] = {}, finish
        events.append(event())
        if with_usage:
            frame["choices"], frame["usage"] = [], usage
            events.append(event())
        events.append(DONE)
    return BodyStream(events, paced, delay, abort=kind == "disconnect", stall=kind == "stall")
