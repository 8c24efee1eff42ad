"""The request path in process: routing, fallback, pass-through, errors and recording.

Upstreams are faked with respx; the app runs with its real lifespan and a real SQLite file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from router.settings import Settings
from tests.helpers import ADMIN, add_provider, app_client, make_settings, sse_chunks

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}


def completion(text: str = "hi", model: str = "gpt-test") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def sse(*events: Any, done: bool = True) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


USAGE_CHUNK = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-test",
    "choices": [],
    "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
}


async def requests_rows(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    app = client._transport.app  # type: ignore[attr-defined]
    await app.services.recorder.flush()
    response = await client.get("/v1/requests", headers=ADMIN)
    assert response.status_code == 200
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


async def request_detail(client: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/requests/{request_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


async def first_and_second(client: httpx.AsyncClient) -> None:
    """Providers "first" (tried first) and "second", both serving gpt-test."""
    await add_provider(client, "first", "http://first.test/v1", ["gpt-test"], priority=2)
    await add_provider(client, "second", "http://second.test/v1", ["gpt-test"], priority=1)


async def test_chat_passes_the_upstream_answer_through_with_our_headers(
    upstreams: respx.MockRouter,
    client: httpx.AsyncClient,
) -> None:
    await add_provider(client, "up-a", "http://a.test/v1", ["gpt-test"])
    upstream = upstreams.post("http://a.test/v1/chat/completions").respond(json=completion("hey"))

    response = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer client-secret-key"}
    )

    assert response.status_code == 200
    assert response.json() == completion("hey")
    assert response.headers["x-provider-router-provider"] == "up-a"
    assert response.headers["x-request-id"].startswith("req_")
    sent = upstream.calls.last.request
    assert sent.headers["authorization"] == "Bearer sk-upstream-up-a"
    assert b"client-secret-key" not in sent.content
    assert "client-secret-key" not in str(sent.headers)
    assert orjson.loads(sent.content)["messages"] == CHAT["messages"]


async def test_upstream_model_renames_the_model_sent_upstream(
    upstreams: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    await add_provider(client, "up-a", "http://a.test/v1")
    link = {"model_id": "friendly", "upstream_model": "vendor/real-name-7b"}
    headers = ADMIN
    assert (await client.post("/v1/providers/up-a/models", json=link, headers=headers)).is_success
    upstream = upstreams.post("http://a.test/v1/chat/completions").respond(json=completion())

    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "friendly"})

    assert response.status_code == 200
    assert orjson.loads(upstream.calls.last.request.content)["model"] == "vendor/real-name-7b"


async def test_highest_priority_first_and_pinning_picks_one(
    upstreams: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    await add_provider(client, "low", "http://low.test/v1", ["gpt-test"], priority=1)
    await add_provider(client, "high", "http://high.test/v1", ["gpt-test"], priority=5)
    low = upstreams.post("http://low.test/v1/chat/completions").respond(json=completion("low"))
    high = upstreams.post("http://high.test/v1/chat/completions").respond(json=completion("high"))

    first = await client.post("/v1/chat/completions", json=CHAT)
    pinned = await client.post("/v1/chat/completions", json={**CHAT, "model": "low/gpt-test"})

    assert first.headers["x-provider-router-provider"] == "high"
    assert pinned.headers["x-provider-router-provider"] == "low"
    assert (high.call_count, low.call_count) == (1, 1)
    assert orjson.loads(low.calls.last.request.content)["model"] == "gpt-test"


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, json={"error": {"message": "boom"}}),
        httpx.Response(503, text="overloaded"),
        httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"retry-after": "3"}),
        httpx.Response(408),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
    ],
    ids=["500", "503", "429", "408", "connect-error", "timeout"],
)
async def test_retryable_failures_fall_back_to_the_next_provider(
    upstreams: respx.MockRouter, client: httpx.AsyncClient, failure: httpx.Response | Exception
) -> None:
    await first_and_second(client)
    route = upstreams.post("http://first.test/v1/chat/completions")
    if isinstance(failure, Exception):
        route.mock(side_effect=failure)
    else:
        route.mock(return_value=failure)
    upstreams.post("http://second.test/v1/chat/completions").respond(json=completion("saved"))

    response = await client.post("/v1/chat/completions", json=CHAT)

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "saved"
    assert response.headers["x-provider-router-provider"] == "second"
    # A refused connection is retried once on the same provider before moving on.
    refused = isinstance(failure, httpx.ConnectError)
    [row] = await requests_rows(client)
    assert (row["status"], row["provider_id"], row["attempts"]) == (
        "success",
        "second",
        3 if refused else 2,
    )
    detail = await request_detail(client, row["id"])
    *firsts, second = detail["attempt_details"]
    timed_out = isinstance(failure, httpx.TimeoutException)
    for first in firsts:
        assert (first["provider_id"], first["status"]) == (
            "first",
            "timeout" if timed_out else "error",
        )
        assert first["error"]
    assert (second["provider_id"], second["status"], second["status_code"]) == (
        "second",
        "success",
        200,
    )


async def test_a_client_error_upstream_is_passed_back_without_fallback(
    upstreams: respx.MockRouter,
    client: httpx.AsyncClient,
) -> None:
    await first_and_second(client)
    error = {"error": {"message": "context too long", "type": "invalid_request_error"}}
    upstreams.post("http://first.test/v1/chat/completions").respond(400, json=error)
    second = upstreams.post("http://second.test/v1/chat/completions").respond(json=completion())

    response = await client.post("/v1/chat/completions", json=CHAT)

    assert response.status_code == 400
    assert response.json() == error
    assert response.headers["x-provider-router-provider"] == "first"
    assert second.call_count == 0
    [row] = await requests_rows(client)
    assert (row["status"], row["status_code"], row["attempts"]) == ("error", 400, 1)


async def test_all_failed_is_a_502_naming_the_last_reason(
    upstreams: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    await first_and_second(client)
    upstreams.post("http://first.test/v1/chat/completions").respond(500)
    upstreams.post("http://second.test/v1/chat/completions").respond(
        503, json={"error": {"message": "model is loading"}}
    )

    response = await client.post("/v1/chat/completions", json=CHAT)

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "all_providers_failed"
    assert error["type"] == "upstream_error"
    assert "model is loading" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    [row] = await requests_rows(client)
    assert (row["status"], row["status_code"], row["attempts"]) == ("error", 502, 2)


async def test_unknown_model_is_404_and_disabled_providers_503(client: httpx.AsyncClient) -> None:
    await add_provider(client, "only", "http://only.test/v1", ["gpt-test"], enabled=False)

    unknown = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    unavailable = await client.post("/v1/chat/completions", json=CHAT)
    pinned_disabled = await client.post(
        "/v1/chat/completions", json={**CHAT, "model": "only/gpt-test"}
    )

    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert unknown.json()["error"]["param"] == "model"
    assert unavailable.status_code == 503
    assert unavailable.json()["error"]["code"] == "no_provider_available"
    assert pinned_disabled.status_code == 503


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "'model'"),
        (b'{"model": "gpt-test"}', "'messages'"),
        (b'{"model": "gpt-test", "messages": []}', "'messages'"),
        (b'{"model": "gpt-test", "messages": [{}], "stream": "yes"}', "'stream'"),
    ],
)
async def test_bad_requests_get_400_and_reach_no_upstream(
    upstreams: respx.MockRouter, client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    await add_provider(client, "up", "http://up.test/v1", ["gpt-test"])
    upstream = upstreams.post("http://up.test/v1/chat/completions").respond(json=completion())

    response = await client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.call_count == 0


async def test_body_over_the_limit_is_413_before_any_upstream(
    upstreams: respx.MockRouter, tmp_path: Path
) -> None:
    async with app_client(make_settings(tmp_path, max_body_bytes=1000)) as (_, client):
        await add_provider(client, "up", "http://up.test/v1", ["gpt-test"])
        upstream = upstreams.post("http://up.test/v1/chat/completions").respond(json=completion())
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}

        response = await client.post("/v1/chat/completions", json=big)
        small = await client.post("/v1/chat/completions", json=CHAT)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert small.status_code == 200
    assert upstream.call_count == 1


async def test_stream_passes_events_through_and_hides_usage_not_asked_for(
    upstreams: respx.MockRouter,
    client: httpx.AsyncClient,
) -> None:
    await add_provider(client, "up", "http://up.test/v1", ["gpt-test"])
    events = sse(chunk("Hel"), chunk("lo"), chunk(finish="stop"), USAGE_CHUNK)
    upstream = upstreams.post("http://up.test/v1/chat/completions").respond(
        content=events, headers={"content-type": "text/event-stream"}
    )

    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == sse(chunk("Hel"), chunk("lo"), chunk(finish="stop"))
    sent = orjson.loads(upstream.calls.last.request.content)
    assert sent["stream_options"] == {"include_usage": True}
    [row] = await requests_rows(client)
    assert (row["stream"], row["status"], row["prompt_tokens"], row["completion_tokens"]) == (
        True,
        "success",
        4,
        2,
    )
    assert row["ttft_ms"] is not None


async def test_stream_keeps_the_usage_chunk_when_the_client_asked(
    upstreams: respx.MockRouter,
    client: httpx.AsyncClient,
) -> None:
    await add_provider(client, "up", "http://up.test/v1", ["gpt-test"])
    events = sse(chunk("Hi"), chunk(finish="stop"), USAGE_CHUNK)
    upstreams.post("http://up.test/v1/chat/completions").respond(
        content=events, headers={"content-type": "text/event-stream"}
    )
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}

    response = await client.post("/v1/chat/completions", json=body)

    assert response.content == events


async def test_stream_falls_back_while_nothing_was_sent(
    upstreams: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    await first_and_second(client)
    upstreams.post("http://first.test/v1/chat/completions").respond(502, text="bad gateway")
    upstreams.post("http://second.test/v1/chat/completions").respond(
        content=sse(chunk("ok"), chunk(finish="stop")),
        headers={"content-type": "text/event-stream"},
    )

    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})

    assert response.status_code == 200
    assert response.headers["x-provider-router-provider"] == "second"
    assert response.content.endswith(b"data: [DONE]\n\n")


async def test_a_stream_that_dies_before_its_first_event_falls_back(
    upstreams: respx.MockRouter,
    client: httpx.AsyncClient,
) -> None:
    await first_and_second(client)
    upstreams.post("http://first.test/v1/chat/completions").respond(
        content=b"", headers={"content-type": "text/event-stream"}
    )
    upstreams.post("http://second.test/v1/chat/completions").respond(
        content=sse(chunk("ok"), chunk(finish="stop")),
        headers={"content-type": "text/event-stream"},
    )

    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})

    assert response.headers["x-provider-router-provider"] == "second"
    [row] = await requests_rows(client)
    assert row["attempts"] == 2


async def test_a_stream_cut_after_the_first_event_ends_with_an_error_event(
    upstreams: respx.MockRouter,
    client: httpx.AsyncClient,
) -> None:
    await first_and_second(client)
    upstreams.post("http://first.test/v1/chat/completions").respond(
        content=sse(chunk("partial"), done=False), headers={"content-type": "text/event-stream"}
    )
    second = upstreams.post("http://second.test/v1/chat/completions").respond(json=completion())

    response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})

    assert response.status_code == 200
    first, error = sse_chunks(response.content, done=False)
    assert first == chunk("partial")
    assert "[DONE]" in error["error"]["message"]
    assert error["error"]["code"] == "stream_interrupted"
    assert second.call_count == 0
    [row] = await requests_rows(client)
    assert (row["status"], row["status_code"]) == ("error", 502)
    detail = await request_detail(client, row["id"])
    assert detail["attempt_details"][0]["status"] == "error"


async def test_embeddings_route_like_chat(
    upstreams: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    await add_provider(client, "up", "http://up.test/v1", ["embed-test"])
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "model": "embed-test",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
    upstreams.post("http://up.test/v1/embeddings").respond(json=answer)

    response = await client.post("/v1/embeddings", json={"model": "embed-test", "input": "hi"})
    missing = await client.post("/v1/embeddings", json={"model": "embed-test"})

    assert response.json() == answer
    assert missing.status_code == 400
    rows = await requests_rows(client)
    # Both requests may share a millisecond, so find the answered one by its status.
    answered = [(r["endpoint"], r["prompt_tokens"]) for r in rows if r["status"] == "success"]
    assert answered == [("embeddings", 2)]
    assert [r["status_code"] for r in rows if r["status"] != "success"] == [400]


async def test_cost_is_recorded_from_the_link_prices(
    upstreams: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    await add_provider(client, "up", "http://up.test/v1")
    link = {"model_id": "gpt-test", "input_cost_per_1k": 1.0, "output_cost_per_1k": 2.0}
    headers = ADMIN
    assert (await client.post("/v1/providers/up/models", json=link, headers=headers)).is_success
    upstreams.post("http://up.test/v1/chat/completions").respond(json=completion())

    await client.post("/v1/chat/completions", json=CHAT)

    [row] = await requests_rows(client)
    assert row["cost"] == pytest.approx(3 * 1.0 / 1000 + 2 * 2.0 / 1000)
    assert row["currency"] == "USD"


async def test_management_changes_apply_to_the_next_request(
    upstreams: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    await first_and_second(client)
    upstreams.post("http://first.test/v1/chat/completions").respond(json=completion("first"))
    upstreams.post("http://second.test/v1/chat/completions").respond(json=completion("second"))
    headers = ADMIN

    before = await client.post("/v1/chat/completions", json=CHAT)
    disabled = await client.put("/v1/providers/first", json={"enabled": False}, headers=headers)
    after = await client.post("/v1/chat/completions", json=CHAT)
    moved = await client.put(
        "/v1/providers/first",
        json={"enabled": True, "config": {"baseURL": "http://moved.test/v1"}},
        headers=headers,
    )
    upstreams.post("http://moved.test/v1/chat/completions").respond(json=completion("moved"))
    last = await client.post("/v1/chat/completions", json=CHAT)

    assert disabled.status_code == moved.status_code == 200
    assert before.json()["choices"][0]["message"]["content"] == "first"
    assert after.json()["choices"][0]["message"]["content"] == "second"
    assert last.json()["choices"][0]["message"]["content"] == "moved"


async def test_models_list_in_openai_shape(client: httpx.AsyncClient) -> None:
    await add_provider(client, "up", "http://up.test/v1", ["gpt-test", "other"])

    response = await client.get("/v1/models")

    body = response.json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["providers"]) for m in body["data"]] == [
        ("gpt-test", "model", ["up"]),
        ("other", "model", ["up"]),
    ]
    assert all(isinstance(m["created"], int) and m["owned_by"] for m in body["data"])


async def test_every_request_is_recorded_even_the_rejected_ones(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    json_type = {"content-type": "application/json"}
    await client.post("/v1/chat/completions", content=b"nope", headers=json_type)
    await client.post("/v1/chat/completions", json={**CHAT, "model": "missing"})
    app = client._transport.app  # type: ignore[attr-defined]
    await app.services.recorder.flush()

    with sqlite3.connect(settings.database_path) as conn:
        rows = conn.execute(
            "SELECT status_code, model FROM requests ORDER BY created_at"
        ).fetchall()
    assert sorted(rows, key=str) == sorted([(400, None), (404, "missing")], key=str)


async def test_a_management_error_is_answered_not_re_raised(settings: Settings) -> None:
    # httpx.ASGITransport re-raises whatever escapes the app: a 400 must not escape.
    async with app_client(settings) as (_, client):
        response = await client.post(
            "/v1/providers",
            headers=ADMIN,
            json={"name": "x", "type": "no-such-type", "config": {}},
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "type"
