"""What the response limits and the key scrubbing cost per streamed chunk, measured.

    .venv/bin/python -m bench.guard [--chunks 20000] [--repeat 7]

Every upstream body now passes through :class:`router.transport.limits.GuardedBody` (event-size
bound and the provider's :class:`router.redact.Scrubber`). This reads a stream of typical
OpenAI SSE chunks (one ``chat.completion.chunk`` event each, ~190 bytes) through
``httpx.Response.aiter_bytes()`` three ways: straight from the transport's stream (before),
guarded without credentials, and guarded with one 51-character key to scrub. It prints the best
of ``--repeat`` runs in microseconds per chunk, and the difference to the straight read.
A scrubber-only line times ``StreamScrubber.feed`` alone with ``timeit``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import timeit
from collections.abc import AsyncIterator

import httpx

from router.redact import Scrubber
from router.transport.limits import GuardedBody, ResponseLimits

KEY = "sk-proj-" + "A1b2C3d4E5" * 4 + "xyz"  # 51 characters, like an OpenAI project key
CHUNK = (
    b'data: {"id":"chatcmpl-9x8y7z","object":"chat.completion.chunk","created":1733400000,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" word"},'
    b'"finish_reason":null}]}\n\n'
)


class Chunks(httpx.AsyncByteStream):
    def __init__(self, count: int) -> None:
        self.count = count

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            yield CHUNK

    async def aclose(self) -> None:
        pass


def upstream(count: int) -> httpx.Response:
    request = httpx.Request("POST", "http://upstream/v1/chat/completions")
    headers = [(b"content-type", b"text/event-stream")]
    return httpx.Response(200, headers=headers, stream=Chunks(count), request=request)


async def read(response: httpx.Response) -> int:
    n = 0
    async for _ in response.aiter_bytes():
        n += 1
    return n


async def straight(count: int) -> float:
    response = upstream(count)
    started = time.perf_counter()
    await read(response)
    return time.perf_counter() - started


async def guarded(count: int, scrubber: Scrubber | None) -> float:
    started = time.perf_counter()
    source = upstream(count)
    body = GuardedBody(source, ResponseLimits(), scrubber, streamed=True)
    response = httpx.Response(200, headers=source.headers, stream=body, request=source.request)
    await read(response)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    n = args.chunks
    scrubber = Scrubber([KEY])
    runs: dict[str, list[float]] = {"straight": [], "guarded": [], "guarded+scrub": []}
    for _ in range(args.repeat):  # interleaved, so drift in load hits all three alike
        runs["straight"].append(await straight(n))
        runs["guarded"].append(await guarded(n, None))
        runs["guarded+scrub"].append(await guarded(n, scrubber))
    base = min(runs["straight"]) / n * 1e6
    print(f"{n} chunks of {len(CHUNK)} bytes, best of {args.repeat}:")
    for name, times in runs.items():
        per = min(times) / n * 1e6
        print(f"  {name:14} {per:6.2f} us/chunk  (+{per - base:5.2f} us)")
    feed = scrubber.stream().feed
    loops = 200_000
    best = min(timeit.repeat(lambda: feed(CHUNK), number=loops, repeat=args.repeat))
    print(f"  StreamScrubber.feed alone: {best / loops * 1e6:.2f} us/chunk")


if __name__ == "__main__":
    asyncio.run(main())
