"""``"stream": null`` and a client key revoked while its stream runs, over real sockets
(issue 16.8)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router.app import create_app
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import ADMIN, add_provider, last_request, make_settings, serve_asgi, sse_data

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, options: MockOptions | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Any, MockUpstream]]:
    upstream = MockUpstream(options)
    app = create_app(make_settings(tmp_path))
    async with (
        serve_asgi(upstream.app()) as fake,
        serve_asgi(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        await add_provider(client, "mock", f"{fake}/v1", ["gpt-test"])
        yield client, app, upstream


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_stream_null_is_read_as_not_streamed(tmp_path: Path, path: str) -> None:
    body: dict[str, Any] = {**CHAT, "stream": None}
    if path == "/v1/messages":
        body["max_tokens"] = 16
    async with gateway(tmp_path) as (client, _, upstream):
        answer = await client.post(path, json=body)

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["usage"]
    # The upstream is not handed a null it might refuse.
    assert "stream" not in (upstream.requests[-1].json or {})


async def test_stream_of_another_type_is_still_refused(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (client, _, upstream):
        answer = await client.post("/v1/chat/completions", json={**CHAT, "stream": "yes"})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "stream"
    assert upstream.requests == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_revoking_a_key_ends_its_stream_in_flight(tmp_path: Path, path: str) -> None:
    options = MockOptions(chunks=30, chunk_delay_ms=50)
    async with gateway(tmp_path, options) as (client, app, _):
        created = await client.post("/v1/keys", json={"name": "laptop"}, headers=ADMIN)
        key = created.json()
        auth = {"authorization": f"Bearer {key['key']}"}
        received = b""
        body = {**CHAT, "stream": True, "max_tokens": 64}
        async with client.stream("POST", path, json=body, headers=auth) as r:
            assert r.status_code == 200
            revoked = False
            async for block in r.aiter_bytes():
                received += block
                if not revoked and b"mock" in received:
                    gone = await client.delete(f"/v1/keys/{key['id']}", headers=ADMIN)
                    assert gone.status_code == 200, gone.text
                    revoked = True
        row = await last_request(client, app)
        provider = (await client.get("/v1/providers/mock", headers=ADMIN)).json()

    events = sse_data(received)
    last = orjson.loads(events[-1])
    if path == "/v1/messages":
        assert last["error"]["type"] == "authentication_error"
        assert "revoked" in last["error"]["message"]
    else:
        assert last["error"]["code"] == "key_revoked"
        assert "[DONE]" not in events
    # 30 chunks were coming; the stream ended within a block or two of the revocation.
    assert len(events) < 12, events
    assert (row["status"], row["status_code"]) == ("error", 401)
    assert row["attempt_details"][0]["status"] == "client_closed"
    # The provider did nothing wrong: no failure is counted against it.
    assert provider["state"]["error_count"] == 0
