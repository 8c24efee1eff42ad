"""The fake upstream's Ollama routes speak Ollama's wire format, failure modes included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from router.mock.upstream import MockOptions, MockUpstream

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "why is the sky blue"}]}


@pytest.fixture
async def fake() -> AsyncIterator[tuple[MockUpstream, httpx.AsyncClient]]:
    upstream = MockUpstream(MockOptions(chunks=3))
    transport = httpx.ASGITransport(app=upstream.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        yield upstream, client


def lines(response: httpx.Response) -> list[Any]:
    return [orjson.loads(line) for line in response.content.splitlines() if line]


async def test_chat_streams_ndjson_by_default_and_ends_with_done(
    fake: tuple[MockUpstream, httpx.AsyncClient],
) -> None:
    _, client = fake
    response = await client.post("/api/chat", json=CHAT)
    assert response.headers["content-type"] == "application/x-ndjson"
    got = lines(response)
    assert [g["message"]["content"] for g in got] == ["mock", " reply", " alpha", ""]
    assert [g["done"] for g in got] == [False, False, False, True]
    assert got[-1]["done_reason"] == "stop"
    assert (got[-1]["prompt_eval_count"], got[-1]["eval_count"]) == (5, 3)


async def test_chat_without_streaming_and_num_predict(
    fake: tuple[MockUpstream, httpx.AsyncClient],
) -> None:
    _, client = fake
    response = await client.post(
        "/api/chat", json={**CHAT, "stream": False, "options": {"num_predict": 2}}
    )
    answer = response.json()
    assert answer["message"] == {"role": "assistant", "content": "mock reply"}
    assert (answer["done"], answer["done_reason"], answer["eval_count"]) == (True, "length", 2)


async def test_a_tool_call_when_tools_are_given_and_the_user_asks(
    fake: tuple[MockUpstream, httpx.AsyncClient],
) -> None:
    _, client = fake
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    body = {"model": "m", "tools": tools, "messages": [{"role": "user", "content": "Use a tool"}]}
    streamed = lines(await client.post("/api/chat", json=body))
    assert streamed[0]["message"]["tool_calls"] == [
        {"function": {"name": "lookup", "arguments": {"query": "Use a tool"}}}
    ]
    assert streamed[-1]["done"] is True
    without = await client.post("/api/chat", json={**body, "tools": [], "stream": False})
    assert "tool_calls" not in without.json()["message"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"messages": []}, 400, "You must provide a model parameter."),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x", "images": ["@@"]}]},
            400,
            "invalid image input",
        ),
    ],
)
async def test_bad_requests_get_ollama_errors(
    fake: tuple[MockUpstream, httpx.AsyncClient], body: dict[str, Any], status: int, error: str
) -> None:
    _, client = fake
    response = await client.post("/api/chat", json=body)
    assert response.status_code == status
    assert list(response.json()) == ["error"]
    assert error in response.json()["error"]


async def test_failure_modes_and_the_api_key_answer_in_ollama_shape(
    fake: tuple[MockUpstream, httpx.AsyncClient],
) -> None:
    upstream, client = fake
    upstream.options = MockOptions(fail="status:429")
    limited = await client.post("/api/chat", json=CHAT)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert "Rate limit" in limited.json()["error"]

    upstream.options = MockOptions(fail="truncate", chunks=4)
    cut = lines(await client.post("/api/chat", json=CHAT))
    assert [c["done"] for c in cut] == [False, False]

    upstream.options = MockOptions(api_key="k")
    refused = await client.get("/api/tags")
    assert refused.status_code == 401
    assert refused.json() == {"error": "Incorrect API key provided."}
    allowed = await client.get("/api/tags", headers={"authorization": "Bearer k"})
    assert allowed.json()["models"][0]["name"] == "mock-llama:latest"


async def test_embed_answers_one_vector_per_input(
    fake: tuple[MockUpstream, httpx.AsyncClient],
) -> None:
    upstream, client = fake
    answer = (await client.post("/api/embed", json={"model": "e", "input": ["a b", "c"]})).json()
    assert len(answer["embeddings"]) == 2 and answer["prompt_eval_count"] == 3
    single = (await client.post("/api/embed", json={"model": "e", "input": "a b"})).json()
    assert single["embeddings"][0] == answer["embeddings"][0]
    assert [r.path for r in upstream.requests] == ["/api/embed", "/api/embed"]
