"""The fake upstream's Anthropic side, in process: what it refuses, its errors, streams, tools."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from router.mock.upstream import MockOptions, MockUpstream

MOCK_KEY = "sk-ant-mock-key-9876"


def fake(**options: Any) -> MockUpstream:
    return MockUpstream(MockOptions(api_key=MOCK_KEY, **options))


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
