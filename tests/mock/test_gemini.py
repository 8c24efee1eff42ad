"""The fake upstream's Gemini endpoints: wire format, key check, failure modes, function calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import sse_chunks

KEY = {"x-goog-api-key": "gk"}
GENERATE = "/v1beta/models/gemini-mock:generateContent"
STREAM = "/v1beta/models/gemini-mock:streamGenerateContent?alt=sse"


@pytest.fixture
async def fake() -> AsyncIterator[tuple[MockUpstream, httpx.AsyncClient]]:
    upstream = MockUpstream(MockOptions(api_key="gk", chunks=4), seed=1)
    transport = httpx.ASGITransport(app=upstream.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        yield upstream, client


def contents(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "parts": [{"text": text}]}]


async def test_generate_and_stream_say_the_same_words(
    fake: tuple[MockUpstream, httpx.AsyncClient],
) -> None:
    upstream, client = fake
    body = {"contents": contents("two words"), "systemInstruction": {"parts": [{"text": "be"}]}}
    whole = (await client.post(GENERATE, json=body, headers=KEY)).json()
    streamed = await client.post(STREAM, json=body, headers=KEY)

    candidate = whole["candidates"][0]
    assert candidate["content"] == {"role": "model", "parts": [{"text": "mock reply alpha bravo"}]}
    assert candidate["finishReason"] == "STOP"
    assert whole["usageMetadata"] == {
        "promptTokenCount": 3,
        "candidatesTokenCount": 4,
        "totalTokenCount": 7,
    }
    chunks = sse_chunks(streamed.content, done=False)
    assert streamed.content.endswith(b"\r\n\r\n")  # Gemini separates events with CRLF
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == (
        "mock reply alpha bravo"
    )
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, None, "STOP"]
    assert [r.path for r in upstream.requests] == [GENERATE, STREAM.partition("?")[0]]


async def test_max_output_tokens_and_broken_streams(
    fake: tuple[MockUpstream, httpx.AsyncClient],
) -> None:
    upstream, client = fake
    body = {"contents": contents("hi"), "generationConfig": {"maxOutputTokens": 2}}
    cut = (await client.post(GENERATE, json=body, headers=KEY)).json()
    assert cut["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert cut["candidates"][0]["content"]["parts"] == [{"text": "mock reply"}]

    upstream.options = MockOptions(api_key="gk", chunks=4, fail="truncate")
    truncated = await client.post(STREAM, json={"contents": contents("hi")}, headers=KEY)
    chunks = sse_chunks(truncated.content, done=False)
    assert len(chunks) == 2 and all("finishReason" not in c["candidates"][0] for c in chunks)

    plain = await client.post(STREAM.partition("?")[0], json=body, headers=KEY)
    assert plain.status_code == 400


@pytest.mark.parametrize(
    ("code", "status"),
    [(429, "RESOURCE_EXHAUSTED"), (503, "UNAVAILABLE"), (500, "INTERNAL"), (404, "NOT_FOUND")],
)
async def test_injected_failures_answer_in_gemini_shape(
    fake: tuple[MockUpstream, httpx.AsyncClient], code: int, status: str
) -> None:
    upstream, client = fake
    upstream.options = MockOptions(api_key="gk", fail=f"status:{code}")
    response = await client.post(GENERATE, json={"contents": contents("hi")}, headers=KEY)
    error = response.json()["error"]
    assert response.status_code == code
    assert (error["code"], error["status"]) == (code, status)
    if code == 429:
        assert error["details"][0]["retryDelay"] == "1s"


async def test_the_key_is_checked_in_its_header_only(
    fake: tuple[MockUpstream, httpx.AsyncClient],
) -> None:
    _, client = fake
    body = {"contents": contents("hi")}
    missing = await client.post(GENERATE, json=body, headers={"authorization": "Bearer gk"})
    wrong = await client.post(GENERATE, json=body, headers={"x-goog-api-key": "nope"})
    in_url = await client.post(GENERATE + "?key=gk", json=body)
    assert (missing.status_code, missing.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert (wrong.status_code, wrong.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert in_url.status_code == 403


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"contents": []},
        {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
        {"contents": [{"role": "user", "parts": []}]},
        {"contents": [{"role": "user", "parts": [{"text": ""}]}]},
    ],
)
async def test_malformed_requests_are_refused_like_gemini(
    fake: tuple[MockUpstream, httpx.AsyncClient], bad: dict[str, Any]
) -> None:
    _, client = fake
    response = await client.post(GENERATE, json=bad, headers=KEY)
    assert response.status_code == 400 and response.json()["error"]["status"] == "INVALID_ARGUMENT"


TOOLS = [{"functionDeclarations": [{"name": "lookup"}, {"name": "clock"}]}]


@pytest.mark.parametrize(
    ("text", "tool_config", "called"),
    [
        ("please use clock", None, "clock"),
        ("nothing named here", None, None),
        ("nothing named here", {"functionCallingConfig": {"mode": "ANY"}}, "lookup"),
        (
            "x",
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["clock"]}},
            "clock",
        ),
        ("please use clock", {"functionCallingConfig": {"mode": "NONE"}}, None),
    ],
)
async def test_function_calls_when_asked(
    fake: tuple[MockUpstream, httpx.AsyncClient], text: str, tool_config: Any, called: str | None
) -> None:
    _, client = fake
    body: dict[str, Any] = {"contents": contents(text), "tools": TOOLS}
    if tool_config:
        body["toolConfig"] = tool_config
    parts = (await client.post(GENERATE, json=body, headers=KEY)).json()["candidates"][0]
    parts = parts["content"]["parts"]
    if called is None:
        assert "text" in parts[0]
    else:
        assert parts == [{"functionCall": {"name": called, "args": {"query": text}}}]


async def test_a_function_response_gets_text_back(
    fake: tuple[MockUpstream, httpx.AsyncClient],
) -> None:
    _, client = fake
    history = [
        *contents("use clock"),
        {"role": "model", "parts": [{"functionCall": {"name": "clock", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "clock", "response": {}}}]},
    ]
    body = {"contents": history, "tools": TOOLS}
    answer = (await client.post(GENERATE, json=body, headers=KEY)).json()
    assert answer["candidates"][0]["content"]["parts"][0]["text"].startswith("mock")


async def test_embeddings_and_model_list(fake: tuple[MockUpstream, httpx.AsyncClient]) -> None:
    _, client = fake
    one = await client.post(
        "/v1beta/models/emb:embedContent",
        json={"content": {"parts": [{"text": "a"}]}},
        headers=KEY,
    )
    batch = {"requests": [{"model": "models/emb", "content": {"parts": [{"text": "a"}]}}]}
    many = await client.post("/v1beta/models/emb:batchEmbedContents", json=batch, headers=KEY)
    batch["requests"][0]["model"] = "models/other"
    mismatch = await client.post("/v1beta/models/emb:batchEmbedContents", json=batch, headers=KEY)
    models = await client.get("/v1beta/models", headers=KEY)

    assert one.json()["embedding"]["values"] == many.json()["embeddings"][0]["values"]
    assert len(one.json()["embedding"]["values"]) == 8
    assert mismatch.status_code == 400
    assert [m["name"] for m in models.json()["models"]] == [
        "models/gemini-mock",
        "models/gemini-embedding-mock",
    ]
