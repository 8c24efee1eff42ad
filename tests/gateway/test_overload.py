"""The proxy's own limits are never a provider's failure (issue 16, item 2): more requests than
``upstream.max_connections`` get 503 ``gateway_overloaded`` with Retry-After, the provider's
circuit stays closed, and the log says so once per interval, naming the limit. Over real
sockets: uvicorn runs the gateway and a slow upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router.app import create_app
from router.doors.messages import MessagesDoor
from router.errors import GatewayOverloaded, LocalLimitReached, UpstreamConnectError
from router.gateway.overload import OverloadLog
from router.resilience.policy import Resilience
from tests.helpers import ADMIN, add_provider, eventually, make_settings, serve_asgi
from tests.transport.servers import Receive, Send, lifespan, read_body

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}
_CHUNK = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
_REPLY = {
    "id": "c1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class SlowUpstream:
    """Streams one chunk, then holds the stream open until released; answers the rest at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = 0

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if await lifespan(scope, receive, send):
            return
        body = orjson.loads(await read_body(receive))
        if not body.get("stream"):
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": orjson.dumps(_REPLY)})
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        chunk = b"data: " + orjson.dumps(_CHUNK) + b"\n\n"
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        self.holding += 1
        await self.release.wait()
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


@pytest.mark.parametrize(
    ("pool_timeout_ms", "config"),
    [(200, {}), (10_000, {"firstByteTimeout": 600})],
    ids=["pool-timeout", "first-byte-timeout-shorter"],
)
async def test_pool_exhaustion_answers_503_and_leaves_the_circuit_closed(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    pool_timeout_ms: int,
    config: dict[str, Any],
) -> None:
    """The second case: a provider whose first-byte timeout is shorter than the pool timeout
    still gets its pool wait cut first, so the wait is not reported as its timeout."""
    caplog.set_level(logging.WARNING, "provider_router.overload")
    upstream = SlowUpstream()
    settings = make_settings(
        tmp_path, upstream_max_connections=2, upstream_pool_timeout_ms=pool_timeout_ms,
        breaker_failure_threshold=3,
    )  # fmt: skip
    app = create_app(settings)
    async with (
        serve_asgi(upstream) as upstream_url,
        serve_asgi(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        contextlib.AsyncExitStack() as streams,
    ):
        await add_provider(client, "slow", f"{upstream_url}/v1", ["gpt-test"], config=config)
        readers = []  # kept: an iterator collected as garbage would close its stream
        for _ in range(2):  # both connections busy with a stream in flight
            response = await streams.enter_async_context(
                client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True})
            )
            readers.append(response.aiter_bytes())
            await anext(readers[-1])
        await eventually(lambda: upstream.holding == 2, "two streams are held open")

        turned_away = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=CHAT) for _ in range(8))
        )
        for response in turned_away:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "gateway_overloaded"
            assert "upstream.max_connections" in response.json()["error"]["message"]
            assert int(response.headers["retry-after"]) >= 1
        assert app.services is not None
        breaker = app.services.proxy.resilience.breakers.get("slow")
        assert breaker.state == "closed"

        upstream.release.set()
        await streams.aclose()
        after = await client.post("/v1/chat/completions", json=CHAT)
        assert after.status_code == 200, after.text
        provider = (await client.get("/v1/providers/slow", headers=ADMIN)).json()
    assert provider["state"]["circuit"]["state"] == "closed"
    warnings = [r.getMessage() for r in caplog.records if r.name == "provider_router.overload"]
    # Eight requests turned away, one warning naming the limit.
    assert len(warnings) == 1
    assert "upstream.max_connections" in warnings[0]
    assert "gateway_overloaded" in warnings[0]


def test_a_local_limit_releases_the_breaker_instead_of_failing_it() -> None:
    res = Resilience()
    breaker = res.breakers.get("p")
    for _ in range(20):
        res.failed("p", LocalLimitReached("no fd", limit="open files (RLIMIT_NOFILE)"))
    assert breaker.state == "closed"
    for _ in range(5):
        res.failed("p", UpstreamConnectError("refused"))
    assert breaker.state == "open"


def test_the_overload_log_warns_once_per_interval_per_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "provider_router.overload")
    overload = OverloadLog(interval_s=0.0)
    overload.report("a", "first")
    overload.interval_s = 3600
    for _ in range(5):
        overload.report("a", "again")
    overload.report("b", "another limit")
    overload.interval_s = 0.0
    overload.report("a", "later")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "limit b" in messages[1]
    assert "5 more request(s) since the last warning" in messages[2]


def test_anthropic_clients_see_the_proxys_overload_as_overloaded_error() -> None:
    status, body = MessagesDoor().error(GatewayOverloaded("Every connection is busy."))
    assert status == 529  # what Claude Code and the Anthropic SDKs retry
    assert orjson.loads(body)["error"]["type"] == "overloaded_error"
