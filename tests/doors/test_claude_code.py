"""Real Claude Code (npm ``@anthropic-ai/claude-code``, pinned in scripts/install-agent-clis)
headless through a real ``serve`` process to the fake OpenAI-compatible upstream.

Claude Code gets a temporary HOME, the gateway as ``ANTHROPIC_BASE_URL``, a client key, and the
variables that turn off its other traffic. To prove it calls nothing but the gateway, every
proxy variable points at a loopback listener that records any connection (only the gateway's
address is exempt): it must see none. (Checked once by hand with ``strace -e trace=connect``
too: one connection, to the gateway.)
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
from tests.doors.tattletale import Tattletale, listening
from tests.helpers import require

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = ROOT / ".tools" / "bin" / "claude"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway(tmp_path_factory.mktemp("claude")) as found:
        yield found


@pytest.fixture
def tattletale() -> Iterator[Tattletale]:
    with listening() as server:
        yield server


def claude(prompt: str, running: Gateway, tattletale: Tattletale, tmp_path: Path) -> dict[str, Any]:
    require(CLAUDE.exists(), "Claude Code (scripts/install-agent-clis)")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    trap = tattletale.url
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": running.url,
        "ANTHROPIC_AUTH_TOKEN": running.client_key,
        # Every model Claude Code picks (main, and the small fast one for background work).
        "ANTHROPIC_MODEL": "mock-gpt",
        "ANTHROPIC_SMALL_FAST_MODEL": "mock-gpt",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "mock-gpt",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "HTTPS_PROXY": trap,
        "HTTP_PROXY": trap,
        "https_proxy": trap,
        "http_proxy": trap,
        "NO_PROXY": running.url.removeprefix("http://"),
        "no_proxy": running.url.removeprefix("http://"),
    }
    done = subprocess.run(
        [str(CLAUDE), "-p", "--output-format", "json", prompt],
        cwd=work,
        env=env,
        capture_output=True,
        timeout=50,  # under pytest-timeout's 60 s
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    assert tattletale.seen == [], "Claude Code called something other than the gateway"
    return result


def test_a_plain_prompt(running: Gateway, tattletale: Tattletale, tmp_path: Path) -> None:
    result = claude("Say hello.", running, tattletale, tmp_path)
    assert result["is_error"] is False and result["subtype"] == "success"
    assert result["result"] == "mock reply alpha bravo charlie"
    sent: Any = running.mock_requests()[-1]
    body = sent["json"]
    assert sent["path"] == "/v1/chat/completions" and body["stream"] is True
    assert len(body["tools"]) == 12
    assert "x-api-key" not in sent["headers"] and running.client_key not in str(sent)
    # Its environment section comes as a system turn after the user's, and stays there.
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "system"]
    assert str(Path(tmp_path / "work")) in body["messages"][2]["content"]
    assert not set(body) & {"thinking", "context_management", "output_config", "metadata"}


def test_a_tool_using_prompt(running: Gateway, tattletale: Tattletale, tmp_path: Path) -> None:
    result = claude("Read my notes: mock-tool-call:Read", running, tattletale, tmp_path)
    assert result["is_error"] is False and result["num_turns"] == 2
    assert result["result"] == "mock reply alpha bravo charlie"
    requests: Any = running.mock_requests()
    first, second = requests[-2]["json"], requests[-1]["json"]
    assert first["messages"][-1]["role"] == "system"
    call = second["messages"][-2]["tool_calls"][0]
    assert call["function"]["name"] == "Read"
    answered = second["messages"][-1]
    assert answered["role"] == "tool" and answered["tool_call_id"] == call["id"]
