"""The shared translation helpers: stream parsing and OpenAI chunk/completion building."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import httpx
import orjson
import pytest

from providers.anthropic.adapter import AnthropicAdapter
from providers.base import AdapterOptions, Usage
from providers.gemini.adapter import GeminiAdapter
from providers.ollama.adapter import OllamaAdapter
from providers.translate import (
    ChunkWriter,
    TranslationError,
    completion_body,
    content_text,
    ndjson_lines,
    parse_data_url,
    sse_events,
    translating,
)
from router.errors import UpstreamProtocolError, UpstreamStatusError, UpstreamUnsupported


class Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: Iterable[bytes], fail: bool = False) -> None:
        self.pieces = list(pieces)
        self.fail = fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        if self.fail:
            raise httpx.RemoteProtocolError("peer closed connection")


def streamed(*pieces: bytes, fail: bool = False) -> httpx.Response:
    return httpx.Response(200, stream=Pieces(pieces, fail))


async def test_sse_events_split_anywhere_crlf_multiline_and_comments() -> None:
    wire = (
        b': ping\r\nevent: a\r\ndata: {"x":\r\ndata: 1}\r\n\r\ndata: plain\n\nevent: b\nid: 7\n\n'
    )
    for cut in range(1, len(wire)):
        response = streamed(wire[:cut], wire[cut:])
        events = [event async for event in sse_events("p", response)]
        assert events == [("a", b'{"x":\n1}'), ("", b"plain")], cut


async def test_sse_events_translate_a_broken_connection() -> None:
    with pytest.raises(UpstreamProtocolError, match="broken answer"):
        async for _ in sse_events("p", streamed(b"data: 1\n\n", fail=True)):
            pass


async def test_ndjson_lines_split_anywhere_and_a_last_line_without_newline() -> None:
    wire = b'{"a": 1}\n\n{"b": [2]}\n{"c": 3}'
    for cut in range(1, len(wire)):
        values = [v async for v in ndjson_lines("p", streamed(wire[:cut], wire[cut:]))]
        assert values == [{"a": 1}, {"b": [2]}, {"c": 3}], cut


async def test_ndjson_lines_refuse_a_line_that_is_not_json() -> None:
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        async for _ in ndjson_lines("p", streamed(b'{"a": 1}\nnope\n')):
            pass


def test_chunk_writer_events_are_openai_chunks() -> None:
    writer = ChunkWriter("my-model", id="chatcmpl-1", created=5)
    events = [
        writer.role(),
        writer.content("Hi"),
        writer.tool_call_start(0, "call_1", "f", ""),
        writer.tool_call_arguments(0, '{"a":'),
        writer.finish("tool_calls"),
        writer.usage(Usage(3, 4, None)),
    ]
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    chunks = [orjson.loads(e[6:]) for e in events]
    assert {c["id"] for c in chunks} == {"chatcmpl-1"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    call = chunks[2]["choices"][0]["delta"]["tool_calls"][0]
    assert call == {"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "f", "arguments": ""}}  # fmt: skip
    assert chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"] == {"arguments": '{"a":'}
    assert chunks[4]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert chunks[5]["choices"] == []
    assert chunks[5]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_completion_body_shape() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    body = orjson.loads(
        completion_body("m", content=None, finish_reason="tool_calls", usage=None, tool_calls=calls)
    )
    assert body["object"] == "chat.completion"
    assert body["model"] == "m"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": calls},
         "finish_reason": "tool_calls"}
    ]  # fmt: skip
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("data:image/png;base64,aGk=", ("image/png", "aGk=")),
        ("data:image/png;base64,not base64!", None),
        ("data:text/plain,hi", None),
        ("https://example.com/cat.png", None),
    ],
)
def test_parse_data_url(url: str, expected: tuple[str, str] | None) -> None:
    assert parse_data_url(url) == expected


def test_content_text() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]
    assert content_text(parts) == "ab"
    assert content_text("x") == "x"
    assert content_text(None) == ""


# -- one convention for a request that cannot be translated -------------------------------------

ADAPTERS = [
    (AnthropicAdapter, {"apiKey": "sk-ant-test-0000", "baseURL": "http://127.0.0.1:9"}),
    (GeminiAdapter, {"apiKey": "gm-test-0000", "baseURL": "http://127.0.0.1:9"}),
    (OllamaAdapter, {"baseURL": "http://127.0.0.1:9"}),
]


@pytest.mark.parametrize(("cls", "config"), ADAPTERS)
async def test_a_malformed_request_is_a_400_in_openais_shape_for_every_adapter(
    cls: type[AnthropicAdapter | GeminiAdapter | OllamaAdapter], config: dict[str, str]
) -> None:
    adapter = cls("p1", config, AdapterOptions())
    body = {"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}
    try:
        with pytest.raises(UpstreamStatusError) as caught:
            await adapter.chat(body, "m")
    finally:
        await adapter.aclose()
    assert caught.value.status_code == 400
    assert str(caught.value).startswith(f"Provider 'p1' (type {cls.type!r}) cannot take this")
    error = orjson.loads(caught.value.body)["error"]
    assert error["type"] == "invalid_request_error"
    assert "wizard" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_translating_turns_the_error_into_the_routers_for_the_adapter() -> None:
    adapter = OllamaAdapter("lm", {"baseURL": "http://127.0.0.1:9"}, AdapterOptions())
    unsupported = r"Provider 'lm' \(type 'ollama'\) cannot take this request: audio parts"
    with pytest.raises(UpstreamUnsupported, match=unsupported), translating(adapter):
        raise TranslationError("audio parts", unsupported=True)
    with pytest.raises(UpstreamStatusError) as caught, translating(adapter):
        raise TranslationError("Field 'stop' must be a string.", "stop")
    assert orjson.loads(caught.value.body)["error"]["param"] == "stop"
    with translating(adapter):
        pass  # nothing raised inside: nothing raised outside
