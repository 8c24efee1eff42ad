"""End to end: the openai SDK -> the proxy (uvicorn) -> the fake Ollama (uvicorn), over sockets."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from providers.base import AdapterOptions
from providers.ollama.adapter import OllamaAdapter
from router.app import create_app
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import ADMIN, ADMIN_TOKEN, add_provider, last_request, make_settings, serve_asgi

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


@contextlib.asynccontextmanager
async def setup(
    tmp_path: Path, *upstreams: MockUpstream, openai_last: bool = False
) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient, Any]]:
    """The proxy with one ``ollama`` provider per fake (priority falling in order), all serving
    model "local" as "llama3.2"; yields the SDK client, a management client and the app.

    ``openai_last`` adds an ``openai`` provider "openai-1" on the first fake's OpenAI side, last.
    """
    app = create_app(make_settings(tmp_path))
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serve_asgi(u.app())) for u in upstreams]
        url = await stack.enter_async_context(serve_asgi(app))
        manage = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=10))
        for n, upstream_url in enumerate(urls):
            provider_id = f"ollama-{n + 1}"
            await add_provider(
                manage,
                provider_id,
                upstream_url,
                type="ollama",
                priority=len(urls) - n,
                config={"keepAlive": 60_000},
            )
            linked = await manage.post(
                f"/v1/providers/{provider_id}/models",
                json={"model_id": "local", "upstream_model": "llama3.2"},
                headers=ADMIN,
            )
            assert linked.status_code == 201, linked.text
        if openai_last:
            await add_provider(manage, "openai-1", f"{urls[0]}/v1", ["local"], priority=0)
        sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=ADMIN_TOKEN, max_retries=0)
        try:
            yield sdk, manage, app
        finally:
            await sdk.close()


async def test_a_chat_completion_plain_and_streamed(tmp_path: Path) -> None:
    upstream = MockUpstream(MockOptions(chunks=4))
    async with setup(tmp_path, upstream) as (sdk, manage, app):
        reply = await sdk.chat.completions.create(
            model="local", messages=HELLO, max_tokens=10, temperature=0.5
        )
        row = await last_request(manage, app)
        chunks = [
            chunk
            async for chunk in await sdk.chat.completions.create(
                model="local",
                messages=HELLO,
                stream=True,
                stream_options={"include_usage": True},
            )
        ]

    assert reply.model == "local"
    assert reply.choices[0].message.content == "mock reply alpha bravo"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 4)
    assert (row["status"], row["provider_id"], row["total_tokens"]) == ("success", "ollama-1", 6)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock reply alpha bravo"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6

    plain, streamed = (r.json for r in upstream.requests)
    assert plain == {
        "model": "llama3.2",
        "messages": HELLO,
        "stream": False,
        "options": {"num_predict": 10, "temperature": 0.5},
        "keep_alive": "60000ms",
    }
    assert streamed["stream"] is True
    assert [r.path for r in upstream.requests] == ["/api/chat", "/api/chat"]
    assert upstream.requests[0].headers["authorization"] == "Bearer sk-upstream-ollama-1"


async def test_max_tokens_cut_is_finish_reason_length(tmp_path: Path) -> None:
    async with setup(tmp_path, MockUpstream(MockOptions(chunks=6))) as (sdk, _, _app):
        reply = await sdk.chat.completions.create(model="local", messages=HELLO, max_tokens=2)
    assert reply.choices[0].message.content == "mock reply"
    assert reply.choices[0].finish_reason == "length"


async def test_a_tool_call_and_its_result_round_trip(tmp_path: Path) -> None:
    upstream = MockUpstream()
    ask: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Use the tool for Paris"}]
    async with setup(tmp_path, upstream) as (sdk, _, _app):
        reply = await sdk.chat.completions.create(model="local", messages=ask, tools=[WEATHER_TOOL])
        stream = await sdk.chat.completions.create(
            model="local", messages=ask, tools=[WEATHER_TOOL], stream=True
        )
        deltas = [c.choices[0] async for c in stream if c.choices]
        calls = reply.choices[0].message.tool_calls or []
        call = calls[0]
        assert isinstance(call, ChatCompletionMessageFunctionToolCall)
        follow_up: Any = [
            *ask,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
        ]
        final = await sdk.chat.completions.create(
            model="local", messages=follow_up, tools=[WEATHER_TOOL]
        )

    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"query": "Use the tool for Paris"}
    assert call.id.startswith("call_")

    streamed_calls = [tc for d in deltas for tc in d.delta.tool_calls or []]
    assert len(streamed_calls) == 1 and streamed_calls[0].index == 0
    assert streamed_calls[0].function is not None
    assert streamed_calls[0].function.name == "get_weather"
    assert deltas[-1].finish_reason == "tool_calls"

    assert final.choices[0].message.content == "mock reply alpha bravo charlie"
    sent = upstream.requests[-1].json
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "function": {
                        "name": "get_weather",
                        "arguments": {"query": "Use the tool for Paris"},
                    }
                }
            ],
        },
        {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"},
    ]


async def test_embeddings_through_the_sdk(tmp_path: Path) -> None:
    upstream = MockUpstream()
    async with setup(tmp_path, upstream) as (sdk, _, _app):
        # The SDK asks for base64 unless told otherwise, and decodes it.
        packed = await sdk.embeddings.create(model="local", input=["one two", "three"])
        floats = await sdk.embeddings.create(
            model="local", input="one two", encoding_format="float"
        )

    assert len(packed.data) == 2 and len(packed.data[0].embedding) == 8
    assert packed.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert floats.usage.prompt_tokens == 2 and packed.usage.total_tokens == 3
    assert upstream.requests[0].path == "/api/embed"
    assert upstream.requests[0].json["input"] == ["one two", "three"]


async def test_a_failing_ollama_falls_back_to_the_next_provider(tmp_path: Path) -> None:
    failing = MockUpstream(MockOptions(fail="status:503"))
    healthy = MockUpstream()
    async with setup(tmp_path, failing, healthy) as (sdk, manage, app):
        reply = await sdk.chat.completions.create(model="local", messages=HELLO)
        row = await last_request(manage, app)
        streamed = [
            c
            async for c in await sdk.chat.completions.create(
                model="local", messages=HELLO, stream=True
            )
        ]

    assert reply.choices[0].message.content == "mock reply alpha bravo charlie"
    first, second = row["attempt_details"]
    assert (first["provider_id"], first["status_code"]) == ("ollama-1", 503)
    assert "fail=status:503" in first["error"]
    assert (second["provider_id"], second["status"]) == ("ollama-2", "success")
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
        "mock reply alpha bravo charlie"
    )
    assert len(failing.requests) == 2 and len(healthy.requests) == 2


@pytest.mark.parametrize(("fail", "reason"), [("disconnect", "broken"), ("truncate", "done")])
async def test_a_stream_broken_mid_way_is_an_error_for_the_client(
    tmp_path: Path, fail: str, reason: str
) -> None:
    upstream = MockUpstream(MockOptions(fail=fail, chunks=6))
    async with setup(tmp_path, upstream) as (sdk, manage, app):
        received: list[str] = []
        with pytest.raises(openai.APIError, match="stream broke off"):
            async for chunk in await sdk.chat.completions.create(
                model="local", messages=HELLO, stream=True
            ):
                received.append(chunk.choices[0].delta.content or "")
        row = await last_request(manage, app)

    assert "".join(received) == "mock reply alpha"
    assert (row["status"], row["status_code"]) == ("error", 502)
    assert reason in row["error"]
    assert row["attempt_details"][0]["status"] == "error"


async def test_an_ollama_error_answer_reaches_the_client_in_openai_shape(tmp_path: Path) -> None:
    upstream = MockUpstream(MockOptions(api_key="right-key"))
    async with setup(tmp_path, upstream) as (sdk, _, _app):
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk.chat.completions.create(model="local", messages=HELLO)
    assert caught.value.status_code == 401
    assert caught.value.body == {
        "message": "Incorrect API key provided.",
        "type": "authentication_error",
        "param": None,
        "code": "invalid_api_key",
    }


async def test_the_adapter_lists_the_fake_models(tmp_path: Path) -> None:
    upstream = MockUpstream()
    async with serve_asgi(upstream.app()) as url:
        adapter = OllamaAdapter("oll", {"baseURL": url}, AdapterOptions())
        try:
            assert await adapter.list_models() == ["mock-llama:latest"]
        finally:
            await adapter.aclose()
    assert upstream.requests[0].path == "/api/tags"


async def test_an_image_url_ollama_cannot_take_goes_to_a_provider_that_can(
    tmp_path: Path,
) -> None:
    upstream = MockUpstream()  # serves both formats: /api/chat and /v1/chat/completions
    image: list[ChatCompletionMessageParam] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}},
            ],
        }
    ]
    async with setup(tmp_path, upstream, openai_last=True) as (sdk, manage, app):
        reply = await sdk.chat.completions.create(model="local", messages=image)
        row = await last_request(manage, app)

    assert reply.choices[0].message.content == "mock reply alpha bravo charlie"
    first, second = row["attempt_details"]
    assert first["provider_id"] == "ollama-1" and "send a data: URL" in first["error"]
    assert second["provider_id"] == "openai-1" and second["status"] == "success"
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"]
