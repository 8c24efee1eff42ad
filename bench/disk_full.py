"""The proxy with its database on a full disk: RSS under load and the time SIGTERM takes.

    sudo .venv/bin/python -m bench.disk_full [--requests 20000] [--concurrency 64]

Mounts a 20 MiB tmpfs (root only), starts ``provider-router mock-upstream`` and ``provider-router
serve`` with the database on it, sends a few requests, fills the disk with a ballast file, then
sends ``--requests`` chat completions and prints the proxy's RSS every 2,000 requests, the
recorder counters from ``/health``, and how long the process takes to exit after SIGTERM
(``server.shutdown_grace_ms`` 10 s, ``recorder.retry_ms`` 30 s, so rows are still queued).
Everything is stopped and unmounted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_up(url: str) -> None:
    for _ in range(600):
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise SystemExit(f"{url} never answered")


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def fire(url: str, count: int, concurrency: int) -> dict[int, int]:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for begin in range(0, count, concurrency):
            answers = await asyncio.gather(
                *(client.post(f"{url}/v1/chat/completions", json=body)
                  for _ in range(min(concurrency, count - begin)))
            )  # fmt: skip
            for answer in answers:
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench.disk_full mounts a tmpfs: run it as root")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        mock_port, port = free_port(), free_port()
        run = [sys.executable, "-m", "router"]
        out = (tmp / "serve.log").open("wb")
        mock = subprocess.Popen([*run, "mock-upstream", "--port", str(mock_port)], cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        with tmpfs(tmp / "disk", "20m") as disk:
            config = tmp / "config.toml"
            config.write_text(
                "[server]\nshutdown_grace_ms = 10000\n[recorder]\nretry_ms = 30000\n"
                '[[providers]]\nid = "mock"\nname = "mock"\ntype = "openai"\n'
                f'config = {{ baseURL = "http://127.0.0.1:{mock_port}/v1", apiKey = "sk-x" }}\n'
                'models = ["mock-gpt"]\n'
            )
            serve = subprocess.Popen(
                [*run, "serve", "--config", str(config), "--port", str(port),
                 "--database", f"sqlite:///{disk / 'router.db'}"],
                cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            try:
                wait_up(f"http://127.0.0.1:{mock_port}/health")
                wait_up(f"{url}/health")
                asyncio.run(fire(url, 200, args.concurrency))
                print(f"RSS after 200 requests, disk not full: {rss_mib(serve.pid):.1f} MiB")
                ballast = (disk / "ballast").open("wb", buffering=0)
                with ballast, contextlib.suppress(OSError):
                    while True:
                        ballast.write(b"\0" * 65536)
                for done in range(0, args.requests, 2000):
                    statuses = asyncio.run(fire(url, min(2000, args.requests - done),
                                                args.concurrency))  # fmt: skip
                    health = httpx.get(f"{url}/health", timeout=10).json()["recorder"]
                    print(
                        f"disk full, {done + 2000:6} requests: RSS {rss_mib(serve.pid):6.1f} MiB,"
                        f" statuses {statuses}, recorder {health}"
                    )
                started = time.monotonic()
                serve.send_signal(signal.SIGTERM)
                serve.wait(120)
                print(f"SIGTERM to exit: {time.monotonic() - started:.2f} s")
            finally:
                for process in (serve, mock):
                    if process.poll() is None:
                        process.kill()
                        process.wait()
                out.close()
        log = (tmp / "serve.log").read_text()
        lines = [line for line in log.splitlines() if "recorder" in line or "shut down" in line]
        print("log lines from the recorder and shutdown:", *lines[-6:], sep="\n  ")
        print(f"log size: {len(log)} bytes; tracebacks: {log.count('Traceback')}")


if __name__ == "__main__":
    main()
