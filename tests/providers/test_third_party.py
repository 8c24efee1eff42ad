"""The third-party adapter example (examples/echo-adapter) works, and the docs show it verbatim.

Installing the example with pip would take seconds; instead its entry point is built from its own
pyproject.toml and handed to the registry exactly as ``importlib.metadata`` would after an
install, so the declaration, the module and the registry are all exercised.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from providers import registry
from providers.base import Adapter
from router.settings import Settings
from tests.helpers import ADMIN, app_client, sse_chunks

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "echo-adapter"
DOCS = ROOT / "docs" / "adapters.md"


def example_entry_points() -> list[EntryPoint]:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    declared = project["project"]["entry-points"][registry.ENTRY_POINT_GROUP]
    return [
        EntryPoint(name=name, value=value, group=registry.ENTRY_POINT_GROUP)
        for name, value in declared.items()
    ]


@pytest.fixture
def echo_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if ``pip install examples/echo-adapter`` had run: on the path, its entry point listed."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    installed = example_entry_points()

    def entry_points(*, group: str) -> list[EntryPoint]:
        return installed if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", entry_points)
    registry.adapter_types.cache_clear()
    yield
    registry.adapter_types.cache_clear()
    sys.modules.pop("echo_adapter", None)


def test_the_docs_show_the_example_files_as_they_are() -> None:
    docs = DOCS.read_text()
    examples = ("pyproject.toml", "toml"), ("echo_adapter.py", "python")
    for path, language in (*examples, ("test_echo_adapter.py", "python")):
        source = (EXAMPLE / path).read_text()
        assert f"```{language}\n{source}```" in docs, f"docs/adapters.md differs from {path}"


def test_the_example_declares_the_entry_point_the_registry_reads() -> None:
    (entry,) = example_entry_points()
    assert (entry.name, entry.value) == ("echo", "echo_adapter:EchoAdapter")
    assert entry.group == "provider_router.providers"


@pytest.mark.usefixtures("echo_installed")
def test_the_registry_loads_the_example_beside_the_builtins() -> None:
    types = registry.adapter_types()
    echo = types["echo"]
    assert issubclass(echo, Adapter) and echo.type == "echo"
    assert {"openai", "lm-studio", "ollama"} <= set(types)
    assert echo.validate_config({"prefix": 1}) == ["Config key 'prefix' must be a string, got 1."]
    assert "has no config key 'volume'" in echo.validate_config({"volume": 11})[0]


@pytest.mark.usefixtures("echo_installed")
async def test_an_echo_provider_serves_chat_through_the_proxy(settings: Settings) -> None:
    chat: dict[str, Any] = {
        "model": "parrot",
        "messages": [
            {"role": "system", "content": "Repeat."},
            {"role": "user", "content": "hello world"},
        ],
    }
    async with app_client(settings) as (_, client):
        created = await client.post(
            "/v1/providers",
            json={"id": "echo", "name": "Echo", "type": "echo", "config": {"prefix": "echo: "}},
            headers=ADMIN,
        )
        linked = await client.post(
            "/v1/providers/echo/models", json={"model_id": "parrot"}, headers=ADMIN
        )
        plain = await client.post("/v1/chat/completions", json=chat)
        streamed = await client.post(
            "/v1/chat/completions",
            json={**chat, "stream": True, "stream_options": {"include_usage": True}},
        )

    assert created.status_code == 201 and created.json()["type"] == "echo"
    assert linked.status_code == 201

    assert plain.status_code == 200
    assert plain.headers["x-provider-router-provider"] == "echo"
    answer = plain.json()
    assert answer["model"] == "parrot"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello world"}
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}

    chunks = sse_chunks(streamed.content, done=True)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo: hello world"
    assert chunks[-1]["usage"]["total_tokens"] == 6
