"""End to end: the openai SDK -> the proxy (uvicorn) -> the fake Gemini upstream (uvicorn)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from providers.base import AdapterOptions
from providers.gemini.adapter import GeminiAdapter
from router.app import create_app
from router.mock.answers import embed
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import ADMIN, ADMIN_TOKEN, add_provider, last_request, make_settings, serve_asgi

GEMINI_KEY = "AIza-e2e-upstream-key"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@dataclass
class Setup:
    upstream: MockUpstream
    upstream_url: str
    admin: httpx.AsyncClient
    client: openai.AsyncOpenAI
    app: Any


async def add_gemini(
    admin: httpx.AsyncClient, provider_id: str, url: str, key: str = GEMINI_KEY, **fields: Any
) -> None:
    config = {"baseURL": f"{url}/v1beta", "apiKey": key, "timeout": 5000}
    body = {"id": provider_id, "name": provider_id, "type": "gemini", "config": config, **fields}
    created = await admin.post("/v1/providers", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    for model, upstream_model in (("gem-chat", "gemini-mock"), ("gem-embed", "embedding-mock")):
        link = {"model_id": model, "upstream_model": upstream_model}
        linked = await admin.post(f"/v1/providers/{provider_id}/models", json=link, headers=ADMIN)
        assert linked.status_code == 201, linked.text


@contextlib.asynccontextmanager
async def setup(tmp_path: Path, **options: Any) -> AsyncIterator[Setup]:
    upstream = MockUpstream(MockOptions(api_key=GEMINI_KEY, **options))
    app = create_app(make_settings(tmp_path))
    async with (
        serve_asgi(upstream.app()) as upstream_url,
        serve_asgi(app) as proxy_url,
        httpx.AsyncClient(base_url=proxy_url, timeout=10) as admin,
    ):
        client = openai.AsyncOpenAI(
            base_url=f"{proxy_url}/v1", api_key=ADMIN_TOKEN, max_retries=0, timeout=10
        )
        try:
            yield Setup(upstream, upstream_url, admin, client, app)
        finally:
            await client.close()
            upstream.release_hangs()


async def test_chat_json_and_stream(tmp_path: Path) -> None:
    async with setup(tmp_path) as s:
        await add_gemini(s.admin, "gem", s.upstream_url)
        reply = await s.client.chat.completions.create(model="gem-chat", messages=HELLO)
        row = await last_request(s.admin, s.app)

        stream = await s.client.chat.completions.create(
            model="gem-chat",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

    assert reply.model == "gem-chat"
    assert reply.choices[0].message.content == "mock reply alpha bravo charlie"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 5)
    assert (row["status"], row["provider_id"], row["total_tokens"]) == ("success", "gem", 7)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock reply alpha bravo charlie"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5

    first, second = s.upstream.requests
    assert first.path == "/v1beta/models/gemini-mock:generateContent"
    assert second.path == "/v1beta/models/gemini-mock:streamGenerateContent"
    assert first.json == {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}
    for seen in (first, second):
        assert seen.headers["x-goog-api-key"] == GEMINI_KEY
        assert ADMIN_TOKEN not in str(seen.headers)


async def test_a_tool_call_round_trip_json_and_streamed(tmp_path: Path) -> None:
    async with setup(tmp_path) as s:
        await add_gemini(s.admin, "gem", s.upstream_url)
        ask: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "What is the weather in Paris?"}
        ]
        reply = await s.client.chat.completions.create(
            model="gem-chat",
            messages=ask,
            tools=[WEATHER],
            tool_choice="required",
        )
        stream = await s.client.chat.completions.create(
            model="gem-chat",
            messages=ask,
            tools=[WEATHER],
            tool_choice="required",
            stream=True,
        )
        chunks = [chunk async for chunk in stream]

        assert reply.choices[0].message.tool_calls
        call = reply.choices[0].message.tool_calls[0]
        assert call.type == "function"
        follow_up: list[ChatCompletionMessageParam] = [
            *ask,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": call.function.arguments,
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'},
        ]
        final = await s.client.chat.completions.create(
            model="gem-chat",
            messages=follow_up,
            tools=[WEATHER],
        )

    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"query":"What is the weather in Paris?"}'

    deltas = [c.choices[0].delta for c in chunks if c.choices]
    streamed = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert len(streamed) == 1 and streamed[0].index == 0 and streamed[0].id
    assert streamed[0].function is not None and streamed[0].function.name == "get_weather"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"

    assert final.choices[0].message.content == "mock reply alpha bravo charlie"
    sent = s.upstream.requests[-1].json
    assert sent["tools"][0]["functionDeclarations"][0]["parameters"] == {
        "type": "OBJECT",
        "properties": {"city": {"type": "STRING"}},
        "required": ["city"],
    }
    assert sent["contents"][1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert sent["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"celsius": 21}}}],
    }


async def test_embeddings_one_and_many(tmp_path: Path) -> None:
    async with setup(tmp_path) as s:
        await add_gemini(s.admin, "gem", s.upstream_url)
        one = await s.client.embeddings.create(model="gem-embed", input="alpha")
        many = await s.client.embeddings.create(model="gem-embed", input=["alpha", "beta gamma"])

    assert one.data[0].embedding == pytest.approx(embed("alpha"))
    assert [d.embedding for d in many.data] == [
        pytest.approx(embed("alpha")),
        pytest.approx(embed("beta gamma")),
    ]
    assert many.model == "gem-embed" and many.usage.prompt_tokens == 0
    paths = [r.path for r in s.upstream.requests]
    assert paths == [
        "/v1beta/models/embedding-mock:embedContent",
        "/v1beta/models/embedding-mock:batchEmbedContents",
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_an_exhausted_gemini_falls_back_to_the_next_provider(
    tmp_path: Path, stream: bool
) -> None:
    healthy = MockUpstream(MockOptions())
    async with setup(tmp_path, fail="status:429") as s, serve_asgi(healthy.app()) as ok_url:
        await add_gemini(s.admin, "gem", s.upstream_url, priority=2)
        await add_provider(s.admin, "backup", f"{ok_url}/v1", ["gem-chat"], priority=1)
        reply = await s.client.chat.completions.with_raw_response.create(
            model="gem-chat",
            messages=HELLO,
            stream=stream,
        )
        row = await last_request(s.admin, s.app)

    assert reply.headers["x-provider-router-provider"] == "backup"
    first, second = row["attempt_details"]
    assert (first["provider_id"], first["status_code"]) == ("gem", 429)
    assert "RESOURCE_EXHAUSTED" in first["error"]
    assert (second["provider_id"], second["status"]) == ("backup", "success")


async def test_a_wrong_key_is_the_clients_error_in_openai_shape(tmp_path: Path) -> None:
    async with setup(tmp_path) as s:
        await add_gemini(s.admin, "gem", s.upstream_url, key="AIza-wrong")
        with pytest.raises(openai.BadRequestError) as caught:
            await s.client.chat.completions.create(model="gem-chat", messages=HELLO)

    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "INVALID_ARGUMENT" and "API key not valid" in error["message"]
    assert "AIza-wrong" not in str(error)


@pytest.mark.parametrize("fail", ["disconnect", "truncate"])
async def test_a_stream_broken_midway_reaches_the_client_as_an_error(
    tmp_path: Path, fail: str
) -> None:
    async with setup(tmp_path, fail=fail, chunks=6) as s:
        await add_gemini(s.admin, "gem", s.upstream_url)
        stream = await s.client.chat.completions.create(
            model="gem-chat",
            messages=HELLO,
            stream=True,
        )
        received: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                if chunk.choices:
                    received.append(chunk.choices[0].delta.content or "")
        row = await last_request(s.admin, s.app)

    assert "".join(received).startswith("mock")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "stream_interrupted"
    assert (row["status"], row["status_code"]) == ("error", 502)


async def test_list_models_over_the_socket(tmp_path: Path) -> None:
    upstream = MockUpstream(MockOptions(api_key=GEMINI_KEY))
    async with serve_asgi(upstream.app()) as url:
        adapter = GeminiAdapter(
            "gem", {"baseURL": f"{url}/v1beta", "apiKey": GEMINI_KEY}, AdapterOptions()
        )
        try:
            models = await adapter.list_models()
        finally:
            await adapter.aclose()
    assert models == ["gemini-mock", "gemini-embedding-mock"]
