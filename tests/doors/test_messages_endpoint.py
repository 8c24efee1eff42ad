"""``/v1/messages`` in process, with the fake upstream on loopback: routing, auth, errors,
history, pass-through to an ``anthropic`` provider, ``count_tokens`` and ``/v1/models``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from router.app import ProviderRouterApp
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    add_provider,
    app_client,
    last_request,
    make_settings,
    serve_asgi,
)

ANTHROPIC = {"x-api-key": ADMIN_TOKEN, "anthropic-version": "2023-06-01"}
HELLO = {
    "model": "mock-gpt",
    "max_tokens": 100,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "Hello there"}],
}
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


class Stack:
    def __init__(self, app: ProviderRouterApp, client: httpx.AsyncClient, upstream: MockUpstream):
        self.app, self.client, self.upstream = app, client, upstream

    async def post(self, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.client.post(path, json=body, headers={**ANTHROPIC, **headers})


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, kind: str = "openai") -> AsyncIterator[Stack]:
    upstream = MockUpstream(MockOptions())
    async with (
        serve_asgi(upstream.app()) as mock_url,
        app_client(make_settings(tmp_path)) as (
            app,
            client,
        ),
    ):
        if kind == "openai":
            await add_provider(client, "oa", f"{mock_url}/v1", ["mock-gpt"])
        else:
            root = f"{mock_url}/v1beta" if kind == "gemini" else mock_url
            config = {"baseURL": root, "apiKey": "sk-ant-upstream"}
            await add_provider(client, "ant", root, ["mock-gpt"], type=kind, config=config)
        yield Stack(app, client, upstream)


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block.strip():
            name, data = block.split("\n", 1)
            out.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


async def test_a_plain_message_is_translated_to_chat_and_back(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        response = await s.post("/v1/messages?beta=true", HELLO)
        assert response.status_code == 200, response.text
        message = response.json()
        sent = s.upstream.requests[-1]
        row = await last_request(s.client, s.app)

    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == "mock-gpt"
    assert message["content"] == [{"type": "text", "text": "mock reply alpha bravo charlie"}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    assert message["usage"] == {"input_tokens": 4, "output_tokens": 5}
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]
    assert sent.json["max_tokens"] == 100
    assert "x-api-key" not in sent.headers and ADMIN_TOKEN not in str(sent.headers)
    assert row["endpoint"] == "messages" and row["status"] == "success"
    assert row["prompt_tokens"] == 4 and row["completion_tokens"] == 5


async def test_a_stream_follows_the_grammar_and_is_recorded(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        response = await s.post("/v1/messages", {**HELLO, "stream": True})
        row = await last_request(s.client, s.app)

    assert response.headers["content-type"].startswith("text/event-stream")
    names = [name for name, _ in events(response.content)]
    assert names == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    final = events(response.content)[-2][1]
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] == 5
    assert row["endpoint"] == "messages" and row["stream"] and row["completion_tokens"] == 5


async def test_a_tool_round_trip_through_an_openai_upstream(tmp_path: Path) -> None:
    ask: dict[str, Any] = {**HELLO, "tools": [WEATHER], "messages": [
        {"role": "user", "content": "Weather in Paris? mock-tool-call:get_weather"}
    ]}  # fmt: skip
    async with stack(tmp_path) as s:
        first = (await s.post("/v1/messages", ask)).json()
        call = first["content"][0]
        follow = {**ask, "messages": [
            *ask["messages"],
            {"role": "assistant", "content": first["content"]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": call["id"], "content": "Sunny"},
                {"type": "text", "text": "Thanks."},
            ]},
        ]}  # fmt: skip
        second = (await s.post("/v1/messages", follow)).json()
        sent = s.upstream.requests[-1].json

    assert first["stop_reason"] == "tool_use"
    assert call["type"] == "tool_use" and call["name"] == "get_weather"
    assert call["input"] == {"city": "mock"}
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][-3]["tool_calls"][0]["id"] == call["id"]
    assert sent["messages"][-2] == {"role": "tool", "tool_call_id": call["id"], "content": "Sunny"}
    assert sent["messages"][-1] == {"role": "user", "content": "Thanks."}
    assert second["stop_reason"] == "end_turn" and second["content"][0]["type"] == "text"


async def test_a_streamed_tool_call_starts_at_index_zero(tmp_path: Path) -> None:
    ask = {**HELLO, "stream": True, "tools": [WEATHER], "messages": [
        {"role": "user", "content": "mock-tool-call"}
    ]}  # fmt: skip
    async with stack(tmp_path) as s:
        response = await s.post("/v1/messages", ask)

    found = events(response.content)
    starts = [data for name, data in found if name == "content_block_start"]
    assert [b["index"] for b in starts] == [0]
    assert starts[0]["content_block"]["type"] == "tool_use"
    partial = "".join(d["delta"]["partial_json"] for n, d in found if n == "content_block_delta")
    assert orjson.loads(partial) == {"city": "mock"}
    assert found[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_errors_come_in_anthropics_shape(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        missing = await s.post("/v1/messages", {**HELLO, "max_tokens": None})
        unknown = await s.post("/v1/messages", {**HELLO, "model": "no-such-model"})
        s.upstream.options = MockOptions(fail="status:503")
        overloaded = await s.post("/v1/messages", HELLO)
        overloaded_stream = await s.post("/v1/messages", {**HELLO, "stream": True})
        s.upstream.options = MockOptions(fail="status:400")
        refused = await s.post("/v1/messages", HELLO)
        row = await last_request(s.client, s.app, refused)

    def error(response: httpx.Response, status: int, kind: str) -> str:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == kind
        message: str = body["error"]["message"]
        return message

    assert "max_tokens" in error(missing, 400, "invalid_request_error")
    assert "no-such-model" in error(unknown, 404, "not_found_error")
    assert "failed" in error(overloaded, 529, "overloaded_error")
    error(overloaded_stream, 529, "overloaded_error")  # fell back before the first byte
    error(refused, 400, "invalid_request_error")
    assert row["endpoint"] == "messages" and row["status_code"] == 400


async def test_errors_before_the_door_parses_are_in_anthropics_shape(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, max_body_bytes=2000, max_header_bytes=1024, require_client_keys=True
    )
    big_header = {"x-padding": "x" * 1500}
    big_body = {**HELLO, "system": "x" * 3000}
    answers: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    async with app_client(settings) as (_, client):
        for path in ("/v1/messages?beta=true", "/v1/messages/count_tokens", "/messages"):
            found = answers[path] = []
            for headers, sent in (
                ({**ANTHROPIC, **big_header}, HELLO),
                (ANTHROPIC, big_body),
                ({"anthropic-version": "2023-06-01"}, HELLO),
            ):
                response = await client.post(path, json=sent, headers=headers)
                found.append((response.status_code, response.json()))
        for method, path in (("POST", "/v1/messages/batches"), ("GET", "/v1/messages")):
            response = await client.request(method, path, headers=ANTHROPIC)
            answers[f"{method} {path}"] = [(response.status_code, response.json())]
        # Elsewhere the same failures keep OpenAI's shape.
        chat = [
            await client.post("/v1/chat/completions", json=HELLO, headers=big_header),
            await client.post("/v1/chat/completions", json=big_body, headers=ADMIN),
            await client.post("/v1/chat/completions", json=HELLO),
            await client.post("/v1/messagesx", json=HELLO, headers=ADMIN),
        ]

    expected = [
        (431, "request_too_large"),
        (413, "request_too_large"),
        (401, "authentication_error"),
    ]
    for path in ("/v1/messages?beta=true", "/v1/messages/count_tokens", "/messages"):
        for (status, body), (want, kind) in zip(answers[path], expected, strict=True):
            assert status == want, (path, body)
            assert body["type"] == "error" and body["error"]["type"] == kind, (path, body)
            assert set(body["error"]) == {"type", "message"} and body["error"]["message"]
    for key in ("POST /v1/messages/batches", "GET /v1/messages"):
        [(status, body)] = answers[key]
        assert status == 404 and body["error"]["type"] == "not_found_error", (key, body)
        assert key in body["error"]["message"]
    assert [r.status_code for r in chat] == [431, 413, 401, 404]
    for response in chat:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_client_keys_work_as_x_api_key_and_keep_their_rules(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        made = await s.client.post(
            "/v1/keys", json={"name": "claude", "models": ["mock-gpt"]}, headers=ADMIN
        )
        key = made.json()["key"]
        anonymous = await s.client.post("/v1/messages", json=HELLO)
        wrong = await s.post("/v1/messages", HELLO, **{"x-api-key": "sk-not-a-key"})
        ok = await s.post("/v1/messages", HELLO, **{"x-api-key": key})
        as_bearer = await s.client.post(
            "/v1/messages", json=HELLO, headers={"authorization": f"Bearer {key}"}
        )
        denied = await s.post("/v1/messages", {**HELLO, "model": "other"}, **{"x-api-key": key})

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    assert "x-api-key" in anonymous.json()["error"]["message"]
    assert wrong.status_code == 401
    assert ok.status_code == 200 and as_bearer.status_code == 200
    assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"


async def test_to_an_anthropic_provider_the_body_passes_through(tmp_path: Path) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    body = {
        **HELLO,
        "thinking": thinking,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral"}}
        ]}],
        "some_future_field": {"kept": True},
    }  # fmt: skip
    beta = {"anthropic-beta": "interleaved-thinking-2025-05-14", "anthropic-version": "2099-01-01"}
    async with stack(tmp_path, "anthropic") as s:
        reply = await s.post("/v1/messages", body, **beta)
        sent = s.upstream.requests[-1]
        streamed = await s.post("/v1/messages", {**body, "stream": True}, **beta)
        row = await last_request(s.client, s.app)
        s.upstream.options = MockOptions(fail="status:400")
        refused = await s.post("/v1/messages", body)

    assert reply.status_code == 200, reply.text
    assert sent.path == "/v1/messages"
    assert sent.json == {**body, "model": "mock-gpt"}  # unknown fields survive
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert sent.headers["anthropic-version"] == "2099-01-01"
    assert sent.headers["x-api-key"] == "sk-ant-upstream"
    assert reply.json()["id"].startswith("msg_mock_")  # the upstream's own answer
    names = [name for name, _ in events(streamed.content)]
    assert names[0] == "message_start" and names[1] == "ping" and names[-1] == "message_stop"
    assert row["endpoint"] == "messages" and row["provider_id"] == "ant"
    assert row["prompt_tokens"] == 3 and row["completion_tokens"] == 5
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith("Request refused (mock upstream")


async def test_a_truncated_upstream_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    for kind in ("openai", "anthropic"):
        async with stack(tmp_path / kind, kind) as s:
            s.upstream.options = MockOptions(fail="truncate")
            response = await s.post("/v1/messages", {**HELLO, "stream": True})
            row = await last_request(s.client, s.app)
        found = events(response.content)
        assert found[-1][0] == "error", kind
        assert found[-1][1]["error"]["type"] == "api_error"
        assert "message_stop" not in [name for name, _ in found]
        assert row["status"] == "error"


async def test_a_mid_stream_error_event_keeps_the_upstreams_type(tmp_path: Path) -> None:
    async with stack(tmp_path, "anthropic") as s:
        s.upstream.options = MockOptions(fail="error_event")
        response = await s.post("/v1/messages", {**HELLO, "stream": True})
        row = await last_request(s.client, s.app)
    found = events(response.content)
    names = [name for name, _ in found]
    assert names[0] == "message_start" and "content_block_delta" in names
    assert names[-1] == "error" and "message_stop" not in names
    error = found[-1][1]["error"]
    assert error["type"] == "overloaded_error", error  # not a generic api_error
    assert "Overloaded (mock upstream)" in error["message"]
    assert row["status"] == "error" and row["provider_id"] == "ant"


async def test_count_tokens_asks_anthropic_and_gemini_and_estimates_otherwise(
    tmp_path: Path,
) -> None:
    body = {"model": "mock-gpt", "system": "Be brief.", "messages": HELLO["messages"]}
    async with stack(tmp_path / "oa") as s:
        estimated = await s.post("/v1/messages/count_tokens?beta=true", body)
        calls = len(s.upstream.requests)
    async with stack(tmp_path / "g", "gemini") as s:
        counted = await s.post("/v1/messages/count_tokens", body)
        gemini_sent = s.upstream.requests[-1]
    async with stack(tmp_path / "a", "anthropic") as s:
        native = await s.post("/v1/messages/count_tokens", {**body, "thinking": {}})
        anthropic_sent = s.upstream.requests[-1]

    # "Be brief." + "Hello there" = 20 characters: 5 tokens at four characters a token.
    assert estimated.json() == {"input_tokens": 5}
    assert calls == 0
    assert counted.json() == {"input_tokens": 2}  # the fake Gemini counts words of contents
    assert gemini_sent.path.endswith(":countTokens")
    assert anthropic_sent.path == "/v1/messages/count_tokens"
    assert anthropic_sent.json["thinking"] == {}
    assert native.json() == {"input_tokens": 4}  # the fake Anthropic counts words too


async def test_models_in_anthropics_shape_with_paging(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        for name in ("model-b", "model-c"):
            made = await s.client.post("/v1/models", json={"id": name}, headers=ADMIN)
            assert made.status_code == 201, made.text
        openai_shape = await s.client.get("/v1/models", headers=ADMIN)
        first = await s.client.get("/v1/models?limit=2", headers=ANTHROPIC)
        after = first.json()["last_id"]
        second = await s.client.get(f"/v1/models?limit=2&after_id={after}", headers=ANTHROPIC)
        before = await s.client.get("/v1/models?before_id=mock-gpt", headers=ANTHROPIC)
        bad = await s.client.get("/v1/models?limit=0", headers=ANTHROPIC)

    assert openai_shape.json()["object"] == "list"
    page = first.json()
    assert [m["id"] for m in page["data"]] == ["mock-gpt", "model-b"]
    assert page["has_more"] is True and page["first_id"] == "mock-gpt"
    model = page["data"][0]
    assert model["type"] == "model" and model["display_name"] == "mock-gpt"
    assert model["created_at"].endswith("Z")
    assert [m["id"] for m in second.json()["data"]] == ["model-c"]
    assert second.json()["has_more"] is False
    assert before.json()["data"] == [] and before.json()["first_id"] is None
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
