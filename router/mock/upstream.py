"""A fake upstream LLM server that speaks the OpenAI HTTP API.

One fake serves three audiences: the quickstart (a first chat completion with no
real provider or API key), the test suite (a real uvicorn server on a loopback
port whose behaviour tests change at runtime) and the benchmark (so it avoids
needless work: orjson, prebuilt bodies, no access log).

Answers are deterministic: ``chunks`` words ("mock reply alpha ..."), identical
whether streamed or not; a request with tools whose last user turn says ``mock-tool-call`` or
``mock-tool-call:NAME`` gets a tool call instead (:mod:`router.mock.tools`). Failures are
injected with ``MockOptions.fail``: ``status:<code>``, ``hang``, ``stall``, ``disconnect`` and
``truncate`` (see :mod:`router.mock.faults`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import hashlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive

from router.mock.faults import (
    _JSON,
    CUT_SHORT,
    HANG_SECONDS,
    _error,
    _EventStream,
    _injected_error,
    _install_log_filter,
    _is_number,
    _json_reply,
    _parse_fail,
    _resolve,
    _wait_for_disconnect,
)
from router.mock.faults import MockDisconnect as MockDisconnect
from router.mock.tools import openai_tool_answer, openai_tool_call

_WORDS = ("mock", "reply", "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf")
_DONE = b"data: [DONE]\n\n"
_MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": "mock-gpt", "object": "model", "created": 0, "owned_by": "mock"}],
    }
)
_HEALTH_BODY = orjson.dumps({"status": "ok"})


@dataclass
class MockOptions:
    """Behaviour of the fake upstream; validated on construction."""

    latency_ms: float = 0
    chunks: int = 5
    chunk_delay_ms: float = 0
    fail: str = "none"
    fail_rate: float = 1.0
    # Prepended to the requested model in answers, like providers that report a
    # resolved name ("gpt-4o" -> "gpt-4o-2024-08-06").
    model_prefix: str = ""
    api_key: str | None = None
    # The Retry-After a fail=status:429 answer carries, in seconds; null sends none.
    retry_after_s: float | None = 1

    def __post_init__(self) -> None:
        for name in ("latency_ms", "chunk_delay_ms"):
            if not _is_number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number >= 0")
        if type(self.chunks) is not int or self.chunks < 1:
            raise ValueError("chunks must be an integer >= 1")
        if not _is_number(self.fail_rate, high=1.0):
            raise ValueError("fail_rate must be a number between 0 and 1")
        _parse_fail(self.fail)
        if not isinstance(self.model_prefix, str):
            raise ValueError("model_prefix must be a string")
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise ValueError("api_key must be a string or null")
        if self.retry_after_s is not None and not _is_number(self.retry_after_s):
            raise ValueError("retry_after_s must be a finite number >= 0 or null")


_OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(MockOptions))


@dataclass
class ReceivedRequest:
    """One request the fake received (control endpoints and /health excluded)."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    json: Any  # parsed body, or None when absent or not JSON


@functools.lru_cache(maxsize=64)
def _answer_pieces(n: int) -> tuple[str, ...]:
    # Leading spaces, like real tokens, so a cut answer ("mock reply") stays tidy.
    words = [_WORDS[i % len(_WORDS)] for i in range(n)]
    return (words[0], *(" " + w for w in words[1:]))


def _count_words(messages: list[Any]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(part["text"].split())
    return max(total, 1)


def _embed(text: str) -> list[float]:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return [round(b / 127.5 - 1.0, 6) for b in digest]


class MockUpstream:
    """The fake's mutable state: ``options`` (replaceable at runtime) and the request log."""

    def __init__(
        self,
        options: MockOptions | None = None,
        *,
        seed: int | None = None,
        log_limit: int = 10_000,
    ) -> None:
        self.options = options if options is not None else MockOptions()
        self.requests: list[ReceivedRequest] = []
        self.log_limit = log_limit  # the benchmark sends far more requests than anyone reads
        self._random = random.Random(seed)
        self._hangs: set[asyncio.Future[None]] = set()

    def app(self) -> Starlette:
        """A Starlette app serving every format's endpoints and the /_mock control endpoints."""
        # These modules import this one, so they are imported late.
        from router.mock.anthropic import anthropic_routes
        from router.mock.gemini import gemini_routes
        from router.mock.ollama import ollama_routes

        _install_log_filter()
        return Starlette(
            routes=[
                # Anthropic's first: it shares GET /v1/models with OpenAI and hands those back.
                *anthropic_routes(self),
                *gemini_routes(self),
                *ollama_routes(self),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/_mock/options", self._control_options, methods=["GET", "POST"]),
                Route("/_mock/requests", self._control_requests, methods=["GET", "DELETE"]),
            ]
        )

    def release_hangs(self) -> int:
        """Make requests held by ``fail="hang"`` answer 503 now; return how many.

        Safe to call from any thread; MockServer calls it when shutting down.
        """
        hangs = list(self._hangs)
        for future in hangs:
            future.get_loop().call_soon_threadsafe(_resolve, future)
        return len(hangs)

    async def _accept(self, request: Request, opts: MockOptions) -> dict[str, Any] | Response:
        """Log the request, check the key, and return its JSON object body or an error."""
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if self.log_limit > 0:
            if len(self.requests) >= self.log_limit:
                del self.requests[: max(1, self.log_limit // 10)]  # amortised trimming
            self.requests.append(
                ReceivedRequest(request.method, request.url.path, dict(request.headers), body)
            )
        if opts.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {opts.api_key}"
        ):
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        if request.method == "GET":
            return {}
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "You must provide a model parameter.", param="model")
        return body

    async def _deliver(
        self, request: Request, opts: MockOptions, reply: Callable[[str], ASGIApp]
    ) -> ASGIApp:
        """Apply latency and the failure mode; ``reply(kind)`` builds the answer otherwise."""
        kind, status = "none", 0
        if opts.fail != "none" and self._random.random() < opts.fail_rate:
            kind, status = _parse_fail(opts.fail)
        if kind == "hang":
            return await self._hang(request.receive)
        if opts.latency_ms:
            await asyncio.sleep(opts.latency_ms / 1000)
        if kind == "status":
            return _injected_error(status, opts.retry_after_s)
        return reply(kind)

    async def _hang(self, receive: Receive) -> Response:
        # Ends when the client goes away (so a timed-out client frees the server) or when
        # release_hangs() runs (so a server stop does not wait on a connected client).
        released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hangs.add(released)
        gone = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait(
                (released, gone), timeout=HANG_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._hangs.discard(released)
            gone.cancel()
        return _error(503, "The mock upstream stopped waiting (fail=hang).", code="mock_hang")

    async def _chat(self, request: Request) -> ASGIApp:
        opts = self.options
        body = await self._accept(request, opts)
        if isinstance(body, Response):
            return body
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
        ):
            return _error(
                400, "'messages' must be a non-empty array of messages.", param="messages"
            )
        pieces, finish = _answer_pieces(opts.chunks), "stop"
        for name in ("max_completion_tokens", "max_tokens"):
            limit = body.get(name)
            if limit is None:
                continue
            if type(limit) is not int or limit < 1:
                return _error(400, f"'{name}' must be a positive integer.", param=name)
            if limit < len(pieces):
                pieces, finish = pieces[:limit], "length"
        prompt = _count_words(messages)
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
        call = openai_tool_call(body)
        if call is not None:
            return await self._deliver(request, opts, _tool_answer(body, head, call, prompt, opts))
        if body.get("stream") is True:
            options = body.get("stream_options")
            with_usage = isinstance(options, dict) and options.get("include_usage") is True
            delay = opts.chunk_delay_ms / 1000
            return await self._deliver(
                request,
                opts,
                lambda kind: _chat_stream(head, pieces, finish, usage, with_usage, delay, kind),
            )
        message = {"role": "assistant", "content": "".join(pieces)}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        answer = {**head, "choices": [choice], "usage": usage}
        return await self._deliver(request, opts, lambda kind: _json_reply(answer, kind))

    async def _embeddings(self, request: Request) -> ASGIApp:
        opts = self.options
        body = await self._accept(request, opts)
        if isinstance(body, Response):
            return body
        given = body.get("input")
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _error(
                400, "'input' must be a string or a non-empty array of strings.", param="input"
            )
        tokens = max(1, sum(len(t.split()) for t in texts))
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _embed(t)}
                for i, t in enumerate(texts)
            ],
            "model": opts.model_prefix + body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return await self._deliver(request, opts, lambda kind: _json_reply(answer, kind))

    async def _models(self, request: Request) -> Response:
        refused = await self._accept(request, self.options)
        if isinstance(refused, Response):
            return refused
        return Response(_MODELS_BODY, media_type=_JSON)

    async def _health(self, request: Request) -> Response:
        return Response(_HEALTH_BODY, media_type=_JSON)

    async def _control_options(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                patch = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return _error(400, "The request body must be JSON.")
            if not isinstance(patch, dict):
                return _error(400, "The request body must be a JSON object of MockOptions fields.")
            unknown = sorted(set(patch) - _OPTION_FIELDS)
            if unknown:
                return _error(400, f"Unknown option(s): {', '.join(unknown)}.", param=unknown[0])
            try:
                self.options = dataclasses.replace(self.options, **patch)
            except ValueError as exc:
                return _error(400, str(exc))
        return Response(orjson.dumps(self.options), media_type=_JSON)

    async def _control_requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.requests.clear()
            return Response(status_code=204)
        return Response(orjson.dumps(self.requests), media_type=_JSON)


def _tool_answer(
    body: dict[str, Any],
    head: dict[str, Any],
    call: dict[str, Any],
    prompt: int,
    opts: MockOptions,
) -> Callable[[str], ASGIApp]:
    """Builds the answer to a request that asked for a tool call (router/mock/tools.py)."""
    options = body.get("stream_options")
    with_usage = isinstance(options, dict) and options.get("include_usage") is True
    stream = body.get("stream") is True
    delay = opts.chunk_delay_ms / 1000
    return functools.partial(openai_tool_answer, head, call, prompt, stream, with_usage, delay)


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
        events.append(_DONE)
    return _EventStream(events, paced, delay, abort=kind == "disconnect", stall=kind == "stall")


class MockServer(uvicorn.Server):
    """uvicorn server for a MockUpstream: prints where it listens, releases hangs on stop."""

    def __init__(self, config: uvicorn.Config, upstream: MockUpstream) -> None:
        super().__init__(config)
        self.upstream = upstream

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            root = f"http://{host}:{port}"
            print(
                f"mock upstream listening on {root}; baseURL for openai: {root}/v1, "
                f"anthropic: {root}, gemini: {root}/v1beta, ollama: {root}",
                flush=True,
            )

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        # uvicorn waits for in-flight requests; a hang would otherwise keep it waiting.
        self.upstream.release_hangs()
        await super().shutdown(sockets)


def run_mock_upstream(host: str, port: int, options: MockOptions) -> None:
    """Serve a MockUpstream with uvicorn until interrupted (blocking)."""
    upstream = MockUpstream(options)
    config = uvicorn.Config(
        upstream.app(),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    MockServer(config, upstream).run()


def _fail_arg(value: str) -> str:
    try:
        _parse_fail(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def add_mock_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the fake upstream's command-line options to ``parser``."""
    d = MockOptions()
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    add("--port", type=int, default=9000, help="port to listen on (default: %(default)s)")
    add("--latency-ms", type=float, default=d.latency_ms, help="delay before the first byte")
    add("--chunks", type=int, default=d.chunks, help="words in an answer (default: %(default)s)")
    add("--chunk-delay-ms", type=float, default=d.chunk_delay_ms, help="delay between chunks")
    add(
        "--fail",
        type=_fail_arg,
        default=d.fail,
        help="none, hang, stall, disconnect, truncate, error_event, status:<code>",
    )
    add("--fail-rate", type=float, default=d.fail_rate, help="fraction of requests that fail")
    add("--model-prefix", default=d.model_prefix, help="prepended to the model name in answers")
    add("--api-key", default=d.api_key, help="require 'Authorization: Bearer <key>'")


def options_from_args(ns: argparse.Namespace) -> MockOptions:
    """Build MockOptions from arguments added by add_mock_arguments (ValueError if invalid)."""
    return MockOptions(
        latency_ms=ns.latency_ms,
        chunks=ns.chunks,
        chunk_delay_ms=ns.chunk_delay_ms,
        fail=ns.fail,
        fail_rate=ns.fail_rate,
        model_prefix=getattr(ns, "model_prefix", ""),
        api_key=ns.api_key,
    )


def create_mock_app(options: MockOptions | None = None) -> Starlette:
    """A fresh fake upstream app; use MockUpstream directly to reach its state."""
    return MockUpstream(options).app()
