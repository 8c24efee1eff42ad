"""The real command: `provider-router serve` as a process, as an operator runs it."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, mock_upstream_process, start, wait_until_up


@pytest.fixture
def mock_upstream(tmp_path: Path) -> Iterator[str]:
    with mock_upstream_process(tmp_path) as url:
        yield f"{url}/v1"


def write_config(path: Path, upstream: str, **recorder: int) -> Path:
    lines = ["[recorder]"] + [f"{k} = {v}" for k, v in recorder.items()]
    lines += [
        "[[providers]]",
        'id = "mock"',
        'name = "mock"',
        'type = "openai"',
        f'config = {{ baseURL = "{upstream}", apiKey = "sk-mock-upstream-key" }}',
        'models = ["mock-gpt"]',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def fire(url: str, count: int) -> list[int]:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(timeout=10) as client:
        responses = await asyncio.gather(
            *(client.post(f"{url}/v1/chat/completions", json=body) for _ in range(count))
        )
    return [r.status_code for r in responses]


def test_sigterm_writes_every_queued_row_before_exit(tmp_path: Path, mock_upstream: str) -> None:
    # A long flush interval keeps rows in the queue until shutdown forces them out.
    config = write_config(tmp_path / "config.toml", mock_upstream, flush_interval_ms=60_000)
    port = free_port()
    database = tmp_path / "db" / "router.db"
    server = start(
        "serve", "--config", str(config), "--port", str(port),
        "--database", f"sqlite:///{database}", cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", server)
        statuses = asyncio.run(fire(f"http://127.0.0.1:{port}", 40))
        server.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after its graceful shutdown, as a process should.
        assert server.wait(20) == -signal.SIGTERM
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    output = server.stdout.read().decode() if server.stdout else ""
    server.stdout.close() if server.stdout else None

    assert statuses == [200] * 40
    assert "Recorded 40 request(s); shut down cleanly" in output
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone() == (40,)
        assert conn.execute("SELECT count(*) FROM attempts").fetchone() == (40,)
        assert conn.execute("SELECT success_count FROM providers").fetchone() == (40,)
    assert "sk-mock-upstream-key" not in output
    token_file = database.parent / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert str(token_file) in output
    assert token_file.read_text().strip() not in output


def test_a_bad_setting_stops_start_up_with_a_sentence(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nport = "eighty"\n')

    result = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "server.port" in result.stderr
    assert str(config) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_provider_in_the_config_stops_start_up_and_seeds_nothing(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[providers]]\nname = "x"\ntype = "openai"\nconfig = { apiKey = "k" }\nmodels = ["m"]\n'
    )
    database = tmp_path / "router.db"

    result = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(config),
         "--database", f"sqlite:///{database}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip

    assert result.returncode == 2
    assert "providers[0]" in result.stderr and "baseURL" in result.stderr
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM providers").fetchone() == (0,)
