"""Real Codex CLI (npm ``@openai/codex``, pinned in scripts/install-agent-clis) headless
(``codex exec``) through a real ``serve`` process to the fake OpenAI-compatible chat upstream.

Codex gets a temporary CODEX_HOME whose config.toml names the gateway as a custom model
provider (``wire_api = "responses"``, the client key in the variable ``env_key`` names), with
update checks, analytics and plugins off. To prove it calls nothing but the gateway, every proxy
variable points at a loopback listener that records any connection (only the gateway's host,
127.0.0.1, is exempt: Codex's HTTP client matches NO_PROXY without the port): it must see none.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.doors.gateway_process import Gateway, gateway
from tests.doors.tattletale import Tattletale, listening, tapping
from tests.helpers import require

ROOT = Path(__file__).resolve().parents[2]
CODEX = ROOT / ".tools" / "bin" / "codex"
KEY_VARIABLE = "PROVIDER_ROUTER_KEY"


@pytest.fixture
def tattletale() -> Iterator[Tattletale]:
    with listening() as server:
        yield server


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway(tmp_path_factory.mktemp("codex")) as found:
        yield found


def codex_config(url: str, *, websockets: bool = False, model: str = "mock-gpt") -> str:
    """The CODEX_HOME/config.toml docs/codex.md shows, pointed at ``url``."""
    return f"""
model = "{model}"
model_provider = "provider-router"
check_for_update_on_startup = false

[model_providers.provider-router]
name = "provider-router"
base_url = "{url}/v1"
wire_api = "responses"
env_key = "{KEY_VARIABLE}"
supports_websockets = {str(websockets).lower()}
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

[features]
plugins = false
"""


def codex(
    prompt: str,
    running: Gateway,
    trap: Tattletale,
    tmp_path: Path,
    *,
    websockets: bool = False,
    url: str | None = None,
    model: str = "mock-gpt",
) -> list[dict[str, Any]]:
    """Run ``codex exec --json``; return its events (one JSON object a line)."""
    require(CODEX.exists(), "Codex CLI (scripts/install-agent-clis)")
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(
        codex_config(url or running.url, websockets=websockets, model=model)
    )
    proxy = trap.url
    # Codex's HTTP client (reqwest) matches NO_PROXY by host, without the port.
    gateway_host = running.url.removeprefix("http://").rsplit(":", 1)[0]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(home),
        KEY_VARIABLE: running.client_key,
        "HTTPS_PROXY": proxy,
        "HTTP_PROXY": proxy,
        "https_proxy": proxy,
        "http_proxy": proxy,
        "ALL_PROXY": proxy,
        "NO_PROXY": gateway_host,
        "no_proxy": gateway_host,
    }
    done = subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", "--json", prompt],
        cwd=work,
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=50,  # under pytest-timeout's 60 s
        check=False,
    )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output
    assert trap.seen == [], "Codex called something other than the gateway"
    assert running.client_key not in output
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]


def agent_messages(found: list[dict[str, Any]]) -> list[str]:
    return [
        e["item"]["text"]
        for e in found
        if e.get("type") == "item.completed" and e["item"].get("type") == "agent_message"
    ]


def test_a_plain_prompt(running: Gateway, tattletale: Tattletale, tmp_path: Path) -> None:
    before = len(running.mock_requests())
    found = codex("Say hello.", running, tattletale, tmp_path)
    assert agent_messages(found) == ["mock reply alpha bravo charlie"]
    assert found[-1]["type"] == "turn.completed"
    sent: Any = running.mock_requests()[before:]
    assert len(sent) == 1  # one streaming POST /v1/responses, one chat call upstream
    body = sent[0]["json"]
    assert sent[0]["path"] == "/v1/chat/completions" and body["stream"] is True
    # Codex's developer messages arrive as system turns; its own fields stay here.
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][-1] == {"role": "user", "content": "Say hello."}
    assert not set(body) & {"include", "prompt_cache_key", "client_metadata", "store"}
    names = [tool["function"]["name"] for tool in body["tools"]]
    assert "exec_command" in names and "web_search" not in names
    assert "authorization" in sent[0]["headers"] and running.client_key not in str(sent)


def test_a_tool_calling_run(running: Gateway, tattletale: Tattletale, tmp_path: Path) -> None:
    before = len(running.mock_requests())
    found = codex("List my files: mock-tool-call:exec_command", running, tattletale, tmp_path)
    assert agent_messages(found) == ["mock reply alpha bravo charlie"]
    sent: Any = running.mock_requests()[before:]
    assert len(sent) == 2
    first, second = sent[0]["json"], sent[1]["json"]
    assert first["messages"][-1]["content"].endswith("mock-tool-call:exec_command")
    call = second["messages"][-2]["tool_calls"][0]
    assert call["function"]["name"] == "exec_command"
    answered = second["messages"][-1]
    assert answered["role"] == "tool" and answered["tool_call_id"] == call["id"]
    # Codex ran the command the fake asked for ("mock": not found) and sent back its result.
    assert "Process exited with code 127" in answered["content"]
    kinds = [e["item"]["type"] for e in found if e.get("type") == "item.completed"]
    assert "command_execution" in kinds, kinds


def test_websockets_fall_back_to_http(
    running: Gateway, tattletale: Tattletale, tmp_path: Path
) -> None:
    """With ``supports_websockets = true`` Codex tries the upgrade first; the gateway's 426
    sends it straight to HTTP, in the same run."""
    with tapping(running.url) as tap:
        found = codex("Say hello.", running, tattletale, tmp_path, websockets=True, url=tap.url)
        seen = tap.requests()
    assert agent_messages(found) == ["mock reply alpha bravo charlie"]
    assert ("GET", "/v1/responses", "websocket") in seen, seen
    first_try = seen.index(("GET", "/v1/responses", "websocket"))
    assert ("POST", "/v1/responses", None) in seen[first_try:], seen


def test_a_tool_calling_run_over_an_anthropic_upstream(
    running: Gateway, tattletale: Tattletale, tmp_path: Path
) -> None:
    before = len(running.mock_requests())
    prompt = "List my files: mock-tool-call:exec_command"
    found = codex(prompt, running, tattletale, tmp_path, model="claude-via-anthropic")
    assert agent_messages(found)[-1] == "mock reply alpha bravo charlie"
    sent: Any = running.mock_requests()[before:]
    assert [r["path"] for r in sent] == ["/v1/messages", "/v1/messages"]
    # The Anthropic fake says some text before its call; both come back in the next turn.
    called, answered = sent[1]["json"]["messages"][-2:]
    assert [block["type"] for block in called["content"]] == ["text", "tool_use"]
    call = called["content"][1]
    assert call["name"] == "exec_command" and call["input"]["sandbox_permissions"] == "use_default"
    result = answered["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call["id"]
    assert "Process exited with code 127" in result["content"]
