"""What the Prometheus metrics (and the access log) cost a request: CPU per request, on vs off.

    python -m bench.metrics [--requests 500] [--rounds 60] [--access-log]
    python -m bench.metrics --serve [--requests 500] [--rounds 30] [--access-log]
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python -m bench.metrics \
        --only on --requests 2000   # instructions, noise-free; subtract a --requests 1000 run

Drives :class:`router.gateway.handler.Proxy` in process with an instant fake adapter (no
socket, no upstream), so the proxy's own work is all that is measured (the recorder is a stub
that drops records): the share metrics take is at its largest here. Variants (metrics off,
metrics on, and with ``--access-log`` metrics on plus the access line formatted and written to
/dev/null) serve blocks of the same JSON or streamed (20-block) request in turn, rotating who
goes first, so neighbouring blocks share the machine's load; the report gives each variant's
median CPU microseconds per request and the median of its per-block ratios to "off".

``--serve`` measures real servers instead: ``provider-router serve`` processes (metrics off,
metrics on, and with ``--access-log`` metrics and access line on; log level info) in front of one
``provider-router mock-upstream`` process, all on loopback. One client sends the same JSON chat
request to each in turn, in blocks, over a kept-alive connection; each server's CPU (utime +
stime from /proc, in clock ticks) over all its blocks, divided by its requests, is its CPU per
request.
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
from router import logs
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
        self.queue: asyncio.Queue[RequestRecord | None] = asyncio.Queue()
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


def sink_access_log() -> None:
    """Format (text, scrubbed) and write the access line to /dev/null, as serve does to stderr."""
    access = logging.getLogger("provider_router.access")
    sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - open until exit
    sink.setFormatter(logs.formatter("text"))
    access.addHandler(sink)
    access.propagate = False
    access.setLevel(logging.INFO)


async def main(requests: int, blocks: int, access_log: bool) -> None:
    json_body = b'{"model":"m","messages":[{"role":"user","content":"hello"}]}'
    stream_body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}]}'
    print(
        f"in process: {blocks} blocks of {requests} requests per variant, variants interleaved;"
        " CPU us/request (process_time), median over blocks, and the median of the per-block"
        " ratios to 'off'"
    )
    for kind, body in (("json", json_body), ("stream", stream_body)):
        variants = [("off", build(False, False)), ("on", build(True, False))]
        if access_log:
            variants.append(("on+access", build(True, True)))
        for _, proxy in variants:
            await serve(proxy, body, requests)  # warm up
        results: dict[str, list[float]] = {label: [] for label, _ in variants}
        for n in range(blocks):
            # Neighbours in time share the machine's load; rotate who goes first.
            turn = variants[n % len(variants) :] + variants[: n % len(variants)]
            for label, proxy in turn:
                results[label].append(await serve(proxy, body, requests) / requests * 1e6)
        base = results["off"]
        for label, values in results.items():
            ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
            print(
                f"{kind:6} {label:9} {statistics.median(values):7.2f} us/request"
                f"  ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)"
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


def serve_mode(requests: int, rounds: int, access_log: bool) -> None:
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
            kinds = [("off", "false", "false"), ("on", "true", "false")]
            if access_log:
                kinds.append(("on+access", "true", "true"))
            for label, enabled, access in kinds:
                config = Path(tmp) / f"{label}.toml"
                # log_level info, so the access line (when on) is formatted and written.
                config.write_text(
                    f'[server]\nlog_level = "info"\n[metrics]\nenabled = {enabled}\n'
                    f"[logging]\naccess_log = {access}\n[[providers]]\n"
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
            per_request: dict[str, list[float]] = {label: [] for label, _, _ in kinds}
            with httpx.Client(timeout=10) as client:
                for url, _ in servers.values():  # warm up
                    for _ in range(requests):
                        client.post(f"{url}/v1/chat/completions", json=body)
                order = list(servers.items())
                for n in range(rounds):
                    # Neighbours in time share the machine's load; rotate who goes first.
                    turn = order[n % len(order) :] + order[: n % len(order)]
                    for label, (url, pid) in turn:
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
    print(
        f"provider-router serve: {rounds} blocks of {requests} JSON requests per server, servers"
        " interleaved; server CPU (utime+stime) us/request over all blocks, and the median of"
        " the per-block ratios to 'off'"
    )
    base = per_request["off"]
    for label, values in per_request.items():
        mean = statistics.fmean(values)
        ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
        print(
            f"{label:9} {mean:6.1f} us/request  total ratio {mean / statistics.fmean(base):.3f}"
            f"  median block ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument(
        "--only", choices=("off", "on", "on+access"), help="serve --requests JSON requests with"
        " one variant and exit (to count instructions under callgrind)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.only:
        if args.only == "on+access":
            sink_access_log()
        proxy = build(args.only != "off", args.only == "on+access")
        body = b'{"model":"m","messages":[{"role":"user","content":"hello"}]}'
        asyncio.run(serve(proxy, body, args.requests or 1000))
    elif args.serve:
        serve_mode(args.requests or 500, args.rounds or 30, args.access_log)
    else:
        if args.access_log:
            sink_access_log()
        asyncio.run(main(args.requests or 500, args.rounds or 60, args.access_log))
