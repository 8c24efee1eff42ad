"""probe(): a real call, reported as {ok, latency_ms, status_code?, error?}, never raised."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import respx

from providers.base import Adapter, AdapterOptions, ChatStream, Reply
from providers.openai import OpenAIAdapter
from router.gateway.health import probe_and_record
from router.gateway.probe import probe
from router.store.db import Database

BASE = "http://upstream.test/v1"


async def test_ok_when_the_model_list_answers() -> None:
    adapter = OpenAIAdapter("p1", {"baseURL": BASE, "apiKey": "sk-x"}, AdapterOptions())
    with respx.mock(using="httpx") as mock:
        mock.get(BASE + "/models").respond(200, json={"data": [{"id": "m"}]})
        result = await probe(adapter)
    await adapter.aclose()
    assert result.ok and result.status_code == 200 and result.error is None
    assert result.latency_ms >= 0
    assert result.as_dict() == {"ok": True, "latency_ms": result.latency_ms, "status_code": 200}


async def test_status_and_connect_failures_are_reported_not_raised() -> None:
    adapter = OpenAIAdapter("p1", {"baseURL": BASE, "apiKey": "sk-x"}, AdapterOptions())
    with respx.mock(using="httpx") as mock:
        route = mock.get(BASE + "/models")
        route.respond(401, json={"error": {"message": "bad key"}})
        denied = await probe(adapter)
        route.side_effect = httpx.ConnectError("refused")
        refused = await probe(adapter)
    await adapter.aclose()
    assert (denied.ok, denied.status_code) == (False, 401)
    assert denied.error == (
        "Provider 'p1' answered HTTP 401: bad key"
        " (credential rejected: check the provider's apiKey)"
    )
    assert refused.ok is False and refused.status_code is None
    assert refused.error is not None and "could not connect" in refused.error


class NoList(Adapter):
    type = "no-list"

    def __init__(self) -> None:
        super().__init__("p2", {}, AdapterOptions())
        self.asked: list[dict[str, Any]] = []

    async def chat(self, body: dict[str, Any], upstream_model: str) -> Reply:
        self.asked.append(body)
        return Reply(b"{}")

    async def chat_stream(
        self, body: dict[str, Any], upstream_model: str, *, include_usage: bool
    ) -> ChatStream:
        raise AssertionError


async def test_a_type_without_a_model_list_gets_a_one_token_completion() -> None:
    adapter = NoList()
    assert (await probe(adapter, "m1")).ok
    assert adapter.asked == [
        {"model": "m1", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    ]
    without_model = await probe(adapter)
    assert without_model.ok is False and "cannot list its models" in (without_model.error or "")


class Broken(NoList):
    type = "broken"

    async def list_models(self) -> list[str]:
        raise KeyError("choices")  # an adapter bug, not an upstream failure


async def test_an_adapter_bug_is_reported_and_the_round_still_records_the_others(
    db: Database,
) -> None:
    await db.execute_write(
        "INSERT INTO providers (id, name, type, created_at, updated_at)"
        " VALUES ('p2', 'p2', 'x', 0, 0), ('p3', 'p3', 'x', 0, 0)"
    )
    results = await probe_and_record(db, [("p2", NoList(), "m"), ("p3", Broken(), None)])
    rows = await db.execute("SELECT id, health_status, health_error FROM providers ORDER BY id")
    assert [r.result.ok for r in results] == [True, False]
    assert [tuple(row) for row in rows] == [
        ("p2", "ok", None),
        ("p3", "error", "adapter error KeyError"),
    ]


async def test_a_probe_of_an_upstream_that_never_answers_fails_within_its_limit() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing, keep the socket open

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    adapter = OpenAIAdapter("p1", {"baseURL": f"http://127.0.0.1:{port}/v1"}, AdapterOptions())
    try:
        result = await asyncio.wait_for(probe(adapter, timeout_s=0.2), 5)
    finally:
        await adapter.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert accepted  # the probe did reach the server
    assert (result.ok, result.status_code) == (False, None)
    assert result.error == "no answer within 0.2 s"
