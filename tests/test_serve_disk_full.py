"""`provider-router serve` with its database on a small tmpfs that fills up: the process keeps
answering with bounded memory, and SIGTERM ends it within server.shutdown_grace_ms, saying how
many history rows it could not write."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import fill_disk, free_port, mock_upstream_process, small_disk, start
from tests.helpers import wait_until_up as wait_up

GRACE_MS = 3000


@pytest.fixture
def mock_upstream(tmp_path: Path) -> Iterator[str]:
    with mock_upstream_process(tmp_path) as url:
        yield f"{url}/v1"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def fire(url: str, count: int, concurrency: int = 50) -> list[int]:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for begin in range(0, count, concurrency):
            answers = await asyncio.gather(
                *(client.post(f"{url}/v1/chat/completions", json=body)
                  for _ in range(min(concurrency, count - begin)))
            )  # fmt: skip
            statuses += [a.status_code for a in answers]
    return statuses


def test_a_full_disk_keeps_memory_bounded_and_sigterm_within_the_grace(
    tmp_path: Path, mock_upstream: str
) -> None:
    with small_disk(tmp_path / "disk", "2m") as disk:
        config = tmp_path / "config.toml"
        config.write_text(
            f"[server]\nshutdown_grace_ms = {GRACE_MS}\n"
            # Its output is a pipe read only at the end: 3,500 access lines would fill it.
            "[logging]\naccess_log = false\n"
            # Rows stay queued (retried) until shutdown must give up on them.
            "[recorder]\nqueue_size = 2000\nretry_ms = 600000\n"
            '[[providers]]\nid = "mock"\nname = "mock"\ntype = "openai"\n'
            f'config = {{ baseURL = "{mock_upstream}", apiKey = "sk-mock-upstream-key" }}\n'
            'models = ["mock-gpt"]\n'
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start(
            "serve", "--config", str(config), "--port", str(port),
            "--database", f"sqlite:///{disk / 'router.db'}", cwd=tmp_path,
        )  # fmt: skip
        try:
            wait_up(f"{url}/health", server)
            assert asyncio.run(fire(url, 50)) == [200] * 50
            fill_disk(disk)
            asyncio.run(fire(url, 500))  # warm: the queue fills, drops begin
            before = rss_kib(server.pid)
            statuses = asyncio.run(fire(url, 3000))
            after = rss_kib(server.pid)
            health = httpx.get(f"{url}/health", timeout=10).json()["recorder"]
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            code = server.wait(GRACE_MS / 1000 + 15)
            took = time.monotonic() - started
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        output = server.stdout.read().decode() if server.stdout else ""
        if server.stdout:
            server.stdout.close()

    assert statuses == [200] * 3000
    assert health["writing"] is False
    assert health["dropped"] > 0
    assert health["queued"] <= 2000
    # 3000 more requests against a full disk: memory does not follow them (the failure this
    # guards against grew by hundreds of MB).
    assert after - before < 40 * 1024, (before, after)
    assert code == -signal.SIGTERM
    # The grace, plus generous room for a loaded machine.
    assert took < GRACE_MS / 1000 + 8, took
    assert "could not write" in output
    assert "Traceback" not in output
    assert output.count("Dropped") <= 2, output[-2000:]
    assert "sk-mock-upstream-key" not in output
