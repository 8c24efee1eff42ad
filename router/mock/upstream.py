"""A fake upstream LLM server: the OpenAI, Anthropic, Gemini and Ollama APIs on one app.

One fake serves three audiences: the quickstart (a first chat completion with no
real provider or API key), the test suite (a real uvicorn server on a loopback
port whose behaviour tests change at runtime) and the benchmark (so it avoids
needless work: orjson, prebuilt bodies, no access log).

Each API lives in its own module (:mod:`~router.mock.openai`, :mod:`~router.mock.anthropic`,
:mod:`~router.mock.gemini`, :mod:`~router.mock.ollama`); they share one :class:`MockState`:
options, request log and :class:`~router.mock.faults.Faults`. Failures are injected with
``MockOptions.fail``: ``status:<code>``, ``hang``, ``stall``, ``disconnect``, ``truncate`` and
``error_event`` (see :mod:`router.mock.options`). This module adds the ``/_mock`` control
endpoints, the server and its command line.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.mock.anthropic import anthropic_routes
from router.mock.faults import JSON, install_log_filter
from router.mock.faults import MockDisconnect as MockDisconnect
from router.mock.gemini import gemini_routes
from router.mock.ollama import ollama_routes
from router.mock.openai import openai_error, openai_routes
from router.mock.options import OPTION_FIELDS, TOOL_CALL_MODES, parse_fail
from router.mock.options import MockOptions as MockOptions
from router.mock.options import ReceivedRequest as ReceivedRequest
from router.mock.state import MockState

HEALTH_BODY = orjson.dumps({"status": "ok"})


class MockUpstream(MockState):
    """The fake upstream: its state (options, request log, faults) and the app serving it."""

    def app(self) -> Starlette:
        """A Starlette app serving every format's endpoints and the /_mock control endpoints."""
        install_log_filter()
        return Starlette(
            routes=[
                # Anthropic's first: it shares GET /v1/models with OpenAI and hands those back.
                *anthropic_routes(self),
                *gemini_routes(self),
                *ollama_routes(self),
                *openai_routes(self),
                Route("/health", self._health, methods=["GET"]),
                Route("/_mock/options", self._control_options, methods=["GET", "POST"]),
                Route("/_mock/requests", self._control_requests, methods=["GET", "DELETE"]),
            ]
        )

    async def _health(self, request: Request) -> Response:
        return Response(HEALTH_BODY, media_type=JSON)

    async def _control_options(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                patch = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return openai_error(400, "The request body must be JSON.")
            if not isinstance(patch, dict):
                return openai_error(
                    400, "The request body must be a JSON object of MockOptions fields."
                )
            unknown = sorted(set(patch) - OPTION_FIELDS)
            if unknown:
                return openai_error(
                    400, f"Unknown option(s): {', '.join(unknown)}.", param=unknown[0]
                )
            try:
                self.options = dataclasses.replace(self.options, **patch)
            except ValueError as exc:
                return openai_error(400, str(exc))
        return Response(orjson.dumps(self.options), media_type=JSON)

    async def _control_requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.requests.clear()
            return Response(status_code=204)
        return Response(orjson.dumps(self.requests), media_type=JSON)


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
        parse_fail(value)
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
    add(
        "--tool-calls",
        choices=TOOL_CALL_MODES,
        default=d.tool_calls,
        help="on-request: call a tool on the word mock-tool-call[:NAME] or a tool_choice that "
        "demands one; always: call the first tool on every user turn (default: %(default)s)",
    )


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
        tool_calls=getattr(ns, "tool_calls", "on-request"),
    )


def create_mock_app(options: MockOptions | None = None) -> Starlette:
    """A fresh fake upstream app; use MockUpstream directly to reach its state."""
    return MockUpstream(options).app()
