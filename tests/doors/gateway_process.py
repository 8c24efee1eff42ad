"""A real ``provider-router serve`` process in front of a real fake-upstream process, for the
SDK and Claude Code tests (a plain helper, no fixtures)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    free_port,
    mock_upstream_process,
    start,
    wait_until_up,
)


@dataclass
class Gateway:
    url: str
    mock_url: str
    client_key: str

    def mock_requests(self) -> list[dict[str, object]]:
        """What the fake upstream received, oldest first."""
        found: list[dict[str, object]] = httpx.get(f"{self.mock_url}/_mock/requests").json()
        return found


def _config(path: Path, mock_url: str) -> Path:
    path.write_text(
        f"""
[[providers]]
id = "chat-upstream"
name = "OpenAI-compatible fake"
type = "openai"
config = {{ baseURL = "{mock_url}/v1", apiKey = "sk-upstream-openai" }}
models = ["mock-gpt"]

[[providers]]
id = "messages-upstream"
name = "Anthropic fake"
type = "anthropic"
config = {{ baseURL = "{mock_url}", apiKey = "sk-upstream-anthropic" }}
models = [{{ id = "claude-via-anthropic", upstream_model = "mock-claude" }}]
"""
    )
    return path


@contextlib.contextmanager
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    """Both processes on loopback, one client key created through the management API."""
    with mock_upstream_process(tmp_path) as mock_url:
        port = free_port()
        config = _config(tmp_path / "config.toml", mock_url)
        server = start(
            "serve", "--config", str(config), "--port", str(port),
            "--database", f"sqlite:///{tmp_path / 'router.db'}",
            cwd=tmp_path, env={"PROVIDER_ROUTER_ADMIN_TOKEN": ADMIN_TOKEN},
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{url}/health", server)
            made = httpx.post(f"{url}/v1/keys", json={"name": "agent"}, headers=ADMIN)
            assert made.status_code == 201, made.text
            yield Gateway(url, mock_url, made.json()["key"])
        finally:
            server.terminate()
            server.wait(20)
            if server.stdout:
                server.stdout.close()
