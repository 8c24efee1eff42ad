"""The gemini adapter against respx: the exact Gemini JSON sent, and answers and streams back."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from providers.base import AdapterOptions
from providers.gemini.adapter import GeminiAdapter
from providers.gemini.convert import SKIP_SIGNATURE, gemini_schema
from providers.registry import get_adapter_class
from router.errors import UpstreamProtocolError, UpstreamStatusError
from router.mock.answers import embed
from router.mock.upstream import MockOptions
from tests.helpers import adapter_on_fake, sse_chunks

BASE = "https://gemini.test/v1beta"
KEY = "AIza-test-secret-key"
GENERATE = f"{BASE}/models/gemini-x:generateContent"
STREAM = f"{BASE}/models/gemini-x:streamGenerateContent"
PNG = base64.b64encode(b"\x89PNG fake").decode()


@pytest.fixture
def adapter() -> GeminiAdapter:
    return GeminiAdapter("gem", {"baseURL": BASE, "apiKey": KEY}, AdapterOptions())


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False, using="httpx") as router:
        yield router


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "client-name", "messages": list(messages), **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def answer(*parts: dict[str, Any], finish: str = "STOP", **extra: Any) -> dict[str, Any]:
    candidate = {"content": {"role": "model", "parts": list(parts)}, "finishReason": finish}
    usage = {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10}
    return {"candidates": [candidate], "usageMetadata": usage, "responseId": "resp1", **extra}


async def sent(adapter: GeminiAdapter, mock: respx.MockRouter, body: dict[str, Any]) -> Any:
    """The JSON body the adapter posts to generateContent for ``body``."""
    route = mock.post(GENERATE).mock(return_value=httpx.Response(200, json=answer({"text": "x"})))
    await adapter.chat(body, "gemini-x")
    return orjson.loads(route.calls.last.request.content)


# -- request translation ------------------------------------------------------------------


async def test_text_system_developer_merge_and_parameters(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    body = chat(
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        user("Hello"),
        user([{"type": "text", "text": "again"}]),
        {"role": "assistant", "content": "Bonjour"},
        user("Bye"),
        max_tokens=50,
        max_completion_tokens=40,
        temperature=0.2,
        top_p=0.9,
        stop="END",
        seed=7,
        presence_penalty=1.0,
        logprobs=True,
        user="someone",
    )
    assert await sent(adapter, mock, body) == {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use French."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hello"}, {"text": "again"}]},
            {"role": "model", "parts": [{"text": "Bonjour"}]},
            {"role": "user", "parts": [{"text": "Bye"}]},
        ],
        "generationConfig": {
            "maxOutputTokens": 40,
            "temperature": 0.2,
            "topP": 0.9,
            "seed": 7,
            "stopSequences": ["END"],
        },
    }


async def test_key_goes_in_the_header_never_in_the_url(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    route = mock.post(GENERATE).mock(return_value=httpx.Response(200, json=answer({"text": "x"})))
    await adapter.chat(chat(user("hi")), "gemini-x")
    request = route.calls.last.request
    assert request.headers["x-goog-api-key"] == KEY
    assert KEY not in str(request.url) and "key=" not in str(request.url)
    assert "authorization" not in request.headers


async def test_images_audio_and_files_become_inline_or_file_data(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.org/cat.jpg", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.org/image?id=3"}},
        {"type": "input_audio", "input_audio": {"data": PNG, "format": "wav"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PNG}"}},
    ]
    sent_body = await sent(adapter, mock, chat(user(content)))
    assert sent_body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}},
                {"fileData": {"fileUri": "https://example.org/cat.jpg", "mimeType": "image/jpeg"}},
                {"fileData": {"fileUri": "https://example.org/image?id=3"}},
                {"inlineData": {"mimeType": "audio/wav", "data": PNG}},
                {"inlineData": {"mimeType": "application/pdf", "data": PNG}},
            ],
        }
    ]


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "city": {"type": "string", "minLength": 1, "default": "Paris"},
                "unit": {"enum": ["C", "F"], "type": "string"},
                "days": {"type": ["integer", "null"], "exclusiveMinimum": 0, "format": "int32"},
            },
            "required": ["city", "ghost"],
        },
    },
}


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (None, None),
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
async def test_tools_and_tool_choice(
    adapter: GeminiAdapter, mock: respx.MockRouter, choice: Any, config: Any
) -> None:
    body = chat(
        user("Weather?"), tools=[WEATHER, {"type": "function", "function": {"name": "now"}}]
    )
    if choice is not None:
        body["tool_choice"] = choice
    sent_body = await sent(adapter, mock, body)
    assert sent_body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {
                            "city": {"type": "STRING", "minLength": 1},
                            "unit": {"type": "STRING", "enum": ["C", "F"]},
                            "days": {"type": "INTEGER", "nullable": True, "format": "int32"},
                        },
                        "required": ["city"],
                    },
                },
                {"name": "now"},
            ]
        }
    ]
    if config is None:
        assert "toolConfig" not in sent_body
    else:
        assert sent_body["toolConfig"] == {"functionCallingConfig": config}


def test_schema_refs_one_of_const_and_unknown_formats() -> None:
    schema = {
        "type": "object",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}},
        "properties": {
            "at": {"$ref": "#/$defs/Point", "description": "where"},
            "kind": {"const": "fixed"},
            "either": {"oneOf": [{"type": "string", "format": "uri"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "self": {"$ref": "#/$defs/Missing"},
        },
    }
    assert gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "at": {
                "type": "OBJECT",
                "properties": {"x": {"type": "NUMBER"}},
                "description": "where",
            },
            "kind": {"enum": ["fixed"]},
            "either": {"nullable": True, "anyOf": [{"type": "STRING"}]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
            "self": {"description": "(schema #/$defs/Missing not expanded)"},
        },
    }


async def test_tool_calls_and_results_become_function_call_and_response(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    calls = [
        {"id": "call_a", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "now", "arguments": ""}},
    ]  # fmt: skip
    body = chat(
        user("Weather and time?"),
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
        user("Thanks"),
        tools=[WEATHER],
    )
    assert (await sent(adapter, mock, body))["contents"] == [
        {"role": "user", "parts": [{"text": "Weather and time?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": SKIP_SIGNATURE,
                },
                {"functionCall": {"name": "now", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "now", "response": {"output": "12:00"}}},
                {"text": "Thanks"},
            ],
        },
    ]


async def test_signatures_and_gemini_ids_of_returned_calls_go_back_with_them(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    parts: list[dict[str, Any]] = [
        {"functionCall": {"name": "now", "args": {}, "id": "g-1"}, "thoughtSignature": "c2ln"},
        {"functionCall": {"name": "now", "args": {"tz": "UTC"}}},
    ]
    mock.post(GENERATE).mock(return_value=httpx.Response(200, json=answer(*parts)))
    reply = orjson.loads((await adapter.chat(chat(user("time?")), "gemini-x")).body)
    tool_calls = reply["choices"][0]["message"]["tool_calls"]
    assert tool_calls[0]["id"] == "g-1"

    body = chat(
        user("time?"),
        {"role": "assistant", "content": None, "tool_calls": tool_calls},
        {"role": "tool", "tool_call_id": "g-1", "content": "noon"},
        {"role": "tool", "tool_call_id": tool_calls[1]["id"], "content": "11:00"},
    )
    contents = (await sent(adapter, mock, body))["contents"]
    assert contents[1]["parts"] == [
        {"functionCall": {"name": "now", "args": {}, "id": "g-1"}, "thoughtSignature": "c2ln"},
        {"functionCall": {"name": "now", "args": {"tz": "UTC"}}},
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "now", "response": {"output": "noon"}, "id": "g-1"}},
        {"functionResponse": {"name": "now", "response": {"output": "11:00"}}},
    ]


BAD_ARGUMENTS = {
    "role": "assistant",
    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}],
}


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (chat({"role": "tool", "tool_call_id": "nope", "content": "x"}), "messages[0]", "nope"),
        (chat(user("hi"), n=2), "n", "one choice"),
        (chat(user([{"type": "video", "video": {}}])), "messages[0]", "'video'"),
        (chat({"role": "system", "content": "only rules"}), "messages", "at least one"),
        (chat(BAD_ARGUMENTS), "messages[0].tool_calls[0]", "JSON object"),
        (chat(user("hi"), tools=[{"type": "web_search"}]), "tools", "type 'function'"),
        (chat(user([{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}])), None, "URL"),
    ],
)
async def test_requests_gemini_cannot_take_are_a_400_without_calling_it(
    adapter: GeminiAdapter, mock: respx.MockRouter, body: Any, param: str | None, words: str
) -> None:
    route = mock.post(GENERATE)
    with pytest.raises(UpstreamStatusError) as caught:
        await adapter.chat(body, "gemini-x")
    error = orjson.loads(caught.value.body)["error"]
    assert caught.value.status_code == 400 and not caught.value.retryable
    assert error["type"] == "invalid_request_error" and words in error["message"]
    if param is not None:
        assert error["param"] == param
    assert not route.called


# -- answers ------------------------------------------------------------------------------


async def test_text_answer_becomes_a_chat_completion(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    body = answer({"text": "thinking...", "thought": True}, {"text": "Hello "}, {"text": "there"})
    body["usageMetadata"]["thoughtsTokenCount"] = 4
    mock.post(GENERATE).mock(return_value=httpx.Response(200, json=body))
    reply = await adapter.chat(chat(user("hi")), "gemini-x")
    data = orjson.loads(reply.body)
    assert data["id"] == "chatcmpl-resp1" and data["object"] == "chat.completion"
    assert data["model"] == "client-name"
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there"},
            "finish_reason": "stop",
        }
    ]
    assert data["usage"] == {"prompt_tokens": 7, "completion_tokens": 7, "total_tokens": 10}
    assert reply.usage is not None and reply.usage.completion_tokens == 7


async def test_function_call_answer_has_stable_ids_and_json_arguments(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    parts: list[dict[str, Any]] = [
        {"text": "Let me look."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
    ]
    mock.post(GENERATE).mock(return_value=httpx.Response(200, json=answer(*parts)))
    first = orjson.loads((await adapter.chat(chat(user("w")), "gemini-x")).body)
    again = orjson.loads((await adapter.chat(chat(user("w")), "gemini-x")).body)
    choice = first["choices"][0]
    calls = choice["message"]["tool_calls"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "get_weather", "arguments": '{"city":"Rome"}'},
    ]
    assert calls[0]["id"] != calls[1]["id"] and calls[0]["id"].startswith("call_")
    assert [c["id"] for c in again["choices"][0]["message"]["tool_calls"]] == [
        c["id"] for c in calls
    ]


@pytest.mark.parametrize(
    ("gemini", "openai"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ],
)
async def test_every_finish_reason(
    adapter: GeminiAdapter, mock: respx.MockRouter, gemini: str, openai: str
) -> None:
    body = answer({"text": "x"}, finish=gemini)
    mock.post(GENERATE).mock(return_value=httpx.Response(200, json=body))
    data = orjson.loads((await adapter.chat(chat(user("hi")), "gemini-x")).body)
    assert data["choices"][0]["finish_reason"] == openai


async def test_a_blocked_prompt_is_a_content_filter_answer(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    body = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    mock.post(GENERATE).mock(return_value=httpx.Response(200, json=body))
    reply = await adapter.chat(chat(user("bad")), "gemini-x")
    data = orjson.loads(reply.body)
    assert data["choices"][0]["finish_reason"] == "content_filter"
    assert data["choices"][0]["message"]["content"] == ""
    assert reply.usage is not None and reply.usage.prompt_tokens == 4


async def test_an_answer_without_candidates_or_block_is_a_protocol_error(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    mock.post(GENERATE).mock(return_value=httpx.Response(200, json={"candidates": []}))
    with pytest.raises(UpstreamProtocolError, match="without a candidate"):
        await adapter.chat(chat(user("hi")), "gemini-x")


def gemini_error(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **extra}}


@pytest.mark.parametrize(
    ("http", "body", "status", "retryable", "kind"),
    [
        (429, gemini_error(429, "RESOURCE_EXHAUSTED", "Quota"), 429, True, "rate_limit_error"),
        (503, gemini_error(503, "UNAVAILABLE", "Overloaded"), 503, True, "server_error"),
        (500, gemini_error(500, "INTERNAL", "Oops"), 500, True, "server_error"),
        (400, gemini_error(400, "INVALID_ARGUMENT", "Bad"), 400, False, "invalid_request_error"),
        (403, gemini_error(403, "PERMISSION_DENIED", "No"), 403, True, "permission_error"),
        (404, gemini_error(404, "NOT_FOUND", "No model"), 404, True, "invalid_request_error"),
        # A proxy in front of Gemini may say 400 where Gemini means "overloaded".
        (400, gemini_error(400, "RESOURCE_EXHAUSTED", "Quota"), 429, True, "rate_limit_error"),
    ],
)
async def test_gemini_errors_become_openai_errors(
    adapter: GeminiAdapter,
    mock: respx.MockRouter,
    http: int,
    body: Any,
    status: int,
    retryable: bool,
    kind: str,
) -> None:
    mock.post(GENERATE).mock(return_value=httpx.Response(http, json=body))
    with pytest.raises(UpstreamStatusError) as caught:
        await adapter.chat(chat(user("hi")), "gemini-x")
    exc = caught.value
    assert (exc.status_code, exc.retryable) == (status, retryable)
    assert orjson.loads(exc.body) == {
        "error": {
            "message": body["error"]["message"],
            "type": kind,
            "param": None,
            "code": body["error"]["status"],
        }
    }
    assert exc.content_type == "application/json"


async def test_retry_delay_key_scrubbing_and_non_json_errors(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "27s"}
    body = gemini_error(429, "RESOURCE_EXHAUSTED", f"Quota for key {KEY}", details=[retry])
    mock.post(GENERATE).mock(return_value=httpx.Response(429, json=body))
    with pytest.raises(UpstreamStatusError) as caught:
        await adapter.chat(chat(user("hi")), "gemini-x")
    assert caught.value.retry_after == 27.0
    assert KEY not in caught.value.message and KEY.encode() not in caught.value.body

    mock.post(GENERATE).mock(return_value=httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(UpstreamStatusError) as caught:
        await adapter.chat(chat(user("hi")), "gemini-x")
    error = orjson.loads(caught.value.body)["error"]
    assert caught.value.retryable and error["message"] == "<html>Bad Gateway</html>"
    assert error["code"] is None and error["type"] == "server_error"


# -- streams ------------------------------------------------------------------------------


class Pieces(httpx.AsyncByteStream):
    """A response body sent piece by piece; ``gate`` holds the rest until the test opens it."""

    def __init__(self, *pieces: bytes, fail: bool = False, gate: asyncio.Event | None = None):
        self.pieces, self.fail, self.gate = pieces, fail, gate

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, piece in enumerate(self.pieces):
            if i == 1 and self.gate is not None:
                await self.gate.wait()
            yield piece
        if self.fail:
            raise httpx.RemoteProtocolError("peer closed connection")


def sse(*chunks: dict[str, Any]) -> list[bytes]:
    return [b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks]


def piece(*parts: dict[str, Any], finish: str | None = None, done: int = 1) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    usage = {"promptTokenCount": 5, "candidatesTokenCount": done, "totalTokenCount": 5 + done}
    return {"candidates": [candidate], "usageMetadata": usage, "responseId": "resp9"}


async def collect(stream: Any) -> list[bytes]:
    return [block async for block in stream]


@pytest.mark.parametrize("include_usage", [True, False])
async def test_text_stream_role_deltas_finish_and_usage(
    adapter: GeminiAdapter, mock: respx.MockRouter, include_usage: bool
) -> None:
    wire = sse(piece({"text": "Hel"}), piece({"text": "lo"}, finish="STOP", done=2))
    route = mock.post(STREAM).mock(return_value=httpx.Response(200, stream=Pieces(*wire)))
    body = chat(user("hi"), stream=True)
    stream = await adapter.chat_stream(body, "gemini-x", include_usage=include_usage)
    chunks = sse_chunks(b"".join(await collect(stream)), done=False)

    assert route.calls.last.request.url.params["alt"] == "sse"
    assert "key" not in route.calls.last.request.url.params
    assert {c["id"] for c in chunks} == {"chatcmpl-resp9"}
    assert {c["model"] for c in chunks} == {"client-name"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage
    else:
        assert all("usage" not in c for c in chunks)
    assert stream.usage is not None and stream.usage.completion_tokens == 2


async def test_tool_call_stream_has_indexed_deltas_with_the_ids_of_the_json_answer(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    calls = [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "now", "args": {}}},
    ]
    wire = sse(piece({"text": "Checking."}), piece(*calls, finish="STOP", done=3))
    mock.post(STREAM).mock(return_value=httpx.Response(200, stream=Pieces(*wire)))
    stream = await adapter.chat_stream(chat(user("w")), "gemini-x", include_usage=False)
    chunks = sse_chunks(b"".join(await collect(stream)), done=False)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    streamed = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert [(t["index"], t["function"]["name"], t["function"]["arguments"]) for t in streamed] == [
        (0, "get_weather", '{"city":"Paris"}'),
        (1, "now", "{}"),
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    whole = answer(*calls, responseId="resp9")
    mock.post(GENERATE).mock(return_value=httpx.Response(200, json=whole))
    data = orjson.loads((await adapter.chat(chat(user("w")), "gemini-x")).body)
    assert [t["id"] for t in data["choices"][0]["message"]["tool_calls"]] == [
        t["id"] for t in streamed
    ]


async def test_stream_blocks_are_forwarded_before_the_upstream_ends(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    gate = asyncio.Event()
    wire = sse(piece({"text": "first"}), piece({"text": "last"}, finish="STOP"))
    mock.post(STREAM).mock(return_value=httpx.Response(200, stream=Pieces(*wire, gate=gate)))
    stream = await adapter.chat_stream(chat(user("hi")), "gemini-x", include_usage=False)
    first = await asyncio.wait_for(anext(aiter(stream)), timeout=5)
    assert b'"content":"first"' in first  # while the upstream still holds the rest
    gate.set()
    rest = sse_chunks(b"".join(await collect(stream)), done=False)
    assert rest[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("wire", "fail", "words"),
    [
        (sse(piece({"text": "cut"})), False, "without a finishReason"),
        (sse(piece({"text": "cut"})), True, "broken answer"),
        ([], False, "without a finishReason"),
        (
            [*sse(piece({"text": "a"})), *sse({"error": {"code": 500, "message": "boom"}})],
            False,
            "mid-stream: boom",
        ),
        ([b"data: {not json\r\n\r\n"], False, "not JSON"),
    ],
)
async def test_broken_streams_raise_never_end_cleanly(
    adapter: GeminiAdapter, mock: respx.MockRouter, wire: list[bytes], fail: bool, words: str
) -> None:
    mock.post(STREAM).mock(return_value=httpx.Response(200, stream=Pieces(*wire, fail=fail)))
    stream = await adapter.chat_stream(chat(user("hi")), "gemini-x", include_usage=True)
    with pytest.raises(UpstreamProtocolError, match=words):
        await collect(stream)


async def test_a_blocked_prompt_ends_a_stream_with_content_filter(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    wire = sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    mock.post(STREAM).mock(return_value=httpx.Response(200, stream=Pieces(*wire)))
    stream = await adapter.chat_stream(chat(user("x")), "gemini-x", include_usage=False)
    chunks = sse_chunks(b"".join(await collect(stream)), done=False)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


async def test_a_refused_stream_raises_before_returning(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    body = gemini_error(429, "RESOURCE_EXHAUSTED", "Slow down")
    mock.post(STREAM).mock(return_value=httpx.Response(429, json=body))
    with pytest.raises(UpstreamStatusError) as caught:
        await adapter.chat_stream(chat(user("hi")), "gemini-x", include_usage=False)
    assert caught.value.retryable and caught.value.status_code == 429


# -- embeddings, models, config -----------------------------------------------------------


async def test_one_input_uses_embed_content(adapter: GeminiAdapter, mock: respx.MockRouter) -> None:
    route = mock.post(f"{BASE}/models/emb:embedContent").mock(
        return_value=httpx.Response(200, json={"embedding": {"values": [0.5, -1.0]}})
    )
    body = {"model": "my-emb", "input": "hello", "dimensions": 2}
    reply = await adapter.embeddings(body, "emb")
    assert orjson.loads(route.calls.last.request.content) == {
        "content": {"parts": [{"text": "hello"}]},
        "outputDimensionality": 2,
    }
    assert orjson.loads(reply.body) == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}],
        "model": "my-emb",
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
    assert reply.usage is None  # Gemini gives no count: the history keeps "unknown"


async def test_many_inputs_use_batches_of_a_hundred_and_base64_works(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    def embed(request: httpx.Request) -> httpx.Response:
        items = orjson.loads(request.content)["requests"]
        assert {item["model"] for item in items} == {"models/emb"}
        values = [{"values": [float(len(item["content"]["parts"][0]["text"]))]} for item in items]
        return httpx.Response(200, json={"embeddings": values})

    route = mock.post(f"{BASE}/models/emb:batchEmbedContents").mock(side_effect=embed)
    texts = ["x" * (i % 7 + 1) for i in range(150)]
    reply = await adapter.embeddings({"model": "m", "input": texts}, "emb")
    data = orjson.loads(reply.body)["data"]
    assert route.call_count == 2
    assert [d["embedding"] for d in data] == [[float(len(t))] for t in texts]
    assert [d["index"] for d in data] == list(range(150))

    reply = await adapter.embeddings(
        {"model": "m", "input": ["abc"], "encoding_format": "base64"}, "emb"
    )
    packed = orjson.loads(reply.body)["data"][0]["embedding"]
    assert struct.unpack("<1f", base64.b64decode(packed)) == (3.0,)


@pytest.mark.parametrize("given", [[1, 2, 3], [[1, 2]], [], 5])
async def test_token_inputs_are_refused(adapter: GeminiAdapter, given: Any) -> None:
    with pytest.raises(UpstreamStatusError) as caught:
        await adapter.embeddings({"model": "m", "input": given}, "emb")
    assert caught.value.status_code == 400
    assert orjson.loads(caught.value.body)["error"]["param"] == "input"


async def test_embeddings_missing_a_vector_are_a_protocol_error(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    mock.post(f"{BASE}/models/emb:batchEmbedContents").mock(
        return_value=httpx.Response(200, json={"embeddings": [{"values": [1.0]}]})
    )
    with pytest.raises(UpstreamProtocolError, match="one vector per input"):
        await adapter.embeddings({"model": "m", "input": ["a", "b"]}, "emb")


async def test_list_models_follows_pages(adapter: GeminiAdapter, mock: respx.MockRouter) -> None:
    def page(request: httpx.Request) -> httpx.Response:
        assert request.headers["x-goog-api-key"] == KEY
        if request.url.params.get("pageToken") == "p/2":
            return httpx.Response(200, json={"models": [{"name": "models/emb"}]})
        models = [{"name": "models/gemini-a"}, {"name": "models/gemini-b"}]
        return httpx.Response(200, json={"models": models, "nextPageToken": "p/2"})

    route = mock.get(url__startswith=f"{BASE}/models").mock(side_effect=page)
    assert await adapter.list_models() == ["gemini-a", "gemini-b", "emb"]
    assert route.call_count == 2


async def test_model_names_are_paths_not_injections(
    adapter: GeminiAdapter, mock: respx.MockRouter
) -> None:
    route = mock.post(f"{BASE}/tunedModels/mine:generateContent").mock(
        return_value=httpx.Response(200, json=answer({"text": "x"}))
    )
    await adapter.chat(chat(user("hi")), "tunedModels/mine")
    assert route.called
    odd = mock.post(f"{BASE}/models/a%3Fkey%3Dx:generateContent").mock(
        return_value=httpx.Response(200, json=answer({"text": "x"}))
    )
    await adapter.chat(chat(user("hi")), "a?key=x")
    assert odd.called


def test_config_keys_and_validation() -> None:
    cls = get_adapter_class("gemini")
    assert cls is GeminiAdapter
    assert cls.config_keys["apiKey"].sensitive and cls.config_keys["headers"].sensitive
    assert cls.validate_config({}) == []
    assert cls.validate_config({"baseURL": BASE, "timeout": 1000, "headers": {"x": "y"}}) == []
    problems = cls.validate_config(
        {"baseURL": f"{BASE}?key=abc", "timeout": 0, "headers": {"x": 1}, "region": "eu"}
    )
    assert len(problems) == 4
    assert any("never in a URL" in p for p in problems)
    assert any("region" in p for p in problems)


# -- golden: what the fake Gemini upstream receives, over a socket -------------------------------

FAKE_KEY = "AIza-e2e-upstream-key"
HELLO = [{"role": "user", "content": "Hello there"}]
CITY_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def on_fake(key: str = FAKE_KEY) -> Any:
    return adapter_on_fake(
        "gemini",
        lambda url: {"baseURL": f"{url}/v1beta", "apiKey": key},
        MockOptions(api_key=FAKE_KEY),
    )


async def test_the_fake_receives_the_translated_request_and_key() -> None:
    async with on_fake() as (adapter, upstream):
        reply = await adapter.chat({"model": "g", "messages": HELLO}, "gemini-mock")
        stream = await adapter.chat_stream(
            {"model": "g", "messages": HELLO}, "gemini-mock", include_usage=False
        )
        [block async for block in stream]

    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 5)
    plain, streamed = upstream.requests
    assert plain.path == "/v1beta/models/gemini-mock:generateContent"
    assert streamed.path == "/v1beta/models/gemini-mock:streamGenerateContent"
    assert plain.json == {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}
    assert plain.headers["x-goog-api-key"] == streamed.headers["x-goog-api-key"] == FAKE_KEY


async def test_a_function_call_and_its_response_on_the_wire() -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    tools = {"tools": [CITY_TOOL], "tool_choice": "required"}
    async with on_fake() as (adapter, upstream):
        reply = await adapter.chat({"model": "g", "messages": ask, **tools}, "gemini-mock")
        call = orjson.loads(reply.body)["choices"][0]["message"]["tool_calls"][0]
        follow_up = [
            *ask,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": '{"celsius": 21}'},
        ]
        await adapter.chat(
            {"model": "g", "messages": follow_up, "tools": [CITY_TOOL]}, "gemini-mock"
        )

    assert call["function"]["arguments"] == '{"query":"What is the weather in Paris?"}'
    sent = upstream.requests[-1].json
    assert sent["tools"][0]["functionDeclarations"][0]["parameters"] == {
        "type": "OBJECT",
        "properties": {"city": {"type": "STRING"}},
        "required": ["city"],
    }
    assert sent["contents"][1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert sent["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"celsius": 21}}}],
    }


async def test_embeddings_one_and_many_on_the_wire() -> None:
    async with on_fake() as (adapter, upstream):
        one = await adapter.embeddings({"model": "e", "input": "alpha"}, "embedding-mock")
        many = await adapter.embeddings(
            {"model": "e", "input": ["alpha", "beta gamma"]}, "embedding-mock"
        )

    assert [d["embedding"] for d in orjson.loads(one.body)["data"]] == [
        pytest.approx(embed("alpha"))
    ]
    answer = orjson.loads(many.body)
    assert [d["embedding"] for d in answer["data"]] == [
        pytest.approx(embed("alpha")),
        pytest.approx(embed("beta gamma")),
    ]
    assert answer["model"] == "e" and answer["usage"]["prompt_tokens"] == 0
    assert [r.path for r in upstream.requests] == [
        "/v1beta/models/embedding-mock:embedContent",
        "/v1beta/models/embedding-mock:batchEmbedContents",
    ]


async def test_a_wrong_key_is_geminis_invalid_argument_without_the_key() -> None:
    async with on_fake(key="AIza-wrong") as (adapter, _):
        with pytest.raises(UpstreamStatusError) as caught:
            await adapter.chat({"model": "g", "messages": HELLO}, "gemini-mock")
    error = orjson.loads(caught.value.body)["error"]
    # Gemini says 400 INVALID_ARGUMENT; it is the provider's rejected credential, so a 401 that
    # falls back and counts against the provider.
    assert caught.value.status_code == 401 and caught.value.retryable
    assert caught.value.fault == "credential rejected"
    assert error["code"] == "INVALID_ARGUMENT" and "API key not valid" in error["message"]
    assert "AIza-wrong" not in str(error)
