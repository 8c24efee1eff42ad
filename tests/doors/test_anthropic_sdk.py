"""The official ``anthropic`` SDK against a real ``serve`` process, with an OpenAI-compatible
upstream and with an Anthropic upstream behind it (both the fake, as real processes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.doors.gateway_process import Gateway, gateway

FIVE_WORDS = "mock reply alpha bravo charlie"
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway(tmp_path_factory.mktemp("sdk")) as found:
        yield found


@pytest.fixture
def sdk(running: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=running.url, api_key=running.client_key, max_retries=0
    ) as client:
        yield client


MODELS = ["mock-gpt", "claude-via-anthropic"]


@pytest.mark.parametrize("model", MODELS)
def test_messages_create(sdk: anthropic.Anthropic, model: str) -> None:
    message = sdk.messages.create(
        model=model,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello there"}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "end_turn"
    block = message.content[0]
    assert block.type == "text" and block.text == FIVE_WORDS
    assert message.usage.output_tokens == 5


@pytest.mark.parametrize("model", MODELS)
def test_messages_stream(sdk: anthropic.Anthropic, model: str) -> None:
    with sdk.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "Hello there"}]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == FIVE_WORDS and len(texts) == 5
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5


@pytest.mark.parametrize("model", MODELS)
def test_a_tool_round_trip(sdk: anthropic.Anthropic, model: str, running: Gateway) -> None:
    question: Any = {"role": "user", "content": "Weather in Paris? mock-tool-call:get_weather"}
    with sdk.messages.stream(
        model=model, max_tokens=100, tools=[WEATHER], messages=[question]
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "mock"}
    answer: Any = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}],
    }
    second = sdk.messages.create(
        model=model,
        max_tokens=100,
        tools=[WEATHER],
        messages=[question, {"role": "assistant", "content": first.content}, answer],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    sent: Any = running.mock_requests()[-1]["json"]
    if model == "mock-gpt":
        assert sent["messages"][-1] == {
            "role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"
        }  # fmt: skip
    else:
        assert sent["messages"][-1] == answer  # passed through as the client sent it


def test_errors_reach_the_sdk_as_its_own_exceptions(
    running: Gateway, sdk: anthropic.Anthropic
) -> None:
    wrong = anthropic.Anthropic(base_url=running.url, api_key="sk-wrong", max_retries=0)
    with wrong, pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(
            model="mock-gpt", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    count = sdk.messages.count_tokens(
        model="claude-via-anthropic", messages=[{"role": "user", "content": "one two three"}]
    )
    assert count.input_tokens == 3
    page = sdk.models.list(limit=1)
    assert page.data[0].id == "claude-via-anthropic" and page.has_more is True
