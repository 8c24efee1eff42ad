"""Peak memory of a real ``provider-router serve`` under hostile upstreams, measured.

    .venv/bin/python -m bench.hostile [--only NAME ...]

For each hostile upstream of issue 16 (a 2 GiB JSON answer, a gzip bomb that inflates to 2 GiB,
an SSE event that never ends, 64 MiB of response headers) this starts a fresh ``serve`` process
with one provider pointing at a raw asyncio server (in this process) that misbehaves that way,
sends one chat request, pings ``/health`` every 50 ms meanwhile, and prints:
what the client got, how long it took, how many bytes the upstream managed to send, the serve
process's RSS before and its peak RSS (VmHWM from /proc), and the slowest ``/health``.
Linux only (/proc). Default limits: body 32 MiB, event 1 MiB, headers 64 KiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

MiB = 1024 * 1024
Writer = asyncio.StreamWriter


class Counter:
    sent = 0


async def forever(writer: Writer, piece: bytes, counter: Counter) -> None:
    while True:
        writer.write(piece)
        counter.sent += len(piece)
        await writer.drain()


def chunked(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


async def huge_json(writer: Writer, counter: Counter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n"
        b'{"choices": [{"message": {"content": "'
    )
    await forever(writer, b"a" * 65536, counter)


_bomb: list[bytes] = []


def gzip_bomb_bytes() -> bytes:
    """2 GiB of spaces, gzip-compressed (made once, a MiB at a time)."""
    if not _bomb:
        packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        block = b" " * MiB
        parts = [packer.compress(block) for _ in range(2048)]
        _bomb.append(b"".join(parts) + packer.flush())
    return _bomb[0]


async def gzip_bomb(writer: Writer, counter: Counter) -> None:
    bomb = gzip_bomb_bytes()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(bomb)
    )
    for at in range(0, len(bomb), 65536):
        writer.write(bomb[at : at + 65536])
        counter.sent += min(65536, len(bomb) - at)
        await writer.drain()


async def endless_event(writer: Writer, counter: Counter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n')
        + chunked(b"data: ")
    )
    await forever(writer, chunked(b"x" * 65536), counter)


async def huge_headers(writer: Writer, counter: Counter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Junk: " + b"j" * 8000 + b"\r\n"
    for _ in range(64 * MiB // len(line)):
        writer.write(line)
        counter.sent += len(line)
        await writer.drain()
    writer.write(b"Content-Length: 2\r\n\r\nok")


SCENARIOS: dict[str, tuple[Callable[[Writer, Counter], Awaitable[None]], bool]] = {
    "2GiB-json": (huge_json, False),
    "gzip-bomb-2GiB": (gzip_bomb, False),
    "endless-sse-event": (endless_event, True),
    "64MiB-headers": (huge_headers, False),
}


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def start_serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(config), "--port", str(port)],
        cwd=config.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run(name: str, folder: Path) -> None:
    reply, stream = SCENARIOS[name]
    counter = Counter()

    async def handle(reader: asyncio.StreamReader, writer: Writer) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")), 0,
            )  # fmt: skip
            await reader.readexactly(length)
            await reply(writer, counter)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    upstream = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    config = folder / f"{name}.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{folder / name}.db"\n[[providers]]\nid = "hostile"\n'
        f'name = "hostile"\ntype = "openai"\n'
        f'config = {{ baseURL = "{upstream}", apiKey = "sk-bench-hostile-key" }}\n'
        'models = ["gpt-test"]\n'
    )
    port = free_port()
    process = start_serve(config, port)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            before = status_kb(process.pid, "VmRSS")
            slowest = 0.0
            done = asyncio.Event()

            async def ping() -> None:
                nonlocal slowest
                while not done.is_set():
                    started = time.perf_counter()
                    await client.get("/health")
                    slowest = max(slowest, time.perf_counter() - started)
                    await asyncio.sleep(0.05)

            pinger = asyncio.ensure_future(ping())
            started = time.perf_counter()
            body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
            response = await client.post("/v1/chat/completions", json={**body, "stream": stream})
            took = time.perf_counter() - started
            done.set()
            await pinger
            peak = status_kb(process.pid, "VmHWM")
        if stream:
            outcome = f"{response.status_code} stream, last event: {response.text.strip()[-110:]}"
        else:
            outcome = f"{response.status_code} {response.text[:110]}"
        print(f"{name}:")
        print(f"  client got   {outcome}")
        print(f"  answered in  {took:.2f} s; the upstream sent {counter.sent / MiB:.1f} MiB")
        print(f"  serve RSS    {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB")
        print(f"  /health      slowest {slowest * 1000:.0f} ms meanwhile")
    finally:
        process.terminate()
        process.wait(30)
        server.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=None)
    args = parser.parse_args()
    gzip_bomb_bytes()  # made before any serve runs: it takes seconds of this process's loop
    with tempfile.TemporaryDirectory() as folder:
        for name in args.only or SCENARIOS:
            await run(name, Path(folder))


if __name__ == "__main__":
    asyncio.run(main())
