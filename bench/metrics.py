"""What the Prometheus metrics (and the access log) cost a request: CPU per request, on vs off.

    python -m bench.metrics [--requests 20000] [--rounds 7] [--access-log]
    python -m bench.metrics --serve [--requests 3000] [--rounds 5]

Drives :class:`router.gateway.handler.Proxy` in process with an instant fake adapter (no
socket, no upstream), so the proxy's own work is all that is measured; the recorder is a stub
that drops records. Each round serves the same JSON and streamed (20-block) requests with metrics
off and on, in alternating order, timing process CPU; the report gives the median microseconds
per request for each and their ratio. ``--access-log`` also measures the access line (to a
discarding handler at INFO), which is a separate switch (``logging.access_log``).

``--serve`` measures real servers instead: two ``provider-router serve`` processes (metrics on,
metrics off; access log off in both) in front of one ``provider-router mock-upstream`` process,
all on loopback. One client sends the same JSON chat request to each in turn, in rounds, over a
kept-alive connection; each server's CPU (utime + stime from /proc) over its rounds, divided by
its requests, is its CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from providers.base import Adapter, AdapterOptions, ChatStream, Reply, Usage
from router.gateway.handler import Message, Proxy
from router.gateway.metrics import Metrics
from router.gateway.recorder import Recorder, RequestRecord
from router.gateway.routing import Candidate, Snapshot
from router.resilience.policy import Resilience

ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}'
)
BLOCK = b'data: {"choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}]}\n\n'


class InstantAdapter(Adapter):
    type = "bench-instant"

    async def chat(self, body: dict[str, Any], upstream_model: str) -> Reply:
        return Reply(ANSWER, Usage(9, 1, 10))

    async def chat_stream(
        self, body: dict[str, Any], upstream_model: str, *, include_usage: bool = False
    ) -> ChatStream:
        async def blocks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield BLOCK

        return ChatStream(blocks(), Usage(9, 20, 29))


class DroppingRecorder(Recorder):
    """No database: the benchmark measures the request path, not the writer."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[RequestRecord] = asyncio.Queue()
        self.rows_written = self.rows_dropped = 0

    async def record(self, record: RequestRecord) -> None:
        return None


class Snapshots:
    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot

    def adapters(self) -> dict[str, Adapter]:
        return {}


def build(metrics_on: bool, access_log: bool) -> Proxy:
    adapter = InstantAdapter("p", {}, AdapterOptions())
    candidate = Candidate("p", adapter, "m", 1, 1, 0.001, 0.002)
    snapshot = Snapshot(version=1, routes={"m": (candidate,)}, models={"m": 0})
    snapshots: Any = Snapshots(snapshot)
    recorder = DroppingRecorder()
    proxy = Proxy(snapshots, recorder, 1 << 20, resilience=Resilience(), access_log=access_log)
    if metrics_on:
        proxy.metrics = Metrics(
            snapshots,
            recorder,
            proxy.resilience,
            inflight=lambda: proxy.inflight,
            client_rate_limited=lambda: proxy.client_rate_limited,
        )
    return proxy


async def serve(proxy: Proxy, body: bytes, count: int) -> float:
    """Process CPU seconds for ``count`` requests of ``body``."""
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError

    async def send(message: Message) -> None:
        return None

    started = time.process_time()
    for _ in range(count):
        pending.append({"type": "http.request", "body": body, "more_body": False})
        await proxy.chat_completions(scope, receive, send)
        pending.clear()
    return time.process_time() - started


async def main(requests: int, rounds: int, access_log: bool) -> None:
    logging.getLogger("provider_router.access").addHandler(logging.NullHandler())
    logging.getLogger("provider_router.access").propagate = False
    logging.getLogger("provider_router.access").setLevel(logging.INFO)
    json_body = b'{"model":"m","messages":[{"role":"user","content":"hello"}]}'
    stream_body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}]}'
    results: dict[tuple[str, str], list[float]] = {}
    for kind, body in (("json", json_body), ("stream", stream_body)):
        off, on = build(False, False), build(True, False)
        logged = build(True, True) if access_log else None
        await serve(off, body, requests // 10)  # warm up
        await serve(on, body, requests // 10)
        for n in range(rounds):
            order = [("off", off), ("on", on)]
            if logged is not None:
                order.append(("on+access", logged))
            for label, proxy in order if n % 2 == 0 else reversed(order):
                seconds = await serve(proxy, body, requests)
                results.setdefault((kind, label), []).append(seconds / requests * 1e6)
    print(f"{requests} requests x {rounds} rounds, median CPU us/request (process_time)")
    for kind in ("json", "stream"):
        base = statistics.median(results[(kind, "off")])
        for label in ("on", "on+access"):
            if (kind, label) not in results:
                continue
            value = statistics.median(results[(kind, label)])
            print(
                f"{kind:6} metrics off {base:7.2f}  {label:9} {value:7.2f}  "
                f"ratio {value / base:.3f} ({(value / base - 1) * 100:+.1f} %)"
            )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_up(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} never answered")


def serve_mode(requests: int, rounds: int) -> None:
    import httpx

    router = [sys.executable, "-m", "router"]
    started: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            upstream_port = _free_port()
            upstream = subprocess.Popen(
                [*router, "mock-upstream", "--port", str(upstream_port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            started.append(upstream)
            _wait_up(f"http://127.0.0.1:{upstream_port}/health", upstream)
            servers: dict[str, tuple[str, int]] = {}
            for label, enabled in (("off", "false"), ("on", "true")):
                config = Path(tmp) / f"{label}.toml"
                config.write_text(
                    f'[server]\nlog_level = "warning"\n[metrics]\nenabled = {enabled}\n'
                    "[logging]\naccess_log = false\n[[providers]]\n"
                    'id = "mock"\nname = "mock"\ntype = "openai"\nmodels = ["m"]\n'
                    f'config = {{ baseURL = "http://127.0.0.1:{upstream_port}/v1",'
                    ' apiKey = "sk-bench" }\n'
                )
                port = _free_port()
                server = subprocess.Popen(
                    [*router, "serve", "--config", str(config), "--port", str(port),
                     "--database", f"sqlite:///{tmp}/{label}.db"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                started.append(server)
                _wait_up(f"http://127.0.0.1:{port}/health", server)
                servers[label] = (f"http://127.0.0.1:{port}", server.pid)
            body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
            per_request: dict[str, list[float]] = {"off": [], "on": []}
            with httpx.Client(timeout=10) as client:
                for url, _ in servers.values():  # warm up
                    for _ in range(requests // 5):
                        client.post(f"{url}/v1/chat/completions", json=body)
                for n in range(rounds):
                    order = list(servers.items())
                    for label, (url, pid) in order if n % 2 == 0 else reversed(order):
                        before = _cpu_seconds(pid)
                        for _ in range(requests):
                            response = client.post(f"{url}/v1/chat/completions", json=body)
                            assert response.status_code == 200, response.text
                        used = _cpu_seconds(pid) - before
                        per_request[label].append(used / requests * 1e6)
        finally:
            for process in reversed(started):
                process.terminate()
                process.wait(20)
    off, on = (statistics.median(per_request[k]) for k in ("off", "on"))
    print(f"provider-router serve, {requests} JSON requests x {rounds} rounds per server")
    print(f"server CPU us/request: metrics off {off:.1f}, on {on:.1f}")
    print(f"rounds off: {', '.join(f'{v:.1f}' for v in per_request['off'])}")
    print(f"rounds on:  {', '.join(f'{v:.1f}' for v in per_request['on'])}")
    print(f"ratio {on / off:.3f} ({(on / off - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--serve", action="store_true")
    args = parser.parse_args()
    if args.serve:
        serve_mode(args.requests or 3000, args.rounds or 5)
    else:
        asyncio.run(main(args.requests or 20000, args.rounds or 7, args.access_log))
