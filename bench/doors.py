"""What a translating front door costs per chunk: the Responses and Messages renderers over one
OpenAI chunk stream, against relaying the same blocks untouched (best of 7, in-process).

Usage: .venv/bin/python -m bench.doors [--chunks N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Callable

import orjson

from providers.base import ChatStream
from router.doors.messages_answer import MessagesStream
from router.doors.responses_answer import ResponsesStream, skeleton


def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    data = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [choice]}  # fmt: skip
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def per_chunk_us(blocks: list[bytes], render: Callable[[ChatStream], ChatStream]) -> float:
    async def replay() -> AsyncIterator[bytes]:
        for block in blocks:
            yield block

    best = float("inf")
    for _ in range(7):
        outer = render(ChatStream(replay()))
        started = time.perf_counter()
        async for _ in outer:
            pass
        best = min(best, time.perf_counter() - started)
    return best / len(blocks) * 1e6


async def main(chunks: int) -> None:
    blocks = [chunk({"role": "assistant", "content": ""})]
    blocks += [chunk({"content": " word"}) for _ in range(chunks)] + [chunk({}, "stop")]
    relay = await per_chunk_us(blocks, lambda s: s)
    responses = await per_chunk_us(
        blocks, lambda s: ResponsesStream(s, skeleton("resp_x", {"model": "m"})).chat_stream()
    )
    messages = await per_chunk_us(blocks, lambda s: MessagesStream(s, "m", []).chat_stream())
    print(f"relay untouched: {relay:.2f} us/chunk")
    print(f"Responses door:  {responses:.2f} us/chunk (+{responses - relay:.2f})")
    print(f"Messages door:   {messages:.2f} us/chunk (+{messages - relay:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=2000)
    asyncio.run(main(parser.parse_args().chunks))
