"""``/v1/responses`` in process, with the fake upstream on loopback: translation both ways, the
stream, stored responses and their owners, ``previous_response_id``, errors, history, and the
pass-through to a provider that serves the Responses API itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from router.app import ProviderRouterApp
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import (
    ADMIN,
    TEST_SECRET_KEY,
    add_provider,
    app_client,
    eventually,
    last_request,
    make_settings,
    query,
    running_app,
    serve_asgi,
)

HELLO: dict[str, Any] = {"model": "mock-gpt", "instructions": "Be brief.", "input": "Hello there"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
FIVE_WORDS = "mock reply alpha bravo charlie"


class Stack:
    def __init__(self, app: ProviderRouterApp, client: httpx.AsyncClient, upstream: MockUpstream):
        self.app, self.client, self.upstream = app, client, upstream

    async def post(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.client.post("/v1/responses", json=body, headers=headers or ADMIN)

    def sent(self) -> dict[str, Any]:
        found: dict[str, Any] = self.upstream.requests[-1].json
        return found


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for each backend: stored responses are rows, so they run on both."""
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("postgres_url"), "secret_key": TEST_SECRET_KEY}


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, kind: str = "openai", **settings: Any) -> AsyncIterator[Stack]:
    upstream = MockUpstream(MockOptions())
    async with (
        serve_asgi(upstream.app()) as mock_url,
        app_client(make_settings(tmp_path, **settings)) as (app, client),
    ):
        if kind == "openai":
            await add_provider(client, "oa", f"{mock_url}/v1", ["mock-gpt"])
        else:
            root = f"{mock_url}/v1beta" if kind == "gemini" else mock_url
            config = {"baseURL": root, "apiKey": "sk-upstream"}
            await add_provider(client, "other", root, ["mock-gpt"], type=kind, config=config)
        yield Stack(app, client, upstream)


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each frame; checks that the name is the data's type."""
    out = []
    for block in raw.decode().split("\n\n"):
        if block.strip():
            name, data = block.split("\n", 1)
            found = orjson.loads(data.removeprefix("data: "))
            assert name.removeprefix("event: ") == found["type"]
            out.append((found["type"], found))
    return out


async def test_a_plain_request_is_translated_to_chat_and_back(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        answer = await s.post({**HELLO, "max_output_tokens": 50, "temperature": 0.5})
        sent = s.sent()
        row = await last_request(s.client, s.app)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert body["status"] == "completed" and body["model"] == "mock-gpt"
    assert body["instructions"] == "Be brief." and body["store"] is True
    [message] = body["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [
        {"type": "output_text", "text": FIVE_WORDS, "annotations": [], "logprobs": []}
    ]
    assert body["usage"] == {
        "input_tokens": 4,  # the fake counts the prompt's words
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 9,
    }
    assert sent == {
        "model": "mock-gpt",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"},
        ],
        "max_tokens": 50,
        "temperature": 0.5,
    }
    assert row["endpoint"] == "responses" and row["status"] == "success"
    assert row["prompt_tokens"] == 4 and row["completion_tokens"] == 5


async def test_fields_a_chat_upstream_would_refuse_are_never_forwarded(tmp_path: Path) -> None:
    extra = {
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "abc",
        "client_metadata": {"x": "y"},
        "service_tier": "auto",
        "truncation": "auto",
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"format": {"type": "json_object"}},
        "user": "u-1",
        "metadata": {"team": "a"},
        "stream": True,
    }
    async with stack(tmp_path) as s:
        answer = await s.post({**HELLO, **extra})
        sent = s.sent()
    assert answer.status_code == 200
    assert set(sent) == {
        "model", "messages", "stream", "stream_options", "reasoning_effort", "response_format",
        "user", "metadata",
    }  # fmt: skip
    assert sent["reasoning_effort"] == "low" and sent["response_format"] == {"type": "json_object"}
    assert sent["stream_options"] == {"include_usage": True}


async def test_a_stream_follows_the_grammar_and_is_recorded(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        answer = await s.post({**HELLO, "stream": True})
        row = await last_request(s.client, s.app)

    assert answer.headers["content-type"].startswith("text/event-stream")
    found = events(answer.content)
    assert [name for name, _ in found] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 5,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in found] == list(range(len(found)))
    assert "".join(d["delta"] for n, d in found if n == "response.output_text.delta") == FIVE_WORDS
    final = found[-1][1]["response"]
    assert final["status"] == "completed" and final["usage"]["output_tokens"] == 5
    assert final["output"][0]["content"][0]["text"] == FIVE_WORDS
    assert b"[DONE]" not in answer.content
    assert row["endpoint"] == "responses" and row["stream"] and row["completion_tokens"] == 5


async def test_fallback_and_cost_work_as_for_chat_completions(tmp_path: Path) -> None:
    broken = MockUpstream(MockOptions(fail="status:503"))
    async with serve_asgi(broken.app()) as broken_url, stack(tmp_path) as s:
        await add_provider(s.client, "first", f"{broken_url}/v1", [], priority=5)
        for provider, prices in (
            ("first", {}),
            ("oa", {"input_cost_per_1k": 1.0, "output_cost_per_1k": 2.0}),
        ):
            link = {"model_id": "priced", "upstream_model": "mock-gpt", **prices}
            await s.client.post(f"/v1/providers/{provider}/models", json=link, headers=ADMIN)
        streamed = await s.post({**HELLO, "model": "priced", "stream": True})
        row = await last_request(s.client, s.app)
    assert events(streamed.content)[-1][0] == "response.completed"
    assert streamed.headers["x-provider-router-provider"] == "oa"
    assert [a["provider_id"] for a in row["attempt_details"]] == ["first", "oa"]
    assert row["cost"] == pytest.approx(4 * 1.0 / 1000 + 5 * 2.0 / 1000)


async def test_a_length_finish_is_an_incomplete_response(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        plain = (await s.post({**HELLO, "max_output_tokens": 2})).json()
        streamed = events((await s.post({**HELLO, "max_output_tokens": 2, "stream": True})).content)
    assert plain["status"] == "incomplete"
    assert plain["incomplete_details"] == {"reason": "max_output_tokens"}
    assert streamed[-1][0] == "response.incomplete"
    assert streamed[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_a_tool_round_trip_with_items(tmp_path: Path) -> None:
    ask = {"model": "mock-gpt", "tools": [WEATHER], "input": "Weather in Paris? mock-tool-call"}
    async with stack(tmp_path) as s:
        streamed = await s.post({**ask, "stream": True, "store": False})
        found = events(streamed.content)
        call = found[-1][1]["response"]["output"][0]
        follow = {
            "model": "mock-gpt",
            "tools": [WEATHER],
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": ask["input"]}]},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text",
                                                                  "text": "hidden"}]},
                call,
                {"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny"},
            ],
        }  # fmt: skip
        second = await s.post(follow)
        sent = s.sent()

    names = [name for name, _ in found]
    assert names[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert found[2][1]["item"]["arguments"] == "" and found[2][1]["output_index"] == 0
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert orjson.loads(call["arguments"]) == {"city": "mock"}
    assert sent["tools"] == [
        {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ]
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["call_id"], "type": "function",
             "function": {"name": "get_weather", "arguments": call["arguments"]}},
        ]},
        {"role": "tool", "tool_call_id": call["call_id"], "content": "Sunny"},
    ]  # fmt: skip
    assert "hidden" not in str(sent)
    assert second.json()["output"][0]["content"][0]["text"] == FIVE_WORDS


async def test_stored_responses_can_be_read_listed_continued_and_deleted(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with stack(tmp_path, **backend) as s:
        first = (await s.post(HELLO)).json()
        # Continued at once: the write may still be pending; the keeper answers from memory.
        second = await s.post(
            {"model": "mock-gpt", "input": "And again?", "previous_response_id": first["id"],
             "stream": True}
        )  # fmt: skip
        sent = s.sent()
        second_id = events(second.content)[-1][1]["response"]["id"]
        got = await s.client.get(f"/v1/responses/{first['id']}", headers=ADMIN)
        items = await s.client.get(f"/v1/responses/{second_id}/input_items", headers=ADMIN)
        keeper = s.app.services.proxy.responses_door.keeper if s.app.services else None
        assert keeper is not None
        await keeper.stop()
        where = backend.get("database_url") or tmp_path / "router.db"
        rows = query(where, "SELECT id, previous_response_id FROM responses")
        deleted = await s.client.delete(f"/v1/responses/{first['id']}", headers=ADMIN)
        gone = await s.client.get(f"/v1/responses/{first['id']}", headers=ADMIN)
        broken = await s.post({**HELLO, "previous_response_id": first["id"]})

    assert got.status_code == 200 and got.json() == first
    # As in OpenAI's API, the earlier response's instructions are not carried over.
    assert sent["messages"] == [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": FIVE_WORDS},
        {"role": "user", "content": "And again?"},
    ]
    listed = items.json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [i["content"][0]["text"] for i in listed["data"]] == ["And again?"]
    assert sorted(rows) == sorted([(first["id"], None), (second_id, first["id"])])
    assert deleted.json() == {"id": first["id"], "object": "response", "deleted": True}
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "invalid_request_error"
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "previous_response_not_found"
    assert broken.json()["error"]["param"] == "previous_response_id"


async def test_the_message_limit_counts_the_whole_conversation(tmp_path: Path) -> None:
    async with stack(tmp_path, max_messages=2) as s:
        first = (await s.post(HELLO)).json()  # system + user: 2 messages
        follow = {"model": "mock-gpt", "input": "More?", "previous_response_id": first["id"]}
        refused = await s.post(follow)  # user, assistant (earlier), and the new user turn: 3
        row = await last_request(s.client, s.app)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "too_many_messages"
    assert row["model"] == "mock-gpt" and row["endpoint"] == "responses"


async def test_input_items_are_paged_as_openai_pages_them(tmp_path: Path) -> None:
    texts = [f"turn {n}" for n in range(5)]
    turns = [{"role": "user", "content": text} for text in texts]
    async with stack(tmp_path) as s:
        made = (await s.post({"model": "mock-gpt", "input": turns})).json()
        path = f"/v1/responses/{made['id']}/input_items"
        newest = (await s.client.get(path, params={"limit": 2}, headers=ADMIN)).json()
        after = {"limit": 2, "after": newest["last_id"]}
        then = (await s.client.get(path, params=after, headers=ADMIN)).json()
        oldest = (await s.client.get(path, params={"order": "asc"}, headers=ADMIN)).json()
        bad = await s.client.get(path, params={"limit": 101}, headers=ADMIN)

    def text(page: dict[str, Any]) -> list[str]:
        return [item["content"] for item in page["data"]]

    assert text(newest) == ["turn 4", "turn 3"] and newest["has_more"] is True
    assert text(then) == ["turn 2", "turn 1"] and then["has_more"] is True
    assert text(oldest) == texts and oldest["has_more"] is False
    assert oldest["first_id"] == oldest["data"][0]["id"]
    assert all(item["id"].startswith("msg_") for item in oldest["data"])
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


async def test_a_response_belongs_to_the_key_that_made_it(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with stack(tmp_path, **backend) as s:
        keys = []
        for name in ("alice", "bob"):
            made = await s.client.post("/v1/keys", json={"name": name}, headers=ADMIN)
            keys.append({"authorization": f"Bearer {made.json()['key']}"})
        alice, bob = keys
        mine = (await s.post(HELLO, **alice)).json()
        path = f"/v1/responses/{mine['id']}"
        as_alice = await s.client.get(path, headers=alice)
        as_bob = await s.client.get(path, headers=bob)
        bob_items = await s.client.get(f"{path}/input_items", headers=bob)
        bob_continues = await s.post({**HELLO, "previous_response_id": mine["id"]}, **bob)
        bob_deletes = await s.client.delete(path, headers=bob)
        nobody = await s.client.get(path)
        as_admin = await s.client.get(path, headers=ADMIN)
        alice_continues = await s.post({**HELLO, "previous_response_id": mine["id"]}, **alice)
        alice_deletes = await s.client.delete(path, headers=alice)

    assert as_alice.status_code == 200 and as_alice.json()["id"] == mine["id"]
    for refused in (as_bob, bob_items, bob_deletes):
        assert refused.status_code == 404, refused.text
    assert bob_continues.status_code == 400
    assert nobody.status_code == 401
    assert as_admin.status_code == 200
    assert alice_continues.status_code == 200 and alice_deletes.status_code == 200


async def test_store_false_keeps_nothing_but_the_history_row(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        made = (await s.post({**HELLO, "store": False})).json()
        streamed = await s.post({**HELLO, "store": False, "stream": True})
        found = await s.client.get(f"/v1/responses/{made['id']}", headers=ADMIN)
        row = await last_request(s.client, s.app)
    assert made["store"] is False and found.status_code == 404
    assert events(streamed.content)[-1][0] == "response.completed"
    assert query(tmp_path / "router.db", "SELECT count(*) FROM responses") == [(0,)]
    assert row["endpoint"] == "responses"


async def test_requests_that_cannot_be_served_get_a_clear_400(tmp_path: Path) -> None:
    cases = {
        "background": {**HELLO, "background": True},
        "conversation": {**HELLO, "conversation": "conv_1"},
        "prompt": {**HELLO, "prompt": {"id": "pmpt_1"}},
        "unknown_field": {**HELLO, "unknown_field": 1},
        "input": {"model": "mock-gpt"},
        "input[0].type": {"model": "mock-gpt", "input": [{"type": "computer_call_output"}]},
        "input[0].role": {"model": "mock-gpt", "input": [{"role": "robot", "content": "x"}]},
        "max_output_tokens": {**HELLO, "max_output_tokens": 0},
        "stream": {**HELLO, "stream": "yes"},
    }
    async with stack(tmp_path) as s:
        answers = {param: await s.post(body) for param, body in cases.items()}
        requests_upstream = len(s.upstream.requests)
    for param, answer in answers.items():
        assert answer.status_code == 400, (param, answer.text)
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param, error
        assert error["message"]
    assert "previous_response_id" in answers["conversation"].json()["error"]["message"]
    assert requests_upstream == 0


async def test_upstream_errors_before_the_first_byte_are_openai_errors(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        s.upstream.options = MockOptions(fail="status:503")
        failed = await s.post({**HELLO, "stream": True})
        s.upstream.options = MockOptions(fail="status:400")
        refused = await s.post(HELLO)
        unknown = await s.post({**HELLO, "model": "no-such-model"})
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "all_providers_failed"
    assert refused.status_code == 400 and "error" in refused.json()
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


async def test_a_stream_that_breaks_off_ends_with_response_failed(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        s.upstream.options = MockOptions(fail="truncate")
        answer = await s.post({**HELLO, "stream": True})
        row = await last_request(s.client, s.app)
    found = events(answer.content)
    assert found[0][0] == "response.created"
    assert found[-1][0] == "response.failed"
    failed = found[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert "broke off" in failed["error"]["message"]
    assert [data["sequence_number"] for _, data in found] == list(range(len(found)))
    assert row["status"] == "error" and row["endpoint"] == "responses"


@pytest.mark.parametrize(
    ("kind", "path"),
    [("anthropic", "/v1/messages"), ("gemini", "/v1beta/models/mock-gpt:streamGenerateContent"),
     ("ollama", "/api/chat")],
)  # fmt: skip
async def test_other_upstream_types_serve_responses_through_chat(
    tmp_path: Path, kind: str, path: str
) -> None:
    ask = {"model": "mock-gpt", "tools": [WEATHER], "input": "Weather? mock-tool-call"}
    async with stack(tmp_path, kind=kind) as s:
        plain = (await s.post(HELLO)).json()
        streamed = events((await s.post({**HELLO, "stream": True})).content)
        sent = s.upstream.requests[-1]
        called = events((await s.post({**ask, "stream": True})).content)
    assert plain["status"] == "completed" and plain["usage"]["output_tokens"] == 5
    assert plain["output"][-1]["content"][0]["text"] == FIVE_WORDS
    assert streamed[-1][0] == "response.completed"
    assert "".join(d["delta"] for n, d in streamed if n == "response.output_text.delta") == (
        FIVE_WORDS
    )
    assert sent.path.startswith(path), sent.path
    calls = [i for i in called[-1][1]["response"]["output"] if i["type"] == "function_call"]
    assert [c["name"] for c in calls] == ["get_weather"]
    # The Gemini and Ollama fakes pass the prompt as the call's arguments.
    expected = {"city": "mock"} if kind == "anthropic" else {"query": ask["input"]}
    assert orjson.loads(calls[0]["arguments"]) == expected


# A provider that serves the Responses API itself: an inline fake that records what it got.
NATIVE_EVENTS: list[dict[str, Any]] = [
    {"type": "response.created", "response": {"id": "resp_up", "status": "in_progress"}},
    {"type": "response.output_text.delta", "delta": "native"},
    {
        "type": "response.completed",
        "response": {
            "id": "resp_up", "object": "response", "status": "completed", "model": "gpt-up",
            "output": [{"type": "message", "id": "msg_up", "role": "assistant", "status":
                        "completed", "content": [{"type": "output_text", "text": "native",
                                                  "annotations": []}]}],
            "usage": {"input_tokens": 7, "output_tokens": 1, "total_tokens": 8},
        },
    },
]  # fmt: skip


def native_upstream(received: list[dict[str, Any]]) -> Starlette:
    async def responses(request: Request) -> Response:
        body = orjson.loads(await request.body())
        received.append(body)
        if not body.get("stream"):
            return Response(orjson.dumps(NATIVE_EVENTS[-1]["response"]),
                            media_type="application/json")  # fmt: skip

        async def frames() -> AsyncIterator[bytes]:
            for n, data in enumerate(NATIVE_EVENTS):
                yield (
                    b"event: "
                    + data["type"].encode()
                    + b"\ndata: "
                    + orjson.dumps({**data, "sequence_number": n})
                    + b"\n\n"
                )

        return StreamingResponse(frames(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/responses", responses, methods=["POST"])])


async def test_a_responses_provider_gets_the_body_with_only_the_model_replaced(
    tmp_path: Path,
) -> None:
    received: list[dict[str, Any]] = []
    ask = {**HELLO, "include": ["reasoning.encrypted_content"], "stream": True}
    async with (
        serve_asgi(native_upstream(received)) as url,
        app_client(make_settings(tmp_path)) as (app, client),
    ):
        await add_provider(client, "native", f"{url}/v1", [], config={"responsesAPI": True})
        link = {"model_id": "gpt-front", "upstream_model": "gpt-up"}
        await client.post("/v1/providers/native/models", json=link, headers=ADMIN)
        streamed = await client.post("/v1/responses", json={**ask, "model": "gpt-front"},
                                     headers=ADMIN)  # fmt: skip
        plain = await client.post(
            "/v1/responses", json={**HELLO, "model": "gpt-front", "store": False}, headers=ADMIN
        )
        stored = await eventually(
            lambda: client.get("/v1/responses/resp_up", headers=ADMIN), "stored"
        )
        row = await last_request(client, app)
        follow = {"model": "gpt-front", "input": "And?", "previous_response_id": "resp_up"}
        continued = await client.post("/v1/responses", json=follow, headers=ADMIN)

    assert received[0] == {**ask, "model": "gpt-up"}  # nothing added: no stream_options
    assert received[1] == {**HELLO, "model": "gpt-up", "store": False}
    assert streamed.content == b"".join(
        b"event: " + d["type"].encode() + b"\ndata: " + orjson.dumps({**d, "sequence_number": n})
        + b"\n\n"
        for n, d in enumerate(NATIVE_EVENTS)
    )  # fmt: skip
    assert plain.json()["id"] == "resp_up"
    assert stored.status_code == 200 and stored.json()["output"][0]["id"] == "msg_up"
    assert row["provider_id"] == "native" and row["prompt_tokens"] == 7
    # Continued through the gateway's store: the conversation goes up as items, no id.
    assert continued.status_code == 200
    sent = received[-1]
    assert "previous_response_id" not in sent and sent["model"] == "gpt-up"
    texts = [item.get("content") for item in sent["input"]]
    assert texts[0] == [{"type": "input_text", "text": "Hello there"}]
    assert sent["input"][1]["id"] == "msg_up" and texts[-1][0]["text"] == "And?"


async def test_what_only_a_responses_provider_can_take_skips_the_chat_ones(
    tmp_path: Path,
) -> None:
    """A built-in tool's item cannot go to a chat upstream: such providers of the model are
    skipped (not counted as failing), and the one that serves Responses itself gets it."""
    received: list[dict[str, Any]] = []
    item = {"type": "computer_call_output", "call_id": "c1", "output": {"type": "x"}}
    ask = {"model": "mixed", "input": [item], "store": False}
    async with (
        serve_asgi(native_upstream(received)) as native_url,
        stack(tmp_path) as s,
    ):
        await add_provider(s.client, "native", f"{native_url}/v1", [], priority=1,
                           config={"responsesAPI": True})  # fmt: skip
        for provider in ("oa", "native"):
            link = {"model_id": "mixed", "upstream_model": "gpt-up"}
            linked = await s.client.post(f"/v1/providers/{provider}/models", json=link,
                                         headers=ADMIN)  # fmt: skip
            assert linked.status_code == 201, linked.text
        await s.client.put("/v1/providers/oa", json={"priority": 5}, headers=ADMIN)
        served = await s.post(ask)
        row = await last_request(s.client, s.app)
        refused = await s.post({**ask, "model": "mock-gpt"})  # only the chat provider
        chat_calls = len(s.upstream.requests)
    assert served.status_code == 200, served.text
    assert received == [{**ask, "model": "gpt-up"}]
    assert [a["provider_id"] for a in row["attempt_details"]] == ["oa", "native"]
    assert "cannot take this request" in row["attempt_details"][0]["error"]
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "input[0].type"
    assert chat_calls == 0


@pytest.mark.parametrize("ws", ["wsproto", "none"])
async def test_a_websocket_upgrade_is_answered_426_at_once(tmp_path: Path, ws: str) -> None:
    """A real upgrade handshake over a socket, as Codex sends it, to a real uvicorn server: with
    a WebSocket implementation (the app gets a websocket scope) and without one (uvicorn hands
    the upgrade request over as plain HTTP)."""

    def server(config: uvicorn.Config) -> uvicorn.Server:
        config.ws = ws
        return uvicorn.Server(config)

    async with (
        running_app(make_settings(tmp_path)) as app,
        serve_asgi(app, server_factory=server) as url,
    ):
        host, port = url.removeprefix("http://").split(":")
        for path in ("/v1/responses", "/responses"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: Upgrade\r\n"
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Authorization: {ADMIN['authorization']}\r\n\r\n".encode()
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )  # fmt: skip
            body = await asyncio.wait_for(reader.readexactly(length), 10)
            writer.close()
            await writer.wait_closed()
            assert head.startswith(b"HTTP/1.1 426 "), head
            assert orjson.loads(body)["error"]["code"] == "websocket_not_supported"
        async with httpx.AsyncClient(base_url=url) as http:
            plain = await http.get("/v1/responses", headers=ADMIN)
    assert plain.status_code == 405 and plain.headers["allow"] == "POST"
