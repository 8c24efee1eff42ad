"""Tests for the fake OpenAI upstream (router.mock.upstream)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from router.mock.upstream import (
    MockOptions,
    MockServer,
    MockUpstream,
    add_mock_arguments,
    create_mock_app,
    options_from_args,
    run_mock_upstream,
)
from tests.helpers import eventually, serve_asgi, sse_chunks, sse_data

CHAT = "/v1/chat/completions"
BODY: dict[str, Any] = {
    "model": "mock-gpt",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello there mock"}]},
    ],
}
PROMPT_WORDS = 5
STREAM = {**BODY, "stream": True}
FIVE_WORDS = "mock reply alpha bravo charlie"


@pytest.fixture
def upstream() -> MockUpstream:
    return MockUpstream(seed=0)


@pytest.fixture
async def client(upstream: MockUpstream) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=upstream.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
        yield client


async def test_chat_completion_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=BODY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["id"].startswith("chatcmpl-mock-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "mock-gpt"
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert choice["message"] == {"role": "assistant", "content": FIVE_WORDS}
    assert choice["finish_reason"] == "stop"
    assert data["usage"] == {
        "prompt_tokens": PROMPT_WORDS,
        "completion_tokens": 5,
        "total_tokens": PROMPT_WORDS + 5,
    }


async def test_stream_has_openai_shape_and_same_text(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=STREAM)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(response.text, done=True)
    assert len(chunks) == 1 + 5 + 1
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "mock-gpt" for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert "".join(content) == FIVE_WORDS
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_include_usage(client: httpx.AsyncClient) -> None:
    body = {**STREAM, "stream_options": {"include_usage": True}}
    chunks = sse_chunks((await client.post(CHAT, json=body)).text, done=True)
    assert len(chunks) == 1 + 5 + 1 + 1
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": PROMPT_WORDS,
        "completion_tokens": 5,
        "total_tokens": PROMPT_WORDS + 5,
    }


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
async def test_token_limit_stops_with_length(client: httpx.AsyncClient, name: str) -> None:
    data = (await client.post(CHAT, json={**BODY, name: 2})).json()
    assert data["choices"][0]["message"]["content"] == "mock reply"
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 2

    chunks = sse_chunks((await client.post(CHAT, json={**STREAM, name: 2})).text, done=True)
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]] == ["mock", " reply"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_token_limit_above_chunks_is_ignored(client: httpx.AsyncClient) -> None:
    data = (await client.post(CHAT, json={**BODY, "max_tokens": 50})).json()
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["choices"][0]["message"]["content"] == FIVE_WORDS


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": BODY["messages"]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages"),
        ({**BODY, "max_tokens": 0}, "max_tokens"),
        ({**BODY, "max_completion_tokens": "3"}, "max_completion_tokens"),
        ({**BODY, "max_tokens": True}, "max_tokens"),
    ],
)
async def test_chat_rejects_bad_bodies(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await client.post(CHAT, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_chat_rejects_non_json(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_model_prefix_is_reported(upstream: MockUpstream, client: httpx.AsyncClient) -> None:
    upstream.options.model_prefix = "acme-"
    assert (await client.post(CHAT, json=BODY)).json()["model"] == "acme-mock-gpt"


async def test_embeddings(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/embeddings", json={"model": "emb", "input": ["one two", "three", "one two"]}
    )
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "list"
    assert data["model"] == "emb"
    assert data["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    items = data["data"]
    assert [item["index"] for item in items] == [0, 1, 2]
    assert all(item["object"] == "embedding" for item in items)
    vectors = [item["embedding"] for item in items]
    assert all(len(v) == 8 and all(isinstance(x, float) for x in v) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]

    single = (await client.post("/v1/embeddings", json={"model": "emb", "input": "one two"})).json()
    assert single["data"][0]["embedding"] == vectors[0]


@pytest.mark.parametrize("given", [None, [], 3, ["ok", 3]])
async def test_embeddings_reject_bad_input(client: httpx.AsyncClient, given: object) -> None:
    response = await client.post("/v1/embeddings", json={"model": "emb", "input": given})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


async def test_models_and_health(client: httpx.AsyncClient) -> None:
    models = await client.get("/v1/models")
    assert models.json() == {
        "object": "list",
        "data": [{"id": "mock-gpt", "object": "model", "created": 0, "owned_by": "mock"}],
    }
    health = await client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}


async def test_api_key_is_enforced() -> None:
    app = create_mock_app(MockOptions(api_key="sk-mock"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "sk-mock"}):
            for response in (
                await c.post(CHAT, json=BODY, headers=headers),
                await c.get("/v1/models", headers=headers),
            ):
                assert response.status_code == 401
                assert response.json()["error"]["code"] == "invalid_api_key"
        good = {"authorization": "Bearer sk-mock"}
        assert (await c.post(CHAT, json=BODY, headers=good)).status_code == 200
        assert (await c.get("/v1/models", headers=good)).status_code == 200
        assert (await c.get("/health")).status_code == 200


@pytest.mark.parametrize(
    ("status", "kind"), [(500, "server_error"), (503, "server_error"), (400, None), (429, None)]
)
@pytest.mark.parametrize("path", [CHAT, "/v1/embeddings"])
async def test_status_failures(
    upstream: MockUpstream, client: httpx.AsyncClient, status: int, kind: str | None, path: str
) -> None:
    upstream.options.fail = f"status:{status}"
    body = {**STREAM, "input": "x"}  # a streamed chat still fails with a plain JSON error
    response = await client.post(path, json=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if kind is not None:
        assert error["type"] == kind
    if status == 429:
        assert response.headers["retry-after"] == "1"
        assert error["code"] == "rate_limit_exceeded"
    else:
        assert "retry-after" not in response.headers


async def test_fail_rate_applies_to_a_fraction(
    upstream: MockUpstream, client: httpx.AsyncClient
) -> None:
    upstream.options.fail = "status:500"
    upstream.options.fail_rate = 0.0
    assert {(await client.post(CHAT, json=BODY)).status_code for _ in range(20)} == {200}
    upstream.options.fail_rate = 0.5
    codes = [(await client.post(CHAT, json=BODY)).status_code for _ in range(200)]
    assert set(codes) == {200, 500}
    assert 60 < codes.count(500) < 140


async def test_latency_and_chunk_delay(upstream: MockUpstream, client: httpx.AsyncClient) -> None:
    upstream.options.latency_ms = 150
    started = time.monotonic()
    assert (await client.post(CHAT, json=BODY)).status_code == 200
    assert time.monotonic() - started >= 0.15

    upstream.options.latency_ms = 0
    upstream.options.chunk_delay_ms = 50
    started = time.monotonic()
    chunks = sse_chunks((await client.post(CHAT, json=STREAM)).text, done=True)
    assert time.monotonic() - started >= 5 * 0.05
    assert len(chunks) == 7


async def test_truncate_in_process(upstream: MockUpstream, client: httpx.AsyncClient) -> None:
    upstream.options.fail = "truncate"
    response = await client.post(CHAT, json=BODY)
    assert response.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)

    events = sse_data((await client.post(CHAT, json=STREAM)).text)
    assert "[DONE]" not in events
    chunks = [orjson.loads(e) for e in events]
    assert len(chunks) == 1 + 2
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


async def test_disconnect_in_process_raises_httpx_error(
    upstream: MockUpstream, client: httpx.AsyncClient
) -> None:
    upstream.options.fail = "disconnect"
    for body in (BODY, STREAM):
        with pytest.raises(httpx.RemoteProtocolError, match="fail=disconnect"):
            await client.post(CHAT, json=body)


async def test_release_hangs_answers_503(upstream: MockUpstream, client: httpx.AsyncClient) -> None:
    upstream.options.fail = "hang"
    pending = asyncio.create_task(client.post(CHAT, json=BODY))
    await eventually(lambda: upstream.requests, "the mock logged the request")
    await asyncio.sleep(0.05)
    assert not pending.done()
    assert upstream.release_hangs() == 1
    response = await asyncio.wait_for(pending, timeout=2)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "mock_hang"


async def test_options_endpoint(upstream: MockUpstream, client: httpx.AsyncClient) -> None:
    response = await client.post("/_mock/options", json={"chunks": 2, "fail_rate": 0.5})
    assert response.status_code == 200
    assert response.json()["chunks"] == 2
    assert upstream.options.chunks == 2
    assert upstream.options.fail_rate == 0.5
    assert (await client.get("/_mock/options")).json() == response.json()
    answer = (await client.post(CHAT, json=BODY)).json()
    assert answer["choices"][0]["message"]["content"] == "mock reply"


@pytest.mark.parametrize(
    "patch",
    [
        {"bogus": 1},
        {"chunks": 0},
        {"chunks": "5"},
        {"fail": "explode"},
        {"fail": "status:200"},
        {"fail_rate": 1.5},
        {"latency_ms": -1},
        {"latency_ms": True},
        {"api_key": 5},
        ["chunks"],
    ],
)
async def test_options_endpoint_rejects_bad_patches(
    upstream: MockUpstream, client: httpx.AsyncClient, patch: object
) -> None:
    before = upstream.options
    response = await client.post("/_mock/options", json=patch)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.options == before


async def test_request_log(upstream: MockUpstream, client: httpx.AsyncClient) -> None:
    await client.post(CHAT, json=BODY, headers={"X-Trace": "abc"})
    await client.get("/health")
    await client.post("/_mock/options", json={"chunks": 3})
    await client.get("/_mock/options")
    log = (await client.get("/_mock/requests")).json()
    assert len(log) == 1  # control endpoints and /health stay out of the log
    [entry] = log
    assert entry["method"] == "POST"
    assert entry["path"] == CHAT
    assert entry["headers"]["x-trace"] == "abc"
    assert entry["json"] == BODY
    assert upstream.requests[0].json == BODY

    await client.get("/v1/models")
    assert [r.path for r in upstream.requests] == [CHAT, "/v1/models"]
    assert upstream.requests[1].json is None
    assert (await client.delete("/_mock/requests")).status_code == 204
    assert upstream.requests == []
    assert (await client.get("/_mock/requests")).json() == []


async def test_request_log_is_bounded() -> None:
    upstream = MockUpstream(log_limit=10)
    transport = httpx.ASGITransport(app=upstream.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://m") as c:
        for i in range(25):
            await c.post(CHAT, json={**BODY, "user": str(i)})
    assert 0 < len(upstream.requests) <= 10
    assert upstream.requests[-1].json["user"] == "24"


def test_options_validate_on_construction() -> None:
    assert MockOptions(fail="status:429").fail == "status:429"
    for bad in ({"fail": "nope"}, {"chunks": 0}, {"fail_rate": -0.1}, {"chunk_delay_ms": -5}):
        with pytest.raises(ValueError):
            MockOptions(**bad)


def test_command_line_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_mock_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.host, defaults.port) == ("127.0.0.1", 9000)
    assert options_from_args(defaults) == MockOptions()

    argv = ["--port", "9100", "--latency-ms", "20", "--chunks", "3", "--chunk-delay-ms", "5"]
    argv += ["--fail", "status:503", "--fail-rate", "0.25", "--api-key", "sk-x"]
    ns = parser.parse_args(argv)
    assert ns.port == 9100
    assert options_from_args(ns) == MockOptions(
        latency_ms=20, chunks=3, chunk_delay_ms=5, fail="status:503", fail_rate=0.25, api_key="sk-x"
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--fail", "sometimes"])


def test_run_mock_upstream_configures_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[MockServer] = []
    monkeypatch.setattr(MockServer, "run", lambda self, sockets=None: seen.append(self))
    options = MockOptions(chunks=2)
    run_mock_upstream("127.0.0.1", 9123, options)
    [server] = seen
    assert (server.config.host, server.config.port) == ("127.0.0.1", 9123)
    assert server.config.log_level == "warning"
    assert server.upstream.options is options


async def test_disconnect_over_socket(
    upstream: MockUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.options.fail = "disconnect"
    upstream.options.chunks = 6
    async with serve_asgi(upstream.app()) as base, httpx.AsyncClient(base_url=base) as c:
        lines: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            async with c.stream("POST", CHAT, json=STREAM) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    lines.append(line)
        data = [line.removeprefix("data: ") for line in lines if line]
        assert "[DONE]" not in data
        assert len(data) == 1 + 3
        assert all(orjson.loads(d)["choices"][0]["finish_reason"] is None for d in data)

        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await c.post(CHAT, json=BODY)

        upstream.options.fail = "none"
        assert (await c.post(CHAT, json=BODY)).status_code == 200
    # the deliberate exceptions must not read as crashes in the server log
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_truncate_over_socket(upstream: MockUpstream) -> None:
    upstream.options.fail = "truncate"
    async with (
        serve_asgi(upstream.app()) as base,
        httpx.AsyncClient(base_url=base) as c,
        c.stream("POST", CHAT, json=STREAM) as response,
    ):
        body = (await response.aread()).decode()
    events = sse_data(body)
    assert len(events) == 1 + 2
    assert "[DONE]" not in events
    assert all(orjson.loads(e)["choices"][0]["finish_reason"] is None for e in events)


async def test_hang_times_out_and_server_stops_promptly(upstream: MockUpstream) -> None:
    upstream.options.fail = "hang"
    async with serve_asgi(upstream.app()) as base:
        async with httpx.AsyncClient(base_url=base, timeout=0.3) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.post(CHAT, json=BODY)
        stopping = time.monotonic()
    # well under the 5 s graceful-shutdown cap: the disconnect ended the hang
    assert time.monotonic() - stopping < 2


async def test_mock_server_releases_hangs_on_stop(
    upstream: MockUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream.options.fail = "hang"

    def factory(config: uvicorn.Config) -> uvicorn.Server:
        return MockServer(config, upstream)

    async with httpx.AsyncClient(timeout=10) as c:
        async with serve_asgi(upstream.app(), server_factory=factory) as base:
            pending = asyncio.create_task(c.post(base + CHAT, json=BODY))
            await eventually(lambda: upstream.requests, "the mock logged the request")
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 2
        response = await asyncio.wait_for(pending, timeout=2)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "mock_hang"
    assert f"listening on {base}" in capsys.readouterr().out
