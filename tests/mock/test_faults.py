"""The fake upstream's failure modes added for resilience tests: Retry-After control and stall."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import serve_asgi

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("retry_after", "header"), [(1, "1"), (2.5, "2.5"), (None, None)])
async def test_429_carries_the_configured_retry_after(
    retry_after: float | None, header: str | None
) -> None:
    fake = MockUpstream(MockOptions(fail="status:429", retry_after_s=retry_after))
    transport = httpx.ASGITransport(app=fake.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 429
    assert response.headers.get("retry-after") == header


def test_bad_retry_after_is_refused() -> None:
    with pytest.raises(ValueError, match="retry_after_s"):
        MockOptions(retry_after_s=-1)
    with pytest.raises(ValueError, match="fail must be"):
        MockOptions(fail="stalled")


async def test_stall_sends_half_the_stream_then_nothing_until_the_client_leaves() -> None:
    fake = MockUpstream(MockOptions(fail="stall", chunks=4))
    async with serve_asgi(fake.app()) as url, httpx.AsyncClient(base_url=url) as client:
        received = b""
        async with client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}
        ) as r:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    async for block in r.aiter_bytes():
                        received += block
    assert b'"content":"mock"' in received and b'" reply"' in received
    assert b'" alpha"' not in received
    assert b"[DONE]" not in received
