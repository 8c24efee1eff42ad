"""The ``anthropic`` adapter against respx: exact request JSON, answers, streams and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import orjson
import pytest
import respx

from providers.anthropic.adapter import AnthropicAdapter
from providers.base import AdapterOptions, ChatStream, Usage
from providers.registry import get_adapter_class
from router.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnsupported,
)
from router.mock.upstream import MockOptions
from tests.helpers import adapter_on_fake, sse_chunks

URL = "https://api.anthropic.com/v1/messages"
KEY = "sk-ant-secret-1234"
PNG = "iVBORw0KGgo="


def make_adapter(**config: Any) -> AnthropicAdapter:
    return AnthropicAdapter("claude", {"apiKey": KEY, **config}, AdapterOptions())


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "my-claude", "messages": list(messages), **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def message(*content: dict[str, Any], stop: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": list(content),
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 4, **usage},
    }


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


async def sent_body(body: dict[str, Any], **config: Any) -> dict[str, Any]:
    """The JSON the adapter sends for ``body`` (non-streamed)."""
    with respx.mock(using="httpx") as mock:
        route = mock.post(URL).respond(json=message(text("ok")))
        await make_adapter(**config).chat(body, "claude-x")
    sent: dict[str, Any] = orjson.loads(route.calls.last.request.content)
    return sent


# -- request translation --------------------------------------------------------------------


async def test_text_request_headers_system_and_default_max_tokens() -> None:
    body = chat(
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Speak French."}]},
        user("Hello"),
    )
    with respx.mock(using="httpx") as mock:
        route = mock.post(URL).respond(json=message(text("Bonjour")))
        await make_adapter().chat(body, "claude-x")
    request = route.calls.last.request
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert orjson.loads(request.content) == {
        "model": "claude-x",
        "max_tokens": 4096,
        "system": "Be brief.\n\nSpeak French.",
        "messages": [{"role": "user", "content": "Hello"}],
    }


async def test_config_base_url_with_v1_version_headers_and_default_max_tokens() -> None:
    adapter = make_adapter(
        baseURL="http://claude.internal:8000/v1/",
        anthropicVersion="2024-01-01",
        defaultMaxTokens=321,
        headers={"anthropic-beta": "tools-2024"},
    )
    with respx.mock(using="httpx") as mock:
        route = mock.post("http://claude.internal:8000/v1/messages").respond(
            json=message(text("ok"))
        )
        await adapter.chat(chat(user("hi")), "claude-x")
    request = route.calls.last.request
    assert request.headers["anthropic-version"] == "2024-01-01"
    assert request.headers["anthropic-beta"] == "tools-2024"
    assert orjson.loads(request.content)["max_tokens"] == 321


async def test_same_role_turns_merge_and_multipart_images_translate() -> None:
    body = chat(
        user("First."),
        user(
            [
                {"type": "text", "text": "What is in"},
                {"type": "text", "text": ""},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ]
        ),
        {"role": "assistant", "content": "A cat."},
        {"role": "assistant", "content": [{"type": "text", "text": "A small one."}]},
        user("Thanks"),
    )
    sent = await sent_body(body)
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "First."},
                {"type": "text", "text": "What is in"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "A cat."},
                {"type": "text", "text": "A small one."},
            ],
        },
        {"role": "user", "content": "Thanks"},
    ]


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_tools_translate_to_input_schema() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    sent = await sent_body(chat(user("hi"), tools=[WEATHER, bare]))
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in sent


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
    ],
)
async def test_tool_choice_mapping(choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"tools": [WEATHER]}
    if choice is not None:
        fields["tool_choice"] = choice
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    sent = await sent_body(chat(user("hi"), **fields))
    assert sent["tool_choice"] == expected


async def test_tool_choice_without_tools_is_not_sent() -> None:
    sent = await sent_body(chat(user("hi"), tools=[], tool_choice="auto"))
    assert "tools" not in sent and "tool_choice" not in sent


async def test_assistant_tool_calls_and_tool_results_become_blocks() -> None:
    body = chat(
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "Rain"}]},
        user("And tomorrow?"),
        tools=[WEATHER],
    )
    sent = await sent_body(body)
    assert sent["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "Rain"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]  # fmt: skip


async def test_parameters_are_translated_and_unsupported_ones_dropped() -> None:
    body = chat(
        user("hi"),
        max_tokens=50,
        max_completion_tokens=70,
        temperature=0.5,
        top_p=0.9,
        stop="END",
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        logit_bias={"1": 2},
        response_format={"type": "json_object"},
        user="alice",
        n=1,
    )
    sent = await sent_body(body)
    assert sent == {
        "model": "claude-x",
        "max_tokens": 70,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "alice"},
    }
    again = await sent_body(chat(user("hi"), max_tokens=5, stop=["a", "b"]))
    assert (again["max_tokens"], again["stop_sequences"]) == (5, ["a", "b"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(user("x"), max_tokens=0), "max_tokens"),
        (chat(user("x"), stop=3), "stop"),
        (chat(user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}])),
         "messages[0].content[0].image_url"),
        (chat({"role": "tool", "content": "x"}), "messages[0].tool_call_id"),
        (chat({"role": "assistant", "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}),
         "messages[0].tool_calls[0].function.arguments"),
        (chat(user("x"), tools=[WEATHER], tool_choice="sometimes"), "tool_choice"),
        (chat({"role": "wizard", "content": "x"}), "messages[0].role"),
    ],
)  # fmt: skip
async def test_malformed_requests_get_a_400_in_openai_shape_and_nothing_is_sent(
    body: dict[str, Any], param: str
) -> None:
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.post(URL).respond(json=message(text("ok")))
        with pytest.raises(UpstreamStatusError) as caught:
            await make_adapter().chat(body, "claude-x")
        assert not route.called
    error = caught.value
    assert (error.status_code, error.retryable) == (400, False)
    shaped = orjson.loads(error.body)["error"]
    assert shaped["type"] == "invalid_request_error"
    assert shaped["param"] == param
    assert shaped["message"]


@pytest.mark.parametrize(
    "body",
    [
        chat(user("x"), n=2),
        chat(user([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}])),
        chat(user("x"), tools=[{"type": "web_search"}]),
        chat({"role": "function", "name": "f", "content": "x"}),
    ],
)
async def test_requests_anthropic_cannot_serve_fall_through_to_the_next_provider(
    body: dict[str, Any],
) -> None:
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.post(URL).respond(json=message(text("ok")))
        with pytest.raises(UpstreamUnsupported, match="type 'anthropic'"):
            await make_adapter().chat(body, "claude-x")
        assert not route.called


# -- answers --------------------------------------------------------------------------------


async def test_text_answer_becomes_a_chat_completion_with_usage() -> None:
    answer = message(
        text("Hello"),
        text(" there"),
        cache_creation_input_tokens=3,
        cache_read_input_tokens=5,
    )
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(json=answer)
        reply = await make_adapter().chat(chat(user("hi")), "claude-x")
    body = orjson.loads(reply.body)
    assert body["object"] == "chat.completion"
    assert body["model"] == "my-claude"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there"},
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 18, "completion_tokens": 4, "total_tokens": 22}
    assert reply.usage == Usage(18, 4, 22)


async def test_tool_use_answer_becomes_tool_calls_with_the_upstream_ids() -> None:
    answer = message(
        text("Let me look."),
        {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_B", "name": "now", "input": {}},
        stop="tool_use",
    )
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(json=answer)
        reply = await make_adapter().chat(chat(user("hi"), tools=[WEATHER]), "claude-x")
    choice = orjson.loads(reply.body)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {"id": "toolu_A", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "toolu_B", "type": "function", "function": {"name": "now", "arguments": "{}"}},
        ],
    }  # fmt: skip


async def test_tool_calls_only_answer_has_null_content() -> None:
    answer = message(
        {"type": "tool_use", "id": "toolu_A", "name": "now", "input": {}}, stop="tool_use"
    )
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(json=answer)
        reply = await make_adapter().chat(chat(user("hi")), "claude-x")
    assert orjson.loads(reply.body)["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ],
)
async def test_every_stop_reason_maps_to_a_finish_reason(stop_reason: str, finish: str) -> None:
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(json=message(text("x"), stop=stop_reason))
        reply = await make_adapter().chat(chat(user("hi")), "claude-x")
    assert orjson.loads(reply.body)["choices"][0]["finish_reason"] == finish


def anthropic_error(kind: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text}, "request_id": "req_1"}


@pytest.mark.parametrize(
    ("status", "kind", "openai_type", "retryable"),
    [
        (529, "overloaded_error", "server_error", True),
        (429, "rate_limit_error", "rate_limit_error", True),
        (500, "api_error", "server_error", True),
        (400, "invalid_request_error", "invalid_request_error", False),
        # The provider's credential or model is wrong: its fault, so tried elsewhere.
        (401, "authentication_error", "authentication_error", True),
        (403, "permission_error", "permission_error", True),
        (404, "not_found_error", "invalid_request_error", True),
        (413, "request_too_large", "invalid_request_error", False),
    ],
)
async def test_error_answers_become_openai_errors_with_the_anthropic_type_as_code(
    status: int, kind: str, openai_type: str, retryable: bool
) -> None:
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(
            status,
            json=anthropic_error(kind, "Something went wrong."),
            headers={"retry-after": "7"},
        )
        with pytest.raises(UpstreamStatusError) as caught:
            await make_adapter().chat(chat(user("hi")), "claude-x")
    error = caught.value
    assert (error.status_code, error.retryable, error.retry_after) == (status, retryable, 7.0)
    assert orjson.loads(error.body) == {
        "error": {
            "message": "Something went wrong.",
            "type": openai_type,
            "param": None,
            "code": kind,
        }
    }
    assert error.content_type == "application/json"
    assert kind in error.message and KEY not in error.message


async def test_an_error_body_that_is_not_anthropic_json_still_becomes_an_openai_error() -> None:
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(502, text="<html>Bad gateway</html>")
        with pytest.raises(UpstreamStatusError) as caught:
            await make_adapter().chat(chat(user("hi")), "claude-x")
    shaped = orjson.loads(caught.value.body)["error"]
    assert caught.value.retryable
    assert (shaped["type"], shaped["code"]) == ("server_error", None)
    assert shaped["message"] == "Provider 'claude' answered HTTP 502 without an Anthropic error."
    assert caught.value.message == "Provider 'claude' answered HTTP 502: <html>Bad gateway</html>"


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"type": "completion"}'])
async def test_a_success_answer_that_is_not_a_message_is_a_protocol_error(raw: bytes) -> None:
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(200, content=raw)
        with pytest.raises(UpstreamProtocolError):
            await make_adapter().chat(chat(user("hi")), "claude-x")


async def test_connect_errors_are_translated() -> None:
    with respx.mock(using="httpx") as mock:
        mock.post(URL).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(UpstreamConnectError, match="could not connect"):
            await make_adapter().chat(chat(user("hi")), "claude-x")


# -- streams --------------------------------------------------------------------------------


def event(data: dict[str, Any]) -> bytes:
    name = str(data["type"]).encode()
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def start(input_tokens: int = 12) -> bytes:
    msg = message(stop="")
    msg.update(stop_reason=None, usage={"input_tokens": input_tokens, "output_tokens": 1})
    return event({"type": "message_start", "message": msg})


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return event({"type": "content_block_start", "index": index, "content_block": block})


def text_delta(index: int, value: str) -> bytes:
    delta = {"type": "text_delta", "text": value}
    return event({"type": "content_block_delta", "index": index, "delta": delta})


def json_delta(index: int, value: str) -> bytes:
    delta = {"type": "input_json_delta", "partial_json": value}
    return event({"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> bytes:
    return event({"type": "content_block_stop", "index": index})


def end(stop_reason: str = "end_turn", output_tokens: int = 3) -> bytes:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    usage = {"output_tokens": output_tokens}
    return event({"type": "message_delta", "delta": delta, "usage": usage}) + event(
        {"type": "message_stop"}
    )


PING = event({"type": "ping"})
TEXT_STREAM = [
    start(),
    PING,
    block_start(0, text("")),
    text_delta(0, "Hel"),
    text_delta(0, "lo"),
    block_stop(0),
    end(),
]


class Pieces(httpx.AsyncByteStream):
    """A response body sent in pieces; optionally breaking off, optionally gated by events."""

    def __init__(self, pieces: Iterable[bytes], *, fail: bool = False) -> None:
        self.pieces = list(pieces)
        self.fail = fail
        self.closed = False
        self.gates: dict[int, asyncio.Event] = {}

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, piece in enumerate(self.pieces):
            if i in self.gates:
                await self.gates[i].wait()
            yield piece
        if self.fail:
            raise httpx.ReadError("connection reset")

    async def aclose(self) -> None:
        self.closed = True


async def run_stream(
    pieces: Pieces, *, include_usage: bool = False, body: dict[str, Any] | None = None
) -> tuple[list[bytes], ChatStream, httpx.Request]:
    with respx.mock(using="httpx") as mock:
        route = mock.post(URL).respond(
            200, stream=pieces, headers={"content-type": "text/event-stream"}
        )
        stream = await make_adapter().chat_stream(
            body or chat(user("hi")), "claude-x", include_usage=include_usage
        )
        blocks = [block async for block in stream]
    return blocks, stream, route.calls.last.request


async def test_text_stream_becomes_openai_chunks_with_usage() -> None:
    blocks, stream, request = await run_stream(Pieces(TEXT_STREAM), include_usage=True)
    assert orjson.loads(request.content)["stream"] is True
    chunks = sse_chunks(b"".join(blocks), done=False)
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    assert {c["model"] for c in chunks} == {"my-claude"}
    assert len({c["id"] for c in chunks}) == 1
    assert stream.usage == Usage(12, 3, 15)


async def test_usage_is_kept_but_not_sent_unless_asked() -> None:
    blocks, stream, _ = await run_stream(Pieces(TEXT_STREAM), include_usage=False)
    assert all(c["choices"] for c in sse_chunks(b"".join(blocks), done=False))
    assert b'"usage"' not in b"".join(blocks)
    assert stream.usage == Usage(12, 3, 15)


async def test_tool_use_stream_becomes_tool_call_deltas_with_index() -> None:
    pieces = [
        start(),
        block_start(0, text("")),
        text_delta(0, "Checking."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {}}),
        json_delta(1, ""),
        json_delta(1, '{"city": '),
        json_delta(1, '"Paris"}'),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "toolu_B", "name": "now", "input": {}}),
        json_delta(2, "{}"),
        block_stop(2),
        end("tool_use", 20),
    ]
    blocks, _, _ = await run_stream(Pieces(pieces))
    deltas = [c["choices"][0]["delta"] for c in sse_chunks(b"".join(blocks), done=False)]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Checking."},
        {"tool_calls": [{"index": 0, "id": "toolu_A", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {"tool_calls": [{"index": 1, "id": "toolu_B", "type": "function",
                         "function": {"name": "now", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]  # fmt: skip
    assert (
        sse_chunks(b"".join(blocks), done=False)[-1]["choices"][0]["finish_reason"] == "tool_calls"
    )


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter")],
)
async def test_stream_finish_reasons(stop_reason: str, finish: str) -> None:
    pieces = [
        start(),
        block_start(0, text("")),
        text_delta(0, "x"),
        block_stop(0),
        end(stop_reason),
    ]
    blocks, _, _ = await run_stream(Pieces(pieces))
    assert sse_chunks(b"".join(blocks), done=False)[-1]["choices"][0]["finish_reason"] == finish


async def test_stream_events_are_forwarded_as_they_arrive() -> None:
    pieces = Pieces(TEXT_STREAM)
    gate = pieces.gates[4] = asyncio.Event()  # hold back everything after "Hel"
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(200, stream=pieces)
        stream = await make_adapter().chat_stream(chat(user("hi")), "claude-x", include_usage=False)
        events = aiter(stream)
        first = await asyncio.wait_for(anext(events), 5)
        assert b'"Hel"' in first and b'"role":"assistant"' in first
        gate.set()
        rest = [block async for block in events]
    assert b'"lo"' in b"".join(rest)


@pytest.mark.parametrize("fail", [False, True])
async def test_a_stream_that_ends_early_or_breaks_is_an_error_not_a_clean_end(fail: bool) -> None:
    pieces = Pieces(TEXT_STREAM[:4], fail=fail)
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(200, stream=pieces)
        stream = await make_adapter().chat_stream(chat(user("hi")), "claude-x", include_usage=False)
        seen: list[bytes] = []
        with pytest.raises(UpstreamProtocolError, match="message_stop" if not fail else "broken"):
            async for block in stream:
                seen.append(block)
    assert b'"Hel"' in b"".join(seen)
    assert pieces.closed


async def test_an_error_event_before_any_content_fails_before_the_first_byte() -> None:
    overloaded = event(anthropic_error("overloaded_error", "Overloaded"))
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(200, stream=Pieces([start(), PING, overloaded]))
        stream = await make_adapter().chat_stream(chat(user("hi")), "claude-x", include_usage=False)
        with pytest.raises(UpstreamStatusError) as caught:
            await anext(aiter(stream))
    assert (caught.value.status_code, caught.value.retryable) == (529, True)
    assert orjson.loads(caught.value.body)["error"]["code"] == "overloaded_error"


async def test_an_error_event_mid_stream_breaks_the_stream() -> None:
    failure = event(anthropic_error("api_error", "Internal"))
    pieces = Pieces([*TEXT_STREAM[:4], failure])
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(200, stream=pieces)
        stream = await make_adapter().chat_stream(chat(user("hi")), "claude-x", include_usage=False)
        seen: list[bytes] = []
        with pytest.raises(UpstreamStatusError, match="api_error"):
            async for block in stream:
                seen.append(block)
    assert b'"Hel"' in b"".join(seen)
    assert pieces.closed


async def test_a_stream_event_that_is_not_json_is_a_protocol_error() -> None:
    pieces = Pieces([start(), b"event: content_block_delta\ndata: {oops\n\n"])
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(200, stream=pieces)
        stream = await make_adapter().chat_stream(chat(user("hi")), "claude-x", include_usage=False)
        with pytest.raises(UpstreamProtocolError, match="not a JSON object"):
            await anext(aiter(stream))


async def test_a_refused_stream_raises_before_returning_and_closes_the_response() -> None:
    pieces = Pieces([orjson.dumps(anthropic_error("overloaded_error", "Overloaded"))])
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(529, stream=pieces)
        with pytest.raises(UpstreamStatusError) as caught:
            await make_adapter().chat_stream(chat(user("hi")), "claude-x", include_usage=False)
    assert (caught.value.status_code, caught.value.retryable) == (529, True)
    assert pieces.closed


async def test_closing_a_stream_early_closes_the_upstream_response() -> None:
    pieces = Pieces(TEXT_STREAM)
    pieces.gates[5] = asyncio.Event()  # never set: the upstream stalls after "lo"
    with respx.mock(using="httpx") as mock:
        mock.post(URL).respond(200, stream=pieces)
        stream = await make_adapter().chat_stream(chat(user("hi")), "claude-x", include_usage=False)
        await anext(aiter(stream))
        await stream.aclose()
    assert pieces.closed


# -- model list, embeddings, config ---------------------------------------------------------


def model_page(ids: list[str], has_more: bool) -> dict[str, Any]:
    data = [{"type": "model", "id": i, "display_name": i, "created_at": "2025-01-01T00:00:00Z"}
            for i in ids]  # fmt: skip
    return {"data": data, "has_more": has_more, "first_id": ids[0], "last_id": ids[-1]}


async def test_list_models_follows_pages() -> None:
    with respx.mock(using="httpx") as mock:
        route = mock.get("https://api.anthropic.com/v1/models").mock(
            side_effect=[
                httpx.Response(200, json=model_page(["claude-a", "claude-b"], True)),
                httpx.Response(200, json=model_page(["claude-c"], False)),
            ]
        )
        models = await make_adapter().list_models()
    assert models == ["claude-a", "claude-b", "claude-c"]
    first, second = (call.request for call in route.calls)
    assert first.url.params["limit"] == "1000" and "after_id" not in first.url.params
    assert second.url.params["after_id"] == "claude-b"
    assert first.headers["x-api-key"] == KEY and first.headers["anthropic-version"]


async def test_list_models_refuses_an_unexpected_body() -> None:
    with respx.mock(using="httpx") as mock:
        mock.get("https://api.anthropic.com/v1/models").respond(json={"models": []})
        with pytest.raises(UpstreamProtocolError, match="model list"):
            await make_adapter().list_models()


async def test_embeddings_are_not_served() -> None:
    with pytest.raises(UpstreamUnsupported, match="embeddings"):
        await make_adapter().embeddings({"model": "m", "input": "x"}, "claude-x")


def test_registered_and_config_is_validated() -> None:
    assert get_adapter_class("anthropic") is AnthropicAdapter
    keys = AnthropicAdapter.config_keys
    assert keys["apiKey"].sensitive and keys["headers"].sensitive
    assert AnthropicAdapter.validate_config({"apiKey": "k"}) == []
    assert AnthropicAdapter.validate_config({}) == []  # baseURL has a default
    problems = AnthropicAdapter.validate_config(
        {
            "baseURL": "ftp://x",
            "defaultMaxTokens": 0,
            "timeout": -1,
            "anthropicVersion": " ",
            "headers": {"a": 1},
            "model": "x",
        }
    )
    joined = " ".join(problems)
    for fragment in ("baseURL", "defaultMaxTokens", "timeout", "anthropicVersion", "headers",
                     "no config key 'model'"):  # fmt: skip
        assert fragment in joined, fragment
    assert "must be an integer" in " ".join(AnthropicAdapter.validate_config({"timeout": "5"}))


async def test_input_tokens_in_message_delta_replace_those_of_message_start() -> None:
    # Newer API versions repeat the (final) usage counts in message_delta.
    usage = {"input_tokens": 15, "cache_read_input_tokens": 5, "output_tokens": 9}
    final = event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage})
    pieces = [start(12), block_start(0, text("")), text_delta(0, "x"), final]
    _, stream, _ = await run_stream(Pieces([*pieces, event({"type": "message_stop"})]))
    assert stream.usage == Usage(20, 9, 29)


# -- golden: what the fake Anthropic upstream receives, over a socket ----------------------------

FAKE_KEY = "sk-ant-mock-key-9876"
BE_BRIEF = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
CITY_DAYS = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    },
}


def on_fake(**options: Any) -> Any:
    return adapter_on_fake(
        "anthropic",
        lambda url: {"baseURL": url, "apiKey": FAKE_KEY},
        MockOptions(api_key=FAKE_KEY, **options),
    )


async def test_the_fake_receives_the_translated_request_and_headers() -> None:
    async with on_fake() as (adapter, upstream):
        reply = await adapter.chat({"model": "claude-test", "messages": BE_BRIEF}, "mock-claude")
        stream = await adapter.chat_stream(
            {"model": "claude-test", "messages": BE_BRIEF, "max_tokens": 4},
            "mock-claude",
            include_usage=True,
        )
        chunks = sse_chunks(b"".join([block async for block in stream]), done=False)

    assert reply.usage == Usage(4, 5, 9)
    plain, streamed = upstream.requests
    assert plain.path == "/v1/messages"
    assert plain.headers["x-api-key"] == FAKE_KEY
    assert plain.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in plain.headers
    assert plain.json == {
        "model": "mock-claude",
        "max_tokens": 4096,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    assert (streamed.json["max_tokens"], streamed.json["stream"]) == (4, True)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "mock reply alpha bravo"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"


async def test_a_tool_call_and_its_result_on_the_wire() -> None:
    ask = [{"role": "user", "content": "Use get_weather for Paris"}]
    async with on_fake(chunks=2) as (adapter, upstream):
        reply = await adapter.chat({"model": "c", "messages": ask, "tools": [CITY_DAYS]}, "m")
        message = orjson.loads(reply.body)["choices"][0]["message"]
        call = message["tool_calls"][0]
        stream = await adapter.chat_stream(
            {"model": "c", "messages": ask, "tools": [CITY_DAYS], "tool_choice": "required"},
            "m",
            include_usage=False,
        )
        chunks = sse_chunks(b"".join([block async for block in stream]), done=False)
        follow_up = [
            *ask,
            {"role": "assistant", "content": message["content"], "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 C"},
        ]
        await adapter.chat({"model": "c", "messages": follow_up, "tools": [CITY_DAYS]}, "m")

    assert message["content"] == "mock reply"
    assert call["id"].startswith("toolu_mock_")
    assert orjson.loads(call["function"]["arguments"]) == {"city": "mock", "days": 1}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [tc for d in deltas for tc in d.get("tool_calls") or []]
    arguments = "".join(tc["function"].get("arguments") or "" for tc in calls)
    assert calls[0]["id"].startswith("toolu_mock_")
    assert orjson.loads(arguments) == {"city": "mock", "days": 1}
    sent = upstream.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": call["id"], "content": "Sunny, 21 C"}
    ]


async def test_a_malformed_request_never_leaves_the_adapter() -> None:
    async with on_fake() as (adapter, upstream):
        with pytest.raises(UpstreamStatusError) as caught:
            await adapter.chat({"model": "c", "messages": [{"role": "tool", "content": "x"}]}, "m")
    assert caught.value.status_code == 400
    assert orjson.loads(caught.value.body)["error"]["param"] == "messages[0].tool_call_id"
    assert upstream.requests == []
