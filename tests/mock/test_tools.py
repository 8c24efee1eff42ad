"""Tool calls and token-id embeddings on the fake OpenAI upstream: unit tests in process, and
the openai SDK through the gateway over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from router.app import create_app
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import add_provider, make_settings, serve_asgi, sse_chunks

CHAT = "/v1/chat/completions"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {}}}


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "mock-gpt", "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=MockUpstream(seed=0).app())
    async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
        yield client


async def tool_of(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any] | None:
    answer = (await client.post(CHAT, json=body)).json()
    calls = answer["choices"][0]["message"].get("tool_calls")
    return calls[0]["function"] if calls else None


async def test_tool_calls_follow_the_word_and_the_requests_tool_choice(
    client: httpx.AsyncClient,
) -> None:
    tools = [WEATHER, CLOCK]
    assert await tool_of(client, chat("hello", tools=tools)) is None
    called = await tool_of(client, chat("please mock-tool-call", tools=tools))
    assert called == {"name": "get_weather", "arguments": '{"city":"mock","days":1}'}
    by_name = await tool_of(client, chat("mock-tool-call:get_time", tools=tools))
    assert by_name == {"name": "get_time", "arguments": "{}"}
    required = await tool_of(client, chat("hello", tools=tools, tool_choice="required"))
    assert required is not None and required["name"] == "get_weather"
    named = {"type": "function", "function": {"name": "get_time"}}
    assert (await tool_of(client, chat("hello", tools=tools, tool_choice=named)) or {})[
        "name"
    ] == "get_time"
    refused = chat("mock-tool-call", tools=tools, tool_choice="none")
    assert await tool_of(client, refused) is None
    assert await tool_of(client, chat("mock-tool-call")) is None  # no tools, no call


async def test_the_always_option_calls_the_first_tool_until_a_tool_answers(
    client: httpx.AsyncClient,
) -> None:
    put = await client.post("/_mock/options", json={"tool_calls": "always"})
    assert put.status_code == 200, put.text
    assert (await tool_of(client, chat("hello", tools=[CLOCK, WEATHER])) or {})[
        "name"
    ] == "get_time"
    answered = chat("hello", tools=[CLOCK])
    answered["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "noon"},
    ]  # fmt: skip
    assert await tool_of(client, answered) is None  # the loop ends with text
    assert await tool_of(client, chat("hello")) is None
    streamed = await client.post(CHAT, json=chat("hi", tools=[WEATHER], stream=True))
    deltas = [
        c["choices"][0]["delta"] for c in sse_chunks(streamed.text, done=True) if c["choices"]
    ]
    arguments = "".join(
        d["tool_calls"][0]["function"].get("arguments", "") for d in deltas if "tool_calls" in d
    )
    assert orjson.loads(arguments) == {"city": "mock", "days": 1}
    with pytest.raises(ValueError, match="tool_calls"):
        MockOptions(tool_calls="sometimes")


@pytest.mark.parametrize(
    ("given", "count", "tokens"),
    [
        ([15339, 1917], 1, 2),  # one text as token ids
        ([[15339, 1917], [3, 4, 5]], 2, 5),  # LangChain's default: arrays of token ids
        ("one two", 1, 2),
        (["one", "two three"], 2, 3),
    ],
)
async def test_embeddings_take_every_input_openai_takes(
    client: httpx.AsyncClient, given: Any, count: int, tokens: int
) -> None:
    response = await client.post("/v1/embeddings", json={"model": "emb", "input": given})
    assert response.status_code == 200, response.text
    data = response.json()
    assert len(data["data"]) == count and data["usage"]["prompt_tokens"] == tokens


@pytest.mark.parametrize("given", [[], [[]], [1, "two"], [[1], "x"], [-1], [1.5], None, 7])
async def test_embeddings_refuse_what_openai_refuses(client: httpx.AsyncClient, given: Any) -> None:
    response = await client.post("/v1/embeddings", json={"model": "emb", "input": given})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


async def test_the_sdk_gets_a_tool_call_and_token_embeddings_through_the_gateway(
    tmp_path: Path,
) -> None:
    upstream = MockUpstream(seed=0)
    async with (
        serve_asgi(upstream.app()) as fake,
        serve_asgi(create_app(make_settings(tmp_path))) as url,
    ):
        async with httpx.AsyncClient(base_url=url) as admin:
            await add_provider(admin, "mock", f"{fake}/v1", ["mock-gpt", "emb"])
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as sdk:
            answer = await sdk.chat.completions.create(
                model="mock-gpt",
                messages=[{"role": "user", "content": "weather? mock-tool-call"}],
                tools=[WEATHER],  # type: ignore[list-item]
            )
            vectors = await sdk.embeddings.create(model="emb", input=[[1, 2, 3], [4, 5]])
    call = (answer.choices[0].message.tool_calls or [])[0]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert orjson.loads(call.function.arguments) == {"city": "mock", "days": 1}  # type: ignore[union-attr]
    assert len(vectors.data) == 2 and vectors.usage.prompt_tokens == 5
