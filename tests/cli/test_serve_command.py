"""`provider-router serve` as a process: a taken port stops it first, `--with-mock` runs the fake
upstream beside it and stops it too."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import free_port, start, wait_until_up


def test_a_port_in_use_stops_serve_first_with_exit_3_and_no_files(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "router", "serve", "--port", str(port),
             "--database", f"sqlite:///{tmp_path / 'data' / 'router.db'}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert result.returncode == 3
    assert result.stderr.strip() == (
        f"provider-router: Port {port} on 127.0.0.1 is already in use (another provider-router "
        "running?); stop it or choose another port with --port."
    )
    assert "listening" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no admin-token, no secret-key


def test_a_port_in_use_for_the_fake_upstream_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        mock_port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "router", "serve", "--port", str(free_port()), "--with-mock",
             "--mock-port", str(mock_port), "--database", f"sqlite:///{tmp_path / 'r.db'}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 3
    assert f"Port {mock_port}" in result.stderr and "fake upstream" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_serve_with_mock_runs_the_fake_upstream_and_stops_it(tmp_path: Path) -> None:
    port, mock_port = free_port(), free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        '[[providers]]\nid = "mock"\nname = "mock"\ntype = "openai"\nmodels = ["mock-gpt"]\n'
        f'config = {{ baseURL = "http://127.0.0.1:{mock_port}/v1" }}\n'
    )
    server = start(
        "serve", "--config", str(config), "--port", str(port), "--with-mock",
        "--mock-port", str(mock_port), "--database", f"sqlite:///{tmp_path / 'r.db'}",
        cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", server)
        body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "Hello!"}]}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30)
        fake = httpx.get(f"http://127.0.0.1:{mock_port}/health", timeout=5)
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stdout:
            server.stdout.close()

    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    assert fake.status_code == 200
    try:
        httpx.get(f"http://127.0.0.1:{mock_port}/health", timeout=2)
        raise AssertionError("the fake upstream outlived the server")
    except httpx.TransportError:
        pass  # stopped with the server
