"""The Messages stream grammar as a contract: OpenAI chunks in, golden Anthropic transcripts out.

Each case feeds a chat stream (as an adapter yields it) through the door's renderer and compares
every event, byte for byte after the message id is normalised, with ``golden/<case>.sse``. Set
``UPDATE_GOLDEN=1`` to rewrite the files after a deliberate change, then read the diff.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from providers.anthropic.adapter import AnthropicAdapter, upstream_error
from providers.base import AdapterOptions, ChatStream, Usage
from router.doors.messages import MessagesDoor
from router.doors.messages_answer import MessagesStream
from router.errors import (
    StreamInterrupted,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import serve_asgi

GOLDEN = Path(__file__).parent / "golden"


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
    return (
        b"data: "
        + orjson.dumps({"object": "chat.completion.chunk", "choices": [choice]})
        + (b"\n\n")
    )


def call(index: int, call_id: str | None, name: str | None, arguments: str) -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": arguments}
    if name is not None:
        function["name"] = name
    found: dict[str, Any] = {"index": index, "function": function}
    if call_id is not None:
        found |= {"id": call_id, "type": "function"}
    return {"tool_calls": [found]}


CASES: dict[str, list[bytes]] = {
    "text": [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello"}),
        chunk({"content": " world"}),
        chunk({}, "stop"),
    ],
    "tool_only": [
        chunk({"role": "assistant", "content": None}),
        chunk(call(0, "call_1", "get_weather", "")),
        chunk(call(0, None, None, '{"city":')),
        chunk(call(0, None, None, '"Paris"}')),
        chunk({}, "tool_calls"),
    ],
    "thinking_text_two_tools": [
        chunk({"role": "assistant", "reasoning_content": "Let me"}),
        chunk({"reasoning_content": " think."}),
        chunk({"content": "Checking both."}),
        chunk(call(0, "call_a", "get_weather", '{"city":"Paris"}')),
        chunk(call(1, "call_b", "get_time", "")),
        chunk(call(1, None, None, '{"tz":"CET"}')),
        chunk({}, "tool_calls"),
    ],
    "max_tokens": [
        chunk({"role": "assistant", "content": "Cut"}),
        chunk({}, "length"),
    ],
    "stop_sequence": [
        chunk({"role": "assistant", "content": "One, two"}),
        chunk({}, "stop", stop_reason="three"),
    ],
}


async def replay(blocks: list[bytes], usage: Usage | None) -> AsyncIterator[bytes]:
    for block in blocks:
        yield block


def normalise(raw: bytes) -> str:
    return re.sub(r'"msg_[0-9a-f]+"', '"msg_ID"', raw.decode())


async def render(name: str, *, stops: list[str]) -> tuple[str, ChatStream]:
    usage = Usage(12, 7, 19)
    inner = ChatStream(replay(CASES[name], usage), usage)
    outer = MessagesStream(inner, "claude-via-router", stops).chat_stream()
    out = [block async for block in outer]
    return normalise(b"".join(out)), outer


@pytest.mark.parametrize("name", sorted(CASES))
async def test_the_stream_matches_its_golden_transcript(name: str) -> None:
    rendered, outer = await render(name, stops=["three"])
    path = GOLDEN / f"{name}.sse"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert rendered == path.read_text()
    assert outer.usage == Usage(12, 7, 19)  # the history still gets the upstream's usage


def parse(transcript: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in transcript.split("\n\n"):
        if block:
            name, data = block.split("\n")
            found.append((name.removeprefix("event: "), orjson.loads(data[len("data: ") :])))
    return found


@pytest.mark.parametrize("name", sorted(CASES))
async def test_every_golden_transcript_keeps_the_grammar(name: str) -> None:
    """The rules themselves, checked on each golden file (so a careless update fails too)."""
    found = parse((GOLDEN / f"{name}.sse").read_text())
    names = [event for event, _ in found]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    open_index: int | None = None
    expected = 0
    for event, data in found[1:-2]:
        if event == "content_block_start":
            assert open_index is None, "blocks overlap"
            assert data["index"] == expected, "indices start at 0 and rise by one"
            open_index = data["index"]
        elif event == "content_block_delta":
            assert data["index"] == open_index
        elif event == "content_block_stop":
            assert data["index"] == open_index
            open_index, expected = None, expected + 1
        else:
            pytest.fail(f"unexpected event {event}")
    assert open_index is None
    assert found[-2][1]["usage"]["output_tokens"] == 7


async def test_cached_prompt_tokens_are_reported_apart() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 3, "total_tokens": 103}
    usage["prompt_tokens_details"] = {"cached_tokens": 60}  # type: ignore[assignment]
    last = b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\n"
    blocks = [chunk({"content": "Hi"}), chunk({}, "stop"), last]
    inner = ChatStream(replay(blocks, None), Usage(100, 3, 103))
    outer = MessagesStream(inner, "m", []).chat_stream()
    found = parse(normalise(b"".join([b async for b in outer])))
    assert found[-2][1]["usage"] == {
        "input_tokens": 40,
        "output_tokens": 3,
        "cache_read_input_tokens": 60,
    }


async def test_message_start_goes_out_before_the_upstream_says_anything() -> None:
    async def silent() -> AsyncIterator[bytes]:
        raise AssertionError("the upstream was read before message_start went out")
        yield b""

    outer = MessagesStream(ChatStream(silent()), "m", []).chat_stream()
    first = await anext(aiter(outer))
    assert first.startswith(b"event: message_start\n")
    await outer.aclose()


async def test_a_stream_that_breaks_off_raises_rather_than_ending() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": "Half"})
        raise UpstreamProtocolError("Provider 'x' ended its stream without 'data: [DONE]'.")

    outer = MessagesStream(ChatStream(broken()), "m", []).chat_stream()
    seen: list[bytes] = []
    with pytest.raises(UpstreamProtocolError):
        async for block in outer:
            seen.append(block)
    assert b"message_stop" not in b"".join(seen)
    assert b"message_delta" not in b"".join(seen)


async def test_interleaved_tool_arguments_are_refused_not_misplaced() -> None:
    blocks = [
        chunk(call(0, "call_a", "a", "")),
        chunk(call(1, "call_b", "b", "")),
        chunk(call(0, None, None, "{}")),
    ]
    outer = MessagesStream(ChatStream(replay(blocks, None)), "m", []).chat_stream()
    with pytest.raises(UpstreamProtocolError, match="interleaved"):
        async for _ in outer:
            pass


def error_event(failure: UpstreamError) -> dict[str, Any]:
    """The door's last event for a stream that ``failure`` broke off."""
    raw = MessagesDoor().stream_error(StreamInterrupted("It broke off.", upstream=failure))
    name, _, data = raw.decode().partition("\n")
    assert name == "event: error" and raw.endswith(b"\n\n")
    found: dict[str, Any] = orjson.loads(data.removeprefix("data: "))
    assert found["type"] == "error" and found["error"]["message"] == "It broke off."
    return found


async def test_an_anthropic_error_event_in_a_translated_stream_keeps_its_type() -> None:
    # The Anthropic adapter's chat stream (the translated path) against the fake upstream's
    # mid-stream overloaded_error, rendered as a Messages stream the way the router does.
    upstream = MockUpstream(MockOptions(fail="error_event"))
    async with serve_asgi(upstream.app()) as url:
        adapter = AnthropicAdapter("ant", {"baseURL": url, "apiKey": "sk-ant-x"}, AdapterOptions())
        try:
            body = {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}
            inner = await adapter.chat_stream(body, "mock-claude", include_usage=True)
            outer = MessagesStream(inner, "m", []).chat_stream()
            seen: list[bytes] = []
            with pytest.raises(UpstreamStatusError) as raised:
                async for block in outer:
                    seen.append(block)
        finally:
            await adapter.aclose()
    assert b"text_delta" in b"".join(seen) and b"message_stop" not in b"".join(seen)
    assert error_event(raised.value)["error"]["type"] == "overloaded_error"


def test_a_stream_error_names_the_failure_in_anthropics_terms() -> None:
    rate = UpstreamStatusError("Too many.", status_code=429, body=b'{"error": {"code": null}}')
    assert error_event(rate)["error"]["type"] == "rate_limit_error"  # from the status
    refused = upstream_error("ant", 400, "request_too_large", "Too big.")
    assert error_event(refused)["error"]["type"] == "request_too_large"  # the upstream's own
    assert error_event(UpstreamTimeout("Stalled."))["error"]["type"] == "api_error"
    assert error_event(UpstreamProtocolError("No end."))["error"]["type"] == "api_error"


async def test_an_error_chunk_mid_stream_fails_the_stream_with_its_status() -> None:
    # vLLM and OpenRouter report a failure mid-answer as an error chunk, then [DONE]: the
    # answer must not be passed off as complete (end_turn, message_stop).
    error = {"message": "Rate limited upstream", "type": "RateLimitError", "code": 429}
    blocks = [
        chunk({"role": "assistant", "content": "Half"}),
        b"data: " + orjson.dumps({"error": error}) + b"\n\n",
        b"data: [DONE]\n\n",
    ]
    outer = MessagesStream(ChatStream(replay(blocks, None)), "m", []).chat_stream()
    seen: list[bytes] = []
    with pytest.raises(UpstreamStatusError) as raised:
        async for block in outer:
            seen.append(block)
    assert b"text_delta" in b"".join(seen) and b"message_stop" not in b"".join(seen)
    assert raised.value.status_code == 429 and "Rate limited upstream" in raised.value.message
    assert error_event(raised.value)["error"]["type"] == "rate_limit_error"
