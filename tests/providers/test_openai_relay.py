"""The OpenAI pass-through relay: events split anywhere, CRLF, and long events read linearly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import httpx
import respx

from providers.base import AdapterOptions
from providers.openai import OpenAIAdapter
from router.transport.limits import ResponseLimits

BASE = "http://upstream.test/v1"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: Iterable[bytes]) -> None:
        self.pieces = list(pieces)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


async def relayed(pieces: list[bytes], options: AdapterOptions | None = None) -> bytes:
    adapter = OpenAIAdapter(
        "p", {"baseURL": BASE, "apiKey": "sk-relay-test-key"}, options or AdapterOptions()
    )
    headers = {"content-type": "text/event-stream"}
    with respx.mock(using="httpx") as router:
        router.post(f"{BASE}/chat/completions").mock(
            side_effect=lambda _: httpx.Response(200, headers=headers, stream=Pieces(pieces))
        )
        stream = await adapter.chat_stream(CHAT, "m", include_usage=True)
        out = b"".join([block async for block in stream.events])
    await adapter.aclose()
    return out


async def test_events_split_anywhere_with_crlf_come_out_whole_with_lf() -> None:
    wire = (
        b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\r\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'
        b"\r\n\r\ndata: [DONE]\r\n\r\n"
    )
    expected = wire.replace(b"\r\n", b"\n").replace(b"data: [DONE]\n\n", b"")
    for cut in range(1, len(wire)):
        assert await relayed([wire[:cut], wire[cut:]]) == expected, cut
    for cut in range(1, len(wire) - 1, 7):
        assert await relayed([wire[:cut], wire[cut : cut + 1], wire[cut + 1 :]]) == expected, cut


async def test_a_long_event_in_many_small_pieces_is_relayed_whole() -> None:
    # 4 MiB of content in 4 KiB pieces: the relay searches only new bytes for the event's end.
    event = b'data: {"choices":[{"delta":{"content":"' + b"x" * (4 << 20) + b'"}}]}\n\n'
    pieces = [event[i : i + 4096] for i in range(0, len(event), 4096)] + [b"data: [DONE]\n\n"]
    options = AdapterOptions(response_limits=ResponseLimits(max_event_bytes=8 << 20))
    assert await relayed(pieces, options) == event
