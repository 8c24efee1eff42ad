"""The official ``openai`` SDK's ``client.responses`` against a real ``serve`` process, with a
chat-only OpenAI-compatible upstream and with an Anthropic upstream behind it (both the fake, as
real processes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.doors.gateway_process import Gateway, gateway

FIVE_WORDS = "mock reply alpha bravo charlie"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
MODELS = ["mock-gpt", "claude-via-anthropic"]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway(tmp_path_factory.mktemp("responses-sdk")) as found:
        yield found


@pytest.fixture
def sdk(running: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{running.url}/v1", api_key=running.client_key, max_retries=0
    ) as client:
        yield client


@pytest.mark.parametrize("model", MODELS)
def test_create_retrieve_list_and_delete(sdk: openai.OpenAI, model: str) -> None:
    response = sdk.responses.create(model=model, instructions="Be brief.", input="Hello there")
    assert response.status == "completed" and response.output_text == FIVE_WORDS
    assert response.id.startswith("resp_") and response.model == model
    assert response.usage is not None and response.usage.output_tokens == 5
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0

    again = sdk.responses.retrieve(response.id)
    assert again.id == response.id and again.output_text == FIVE_WORDS
    items = list(sdk.responses.input_items.list(response.id))
    assert len(items) == 1 and items[0].type == "message"
    assert items[0].content[0].type == "input_text"
    assert items[0].content[0].text == "Hello there"

    sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)


@pytest.mark.parametrize("model", MODELS)
def test_stream(sdk: openai.OpenAI, model: str) -> None:
    with sdk.responses.stream(model=model, input="Hello there") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == FIVE_WORDS and len(deltas) == 5
    assert final.status == "completed" and final.output_text == FIVE_WORDS
    assert sdk.responses.retrieve(final.id).output_text == FIVE_WORDS


@pytest.mark.parametrize("model", MODELS)
def test_two_turns_with_previous_response_id_and_a_function_tool(
    sdk: openai.OpenAI, model: str, running: Gateway
) -> None:
    first = sdk.responses.create(
        model=model,
        tools=[WEATHER],
        input="Weather in Paris? mock-tool-call:get_weather",
        stream=True,
    )
    completed = [e for e in first if e.type == "response.completed"]
    assert len(completed) == 1
    # The Anthropic fake says some text before its tool call; the chat fake only calls.
    kinds = [item.type for item in completed[0].response.output]
    assert kinds == (["function_call"] if model == "mock-gpt" else ["message", "function_call"])
    call = completed[0].response.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city":"mock"}'

    second = sdk.responses.create(
        model=model,
        tools=[WEATHER],
        previous_response_id=completed[0].response.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
    )
    assert second.status == "completed" and second.output_text == FIVE_WORDS
    assert second.previous_response_id == completed[0].response.id
    sent: Any = running.mock_requests()[-1]
    if model == "mock-gpt":
        assert sent["path"] == "/v1/chat/completions"
        messages = sent["json"]["messages"]
        assert messages[0]["content"] == "Weather in Paris? mock-tool-call:get_weather"
        assert messages[1]["tool_calls"][0]["id"] == call.call_id
        assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "Sunny"}
    else:
        assert sent["path"] == "/v1/messages"
        turns = sent["json"]["messages"]
        assert [block["type"] for block in turns[1]["content"]] == ["text", "tool_use"]
        assert turns[1]["content"][1]["id"] == call.call_id
        assert turns[2]["content"][0]["type"] == "tool_result"
    assert running.client_key not in str(sent)


def test_errors_reach_the_sdk_as_its_own_exceptions(running: Gateway, sdk: openai.OpenAI) -> None:
    wrong = openai.OpenAI(base_url=f"{running.url}/v1", api_key="sk-wrong", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError):
        wrong.responses.create(model="mock-gpt", input="x")
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="nope", input="x")
    with pytest.raises(openai.BadRequestError, match="resp_missing") as missing:
        sdk.responses.create(model="mock-gpt", input="x", previous_response_id="resp_missing")
    assert missing.value.code == "previous_response_not_found"
    with pytest.raises(openai.BadRequestError, match="Background"):
        sdk.responses.create(model="mock-gpt", input="x", background=True)
