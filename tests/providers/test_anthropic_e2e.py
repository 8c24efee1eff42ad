"""End to end: the ``openai`` SDK -> the proxy (uvicorn) -> the fake Anthropic upstream (uvicorn).

Also the fake's Anthropic side itself, in process: what it refuses, and its failure modes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import orjson
import pytest
from openai import AsyncStream
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageFunctionToolCall,
)

from providers.anthropic.adapter import AnthropicAdapter
from providers.base import AdapterOptions
from router.app import create_app
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import ADMIN, ADMIN_TOKEN, add_provider, last_request, make_settings, serve_asgi

MOCK_KEY = "sk-ant-mock-key-9876"
FIVE_WORDS = "mock reply alpha bravo charlie"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    },
}


class Stack:
    """A running proxy with its management client and an SDK client."""

    def __init__(self, url: str, admin: httpx.AsyncClient, app: Any) -> None:
        self.url, self.admin, self.app = url, admin, app
        self.sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=ADMIN_TOKEN, max_retries=0)

    async def add_anthropic(
        self, provider_id: str, base_url: str, model: str = "claude-test", **fields: Any
    ) -> None:
        config = {"baseURL": base_url, "apiKey": MOCK_KEY, **fields.pop("config", {})}
        body = {"id": provider_id, "name": provider_id, "type": "anthropic", "config": config}
        created = await self.admin.post("/v1/providers", json={**body, **fields}, headers=ADMIN)
        assert created.status_code == 201, created.text
        assert created.json()["config"]["apiKey"] != MOCK_KEY  # masked
        link = {"model_id": model, "upstream_model": "mock-claude"}
        linked = await self.admin.post(
            f"/v1/providers/{provider_id}/models", json=link, headers=ADMIN
        )
        assert linked.status_code == 201, linked.text

    async def complete(self, **fields: Any) -> ChatCompletion:
        """A non-streamed chat completion of model claude-test unless ``fields`` say otherwise."""
        answer = await self.sdk.chat.completions.create(**{"model": "claude-test", **fields})
        return cast(ChatCompletion, answer)

    async def stream(
        self, into: list[ChatCompletionChunk] | None = None, **fields: Any
    ) -> list[ChatCompletionChunk]:
        """The chunks of a streamed completion, appended to ``into`` as they arrive."""
        chunks = [] if into is None else into
        body = {"model": "claude-test", **fields, "stream": True}
        stream = cast(
            AsyncStream[ChatCompletionChunk], await self.sdk.chat.completions.create(**body)
        )
        async for chunk in stream:
            chunks.append(chunk)
        return chunks

    async def row(self) -> dict[str, Any]:
        return await last_request(self.admin, self.app)


@contextlib.asynccontextmanager
async def proxy(tmp_path: Path) -> AsyncIterator[Stack]:
    app = create_app(make_settings(tmp_path))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as admin:
        stack = Stack(url, admin, app)
        try:
            yield stack
        finally:
            await stack.sdk.close()


def fake(**options: Any) -> MockUpstream:
    return MockUpstream(MockOptions(api_key=MOCK_KEY, **options))


async def test_chat_through_the_proxy_to_anthropic(tmp_path: Path) -> None:
    upstream = fake()
    async with serve_asgi(upstream.app()) as mock_url, proxy(tmp_path) as stack:
        await stack.add_anthropic("claude", mock_url)
        answer = await stack.complete(messages=HELLO)
        row = await stack.row()

    assert answer.model == "claude-test"
    assert answer.choices[0].message.content == FIVE_WORDS
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 5)
    seen = upstream.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == MOCK_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen.headers  # the client's key never goes upstream
    assert seen.json == {
        "model": "mock-claude",
        "max_tokens": 4096,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    assert (row["status"], row["provider_id"], row["upstream_model"]) == (
        "success",
        "claude",
        "mock-claude",
    )
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (4, 5, 9)


async def test_streamed_chat_with_usage(tmp_path: Path) -> None:
    upstream = fake(chunks=6)
    async with serve_asgi(upstream.app()) as mock_url, proxy(tmp_path) as stack:
        await stack.add_anthropic("claude", mock_url)
        chunks = await stack.stream(
            messages=HELLO, stream_options={"include_usage": True}, max_tokens=4
        )
        row = await stack.row()

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock reply alpha bravo"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert upstream.requests[-1].json["max_tokens"] == 4
    assert upstream.requests[-1].json["stream"] is True
    assert (row["status"], row["stream"], row["completion_tokens"]) == ("success", True, 4)


async def test_a_tool_call_round_trip_streamed_and_not(tmp_path: Path) -> None:
    upstream = fake(chunks=2)
    ask = [{"role": "user", "content": "Use get_weather for Paris"}]
    async with serve_asgi(upstream.app()) as mock_url, proxy(tmp_path) as stack:
        await stack.add_anthropic("claude", mock_url)
        answer = await stack.complete(messages=ask, tools=[WEATHER])
        chunks = await stack.stream(
            messages=[{"role": "user", "content": "Any tool will do"}],
            tools=[WEATHER],
            tool_choice="required",
        )
        message = answer.choices[0].message
        assert message.tool_calls is not None
        call = cast(ChatCompletionMessageFunctionToolCall, message.tool_calls[0])
        follow_up = [
            *ask,
            {
                "role": "assistant",
                "content": message.content,
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
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
        ]
        final = await stack.complete(messages=follow_up, tools=[WEATHER])

    assert answer.choices[0].finish_reason == "tool_calls"
    assert message.content == "mock reply"
    assert call.type == "function" and call.id.startswith("toolu_mock_")
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "mock", "days": 1}

    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [tc for d in deltas for tc in d.tool_calls or []]
    assert {tc.index for tc in calls} == {0}
    assert calls[0].id and calls[0].id.startswith("toolu_mock_")
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert orjson.loads(arguments) == {"city": "mock", "days": 1}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"

    # The fake refuses a tool_use without its tool_result: the follow-up was translated right.
    assert final.choices[0].message.content == "mock reply"
    assert final.choices[0].finish_reason == "stop"
    sent = upstream.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}
    ]


async def test_an_overloaded_anthropic_falls_back_to_the_next_provider(tmp_path: Path) -> None:
    overloaded = fake(fail="status:529")
    healthy = fake()
    async with (
        serve_asgi(overloaded.app()) as bad_url,
        serve_asgi(healthy.app()) as ok_url,
        proxy(tmp_path) as stack,
    ):
        await stack.add_anthropic("busy", bad_url, priority=2)
        await stack.add_anthropic("spare", ok_url, priority=1)
        answer = await stack.complete(messages=HELLO)
        streamed = await stack.stream(messages=HELLO)
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        row = await stack.row()

    assert answer.choices[0].message.content == FIVE_WORDS
    assert text == FIVE_WORDS
    first, second = row["attempt_details"]
    assert (first["provider_id"], first["status_code"]) == ("busy", 529)
    assert "overloaded_error" in first["error"]
    assert (second["provider_id"], second["status"]) == ("spare", "success")


async def test_a_client_error_comes_back_in_openai_shape(tmp_path: Path) -> None:
    refusing = fake(fail="status:400")
    async with serve_asgi(refusing.app()) as mock_url, proxy(tmp_path) as stack:
        await stack.add_anthropic("claude", mock_url)
        with pytest.raises(openai.BadRequestError) as caught:
            await stack.complete(messages=HELLO)
        with pytest.raises(openai.BadRequestError) as malformed:
            await stack.complete(messages=[{"role": "tool", "content": "no id"}])

    assert caught.value.code == "invalid_request_error"
    assert "fail=status:400" in caught.value.message
    assert malformed.value.param == "messages[0].tool_call_id"
    assert len(refusing.requests) == 1  # the malformed request never left the proxy


@pytest.mark.parametrize("fail", ["disconnect", "truncate"])
async def test_a_stream_broken_mid_way_gives_the_client_an_error(tmp_path: Path, fail: str) -> None:
    broken = fake(fail=fail, chunks=6)
    async with serve_asgi(broken.app()) as mock_url, proxy(tmp_path) as stack:
        await stack.add_anthropic("claude", mock_url)
        received: list[ChatCompletionChunk] = []
        with pytest.raises(openai.APIError, match="broke off"):
            await stack.stream(received, messages=HELLO)
        row = await stack.row()

    assert "".join(c.choices[0].delta.content or "" for c in received) == "mock reply alpha"
    assert (row["status"], row["status_code"]) == ("error", 502)
    assert row["attempt_details"][0]["status"] == "error"


async def test_embeddings_skip_anthropic_and_models_are_listed(tmp_path: Path) -> None:
    anthropic_side = fake()
    openai_side = MockUpstream()
    async with (
        serve_asgi(anthropic_side.app()) as claude_url,
        serve_asgi(openai_side.app()) as gpt_url,
        proxy(tmp_path) as stack,
    ):
        await stack.add_anthropic("claude", claude_url, model="both", priority=2)
        await add_provider(stack.admin, "gpt", f"{gpt_url}/v1", ["both"], priority=1)
        embedded = await stack.sdk.embeddings.create(model="both", input="hello")
        row = await stack.row()
        adapter = AnthropicAdapter(
            "claude", {"baseURL": claude_url, "apiKey": MOCK_KEY}, AdapterOptions()
        )
        try:
            models = await adapter.list_models()
        finally:
            await adapter.aclose()

    assert len(embedded.data[0].embedding) == 8
    first, second = row["attempt_details"]
    assert first["provider_id"] == "claude" and "embeddings" in first["error"]
    assert second["provider_id"] == "gpt"
    assert models == ["mock-claude"]


# -- the fake's Anthropic side, in process ---------------------------------------------------


@contextlib.asynccontextmanager
async def fake_client(**options: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fake(**options).app())
    headers = {"x-api-key": MOCK_KEY, "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://mock", headers=headers
    ) as client:
        yield client


MINIMAL = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("change", "status", "kind", "words"),
    [
        ({"headers": {"anthropic-version": ""}}, 400, "invalid_request_error", "anthropic-version"),
        ({"headers": {"x-api-key": "wrong"}}, 401, "authentication_error", "x-api-key"),
        ({"json": {**MINIMAL, "max_tokens": None}}, 400, "invalid_request_error", "max_tokens"),
        ({"json": {**MINIMAL, "messages": [{"role": "system", "content": "x"}]}}, 400,
         "invalid_request_error", "role"),
        ({"json": {**MINIMAL, "messages": [{"role": "user", "content": "a"}] * 2}}, 400,
         "invalid_request_error", "alternate"),
        ({"json": {**MINIMAL, "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
            {"role": "user", "content": "b"}]}}, 400, "invalid_request_error", "toolu_1"),
        ({"json": {**MINIMAL, "messages": [{"role": "user", "content": [
            {"type": "text", "text": ""}]}]}}, 400, "invalid_request_error", "non-empty"),
    ],
)  # fmt: skip
async def test_the_fake_refuses_what_anthropic_refuses(
    change: dict[str, Any], status: int, kind: str, words: str
) -> None:
    async with fake_client() as client:
        response = await client.post("/v1/messages", **{"json": MINIMAL, **change})
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert words in body["error"]["message"]


@pytest.mark.parametrize(
    ("status", "kind"), [(529, "overloaded_error"), (429, "rate_limit_error"), (500, "api_error")]
)
async def test_the_fake_injects_errors_in_anthropic_shape(status: int, kind: str) -> None:
    async with fake_client(fail=f"status:{status}") as client:
        response = await client.post("/v1/messages", json=MINIMAL)
    assert response.status_code == status
    assert response.json()["error"]["type"] == kind
    assert (response.headers.get("retry-after") == "1") == (status == 429)


async def test_the_fake_models_list_speaks_both_formats() -> None:
    async with fake_client() as client:
        anthropic_list = (await client.get("/v1/models")).json()
        del client.headers["anthropic-version"]
        del client.headers["x-api-key"]
        client.headers["authorization"] = f"Bearer {MOCK_KEY}"
        openai_list = (await client.get("/v1/models")).json()
    assert anthropic_list["data"][0]["id"] == "mock-claude"
    assert anthropic_list["has_more"] is False
    assert openai_list["object"] == "list" and openai_list["data"][0]["id"] == "mock-gpt"


async def test_the_fake_honours_stop_sequences_and_max_tokens() -> None:
    async with fake_client() as client:
        stopped = (
            await client.post("/v1/messages", json={**MINIMAL, "stop_sequences": ["alpha"]})
        ).json()
        cut = (await client.post("/v1/messages", json={**MINIMAL, "max_tokens": 2})).json()
    assert stopped["content"] == [{"type": "text", "text": "mock reply"}]
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", " alpha")
    assert cut["stop_reason"] == "max_tokens"
    assert cut["usage"] == {"input_tokens": 1, "output_tokens": 2}


async def test_the_fake_stream_is_a_complete_anthropic_event_sequence() -> None:
    async with fake_client(chunks=2) as client:
        response = await client.post("/v1/messages", json={**MINIMAL, "stream": True})
        truncated = await (await client.post("/_mock/options", json={"fail": "truncate"})).aread()
        cut = await client.post("/v1/messages", json={**MINIMAL, "stream": True})
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start", "ping", "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert b'"fail":"truncate"' in truncated
    assert "message_stop" not in cut.text and "message_start" in cut.text


async def test_the_fake_calls_a_tool_only_when_asked() -> None:
    tool = {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}
    ask = {"role": "user", "content": "please lookup"}
    async with fake_client() as client:
        named = await client.post(
            "/v1/messages", json={**MINIMAL, "tools": [tool], "messages": [ask]}
        )
        unnamed = await client.post("/v1/messages", json={**MINIMAL, "tools": [tool]})
        refused = await client.post(
            "/v1/messages",
            json={**MINIMAL, "tools": [tool], "messages": [ask], "tool_choice": {"type": "none"}},
        )
        odd_choice = await client.post(
            "/v1/messages", json={**MINIMAL, "tools": [tool], "tool_choice": "auto"}
        )
    assert named.json()["stop_reason"] == "tool_use"
    assert named.json()["content"][-1]["name"] == "lookup"
    assert unnamed.json()["stop_reason"] == "end_turn"
    assert refused.json()["stop_reason"] == "end_turn"
    assert odd_choice.status_code == 200
