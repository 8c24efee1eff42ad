"""The ``openai`` type's Responses pass-through switch (``responsesAPI``), against a real
loopback upstream that breaks its stream off."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from providers.base import AdapterOptions, ChatStream
from providers.openai import RESPONSES_DIALECT, OpenAIAdapter
from router.errors import UpstreamProtocolError, UpstreamUnsupported
from tests.helpers import serve_asgi


def test_only_responses_api_true_makes_the_dialect_native() -> None:
    on = OpenAIAdapter(
        "p", {"baseURL": "http://127.0.0.1:9/v1", "responsesAPI": True}, AdapterOptions()
    )
    off = OpenAIAdapter("p", {"baseURL": "http://127.0.0.1:9/v1"}, AdapterOptions())
    assert on.native_dialects == {RESPONSES_DIALECT} and off.native_dialects == frozenset()
    problems = OpenAIAdapter.validate_config({"baseURL": "http://x/v1", "responsesAPI": "yes"})
    assert problems == ["Config key 'responsesAPI' must be true or false, got 'yes'."]


async def test_without_the_switch_the_adapter_refuses_to_pass_through() -> None:
    off = OpenAIAdapter("p", {"baseURL": "http://127.0.0.1:9/v1"}, AdapterOptions())
    with pytest.raises(UpstreamUnsupported):
        await off.send_native(RESPONSES_DIALECT, {"model": "m"}, "m", {}, stream=False)
    await off.aclose()


async def test_a_native_stream_without_a_terminal_event_raises() -> None:
    async def responses(request: Request) -> StreamingResponse:
        async def frames() -> AsyncIterator[bytes]:
            yield b'event: response.created\ndata: {"type":"response.created"}\n\n'

        return StreamingResponse(frames(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/responses", responses, methods=["POST"])])
    async with serve_asgi(app) as url:
        adapter = OpenAIAdapter(
            "p", {"baseURL": f"{url}/v1", "responsesAPI": True}, AdapterOptions()
        )
        try:
            stream = await adapter.send_native(
                RESPONSES_DIALECT, {"model": "m", "stream": True}, "up", {}, stream=True
            )
            assert isinstance(stream, ChatStream)
            seen = []
            with pytest.raises(UpstreamProtocolError, match="terminal event"):
                async for block in stream:
                    seen.append(block)
            assert seen == [b'event: response.created\ndata: {"type":"response.created"}\n\n']
        finally:
            await adapter.aclose()
