"""The Responses stream grammar as a contract: OpenAI chunks in, golden transcripts out.

Each case feeds a chat stream (as an adapter yields it) through the door's renderer and compares
every event, byte for byte after ids and the creation time are normalised, with
``golden/responses_<case>.sse``. Set ``UPDATE_GOLDEN=1`` to rewrite the files after a deliberate
change, then read the diff.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from providers.base import ChatStream, Usage
from router.doors.responses import ResponsesDoor
from router.doors.responses_answer import ResponsesStream, response_from_completion, skeleton
from router.errors import StreamInterrupted, UpstreamProtocolError, UpstreamStatusError
from tests.doors.test_messages_stream import call, chunk

GOLDEN = Path(__file__).parent / "golden"
USAGE_CHUNK = b"data: " + orjson.dumps({
    "choices": [],
    "usage": {
        "prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
}) + b"\n\n"  # fmt: skip

CASES: dict[str, list[bytes]] = {
    "text": [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello"}),
        chunk({"content": " world"}),
        chunk({}, "stop"),
        USAGE_CHUNK,
    ],
    "tool_only": [
        chunk({"role": "assistant", "content": None}),
        chunk(call(0, "call_1", "get_weather", "")),
        chunk(call(0, None, None, '{"city":')),
        chunk(call(0, None, None, '"Paris"}')),
        chunk({}, "tool_calls"),
        USAGE_CHUNK,
    ],
    "reasoning_text_two_tools": [
        chunk({"role": "assistant", "reasoning_content": "Let me"}),
        chunk({"reasoning_content": " think."}),
        chunk({"content": "Checking both."}),
        chunk(call(0, "call_a", "get_weather", '{"city":"Paris"}')),
        chunk(call(1, "call_b", "get_time", "")),
        chunk(call(1, None, None, '{"tz":"CET"}')),
        chunk({}, "tool_calls"),
        USAGE_CHUNK,
    ],
    "refusal_after_text": [
        chunk({"role": "assistant", "content": "Well,"}),
        chunk({"refusal": "I can't"}),
        chunk({"refusal": " help with that."}),
        chunk({}, "stop"),
        USAGE_CHUNK,
    ],
    "max_output_tokens": [
        chunk({"role": "assistant", "content": "Cut"}),
        chunk({}, "length"),
        USAGE_CHUNK,
    ],
}
REQUEST: dict[str, Any] = {"model": "gpt-via-router", "input": "Hi", "stream": True}


async def replay(blocks: list[bytes]) -> AsyncIterator[bytes]:
    for block in blocks:
        yield block


def normalise(raw: bytes) -> str:
    text = re.sub(r'"(resp|msg|fc|rs)_[0-9a-f]{48}"', r'"\1_ID"', raw.decode())
    return re.sub(r'"created_at":\d+', '"created_at":0', text)


async def render(blocks: list[bytes]) -> tuple[str, ChatStream, list[dict[str, Any]]]:
    done: list[dict[str, Any]] = []
    inner = ChatStream(replay(blocks), Usage(12, 7, 19))
    renderer = ResponsesStream(inner, skeleton("resp_" + "0" * 48, REQUEST), done.append)
    outer = renderer.chat_stream()
    out = [block async for block in outer]
    return normalise(b"".join(out)), outer, done


def parse(transcript: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in transcript.split("\n\n"):
        if block:
            name, data = block.split("\n")
            found.append((name.removeprefix("event: "), orjson.loads(data[len("data: ") :])))
    return found


@pytest.mark.parametrize("name", sorted(CASES))
async def test_the_stream_matches_its_golden_transcript(name: str) -> None:
    rendered, outer, done = await render(CASES[name])
    path = GOLDEN / f"responses_{name}.sse"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert rendered == path.read_text()
    assert outer.usage == Usage(12, 7, 19)  # the history still gets the upstream's usage
    final = parse(rendered)[-1][1]["response"]
    assert len(done) == 1 and done[0]["status"] == final["status"]  # handed over to be stored


ITEM_EVENTS = {
    "message": [
        "response.content_part.added", "response.output_text.delta", "response.output_text.done",
        "response.refusal.delta", "response.refusal.done", "response.content_part.done",
    ],
    "function_call": [
        "response.function_call_arguments.delta", "response.function_call_arguments.done"
    ],
    "reasoning": ["response.reasoning_text.delta", "response.reasoning_text.done"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_golden_transcript_keeps_the_grammar(name: str) -> None:
    """The rules themselves, checked on each golden file (so a careless update fails too)."""
    found = parse((GOLDEN / f"responses_{name}.sse").read_text())
    names = [event for event, _ in found]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] in ("response.completed", "response.incomplete")
    assert [data["type"] for _, data in found] == names
    assert [data["sequence_number"] for _, data in found] == list(range(len(found)))
    open_item: dict[str, Any] | None = None
    index = -1
    for event, data in found[2:-1]:
        if event == "response.output_item.added":
            assert open_item is None, "output items overlap"
            assert data["output_index"] == index + 1, "output indices start at 0 and rise by one"
            open_item, index = data["item"], data["output_index"]
        elif event == "response.output_item.done":
            assert open_item is not None and data["item"]["id"] == open_item["id"]
            assert data["output_index"] == index
            open_item = None
        else:
            assert open_item is not None and event in ITEM_EVENTS[open_item["type"]], event
            assert data["item_id"] == open_item["id"] and data["output_index"] == index
    assert open_item is None
    final = found[-1][1]["response"]
    assert len(final["output"]) == index + 1
    usage = final["usage"]
    assert usage["input_tokens_details"] == {"cached_tokens": 4}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 2}
    for item in final["output"]:
        if item["type"] == "message":
            for part in item["content"]:
                assert part["type"] == "refusal" or part["annotations"] == []


async def test_usage_details_are_there_even_when_the_upstream_gives_none() -> None:
    rendered, _, _ = await render([chunk({"content": "Hi"}), chunk({}, "stop")])
    usage = parse(rendered)[-1][1]["response"]["usage"]
    assert usage == {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 19,
    }


async def test_nothing_is_sent_before_the_upstreams_first_block() -> None:
    """So a stream that dies at once can still fall back to the next provider."""

    async def dead() -> AsyncIterator[bytes]:
        raise UpstreamProtocolError("Provider 'x' closed the stream at once.")
        yield b""

    outer = ResponsesStream(ChatStream(dead()), skeleton("resp_x", REQUEST)).chat_stream()
    with pytest.raises(UpstreamProtocolError):
        await anext(aiter(outer))


async def test_a_break_after_the_first_byte_ends_with_response_failed() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": "Half"})
        raise UpstreamProtocolError("Provider 'x' ended its stream without 'data: [DONE]'.")

    door = ResponsesDoor()
    request = door.parse(orjson.dumps(REQUEST), [])
    await door.prepare(request, None, "req_1")
    outer = door.stream(ChatStream(broken()), request)
    seen: list[bytes] = []
    with pytest.raises(UpstreamProtocolError) as raised:
        async for block in outer:
            seen.append(block)
    error = StreamInterrupted("The upstream stream broke off.", upstream=raised.value)
    seen.append(door.stream_error(error, request))
    found = parse(normalise(b"".join(seen)))
    assert [name for name, _ in found][-1] == "response.failed"
    assert [data["sequence_number"] for _, data in found] == list(range(len(found)))
    failed = found[-1][1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "The upstream stream broke off."}
    assert failed["output"][0]["content"][0]["text"] == "Half"
    rate = UpstreamStatusError("Too many.", status_code=429, body=b"{}")
    again = door.stream_error(StreamInterrupted("Slow down.", upstream=rate), request)
    assert b'"code":"rate_limit_exceeded"' in again


async def test_an_error_chunk_mid_stream_fails_the_stream() -> None:
    blocks = [
        chunk({"role": "assistant", "content": "Half"}),
        b'data: {"error": {"message": "Overloaded", "code": 503}}\n\n',
        b"data: [DONE]\n\n",
    ]
    outer = ResponsesStream(ChatStream(replay(blocks)), skeleton("resp_x", REQUEST)).chat_stream()
    seen: list[bytes] = []
    with pytest.raises(UpstreamStatusError) as raised:
        async for block in outer:
            seen.append(block)
    assert raised.value.status_code == 503
    assert b"response.completed" not in b"".join(seen)


async def test_interleaved_tool_arguments_are_refused_not_misplaced() -> None:
    blocks = [
        chunk(call(0, "call_a", "a", "")),
        chunk(call(1, "call_b", "b", "")),
        chunk(call(0, None, None, "{}")),
    ]
    outer = ResponsesStream(ChatStream(replay(blocks)), skeleton("resp_x", REQUEST)).chat_stream()
    with pytest.raises(UpstreamProtocolError, match="interleaved"):
        async for _ in outer:
            pass


async def test_a_native_stream_failure_continues_its_sequence_numbers() -> None:
    async def native() -> AsyncIterator[bytes]:
        yield b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
        yield b'event: x\ndata: {"type":"response.output_text.delta","sequence_number":1}\n\n'
        raise UpstreamProtocolError("Provider 'x' ended its Responses stream early.")

    door = ResponsesDoor()
    request = door.parse(orjson.dumps(REQUEST), [])
    watched = door.native_answer(ChatStream(native()), request)
    assert isinstance(watched, ChatStream)
    seen = []
    with pytest.raises(UpstreamProtocolError):
        async for block in watched:
            seen.append(block)
    assert len(seen) == 2  # relayed as they came
    last = parse(door.stream_error(StreamInterrupted("Gone."), request).decode())
    assert last[0][0] == "response.failed" and last[0][1]["sequence_number"] == 2


def test_a_refusal_in_a_whole_answer_is_a_refusal_part() -> None:
    message = {"role": "assistant", "content": None, "refusal": "No."}
    data = {"choices": [{"message": message, "finish_reason": "stop"}]}
    response = response_from_completion(data, skeleton("resp_x", REQUEST))
    assert response["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]
    assert response["status"] == "completed"
