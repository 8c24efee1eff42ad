"""The ollama adapter against respx: the exact /api/chat JSON sent, answers and streams read back.

Wire formats from Ollama's API reference (docs/api.md: /api/chat, /api/embed, /api/tags) and its
client types (``tool_name`` on tool messages, tool-call arguments as objects).
"""

from __future__ import annotations

import base64
import contextlib
import struct
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import orjson
import pytest
import respx

from providers.base import AdapterOptions, ChatStream
from providers.ollama.adapter import OllamaAdapter
from providers.registry import get_adapter_class
from router.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnsupported,
)
from router.mock.upstream import MockOptions
from tests.helpers import adapter_on_fake, sse_chunks

BASE = "http://ollama.test"
PNG = base64.b64encode(b"\x89PNG fake image bytes").decode()
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def adapter(**config: Any) -> OllamaAdapter:
    return OllamaAdapter("oll", {"baseURL": BASE, **config}, AdapterOptions())


@contextlib.asynccontextmanager
async def running(**config: Any) -> AsyncIterator[OllamaAdapter]:
    a = adapter(**config)
    try:
        yield a
    finally:
        await a.aclose()


def final(**extra: Any) -> dict[str, Any]:
    line = {
        "model": "llama3.2",
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 7,
        "eval_count": 3,
    }
    line.update(extra)
    return line


def piece(text: str) -> dict[str, Any]:
    return {"model": "llama3.2", "message": {"role": "assistant", "content": text}, "done": False}


class Pieces(httpx.AsyncByteStream):
    """A streamed body in given pieces; ``fail`` breaks the connection after the last one."""

    def __init__(self, pieces: Iterable[bytes], fail: bool = False) -> None:
        self.pieces, self.fail = list(pieces), fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for p in self.pieces:
            yield p
        if self.fail:
            raise httpx.RemoteProtocolError("peer closed connection without complete body")


def ndjson(*lines: Any, fail: bool = False, split: bool = False) -> httpx.Response:
    wire = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    # ``split``: cut the bytes mid-line, as TCP may, to prove lines are reassembled.
    pieces = [wire[i : i + 7] for i in range(0, len(wire), 7)] if split else [wire]
    return httpx.Response(200, stream=Pieces(pieces, fail))


async def sent_chat(body: dict[str, Any], **config: Any) -> dict[str, Any]:
    """The /api/chat JSON the adapter sends for ``body`` (non-streamed)."""
    with respx.mock(using="httpx") as mock:
        route = mock.post(f"{BASE}/api/chat").respond(json=final())
        async with running(**config) as a:
            await a.chat(body, "llama3.2")
    sent: dict[str, Any] = orjson.loads(route.calls.last.request.content)
    return sent


async def answer(line: dict[str, Any], body: dict[str, Any] | None = None) -> dict[str, Any]:
    with respx.mock(using="httpx") as mock:
        mock.post(f"{BASE}/api/chat").respond(json=line)
        async with running() as a:
            reply = await a.chat(body or {"model": "local", "messages": [USER]}, "llama3.2")
    data: dict[str, Any] = orjson.loads(reply.body)
    data["_usage"] = reply.usage
    return data


async def streamed(
    response: httpx.Response, *, include_usage: bool = True
) -> tuple[list[Any], ChatStream]:
    """Stream through the adapter; return the parsed OpenAI chunks and the ChatStream."""
    with respx.mock(using="httpx") as mock:
        mock.post(f"{BASE}/api/chat").mock(return_value=response)
        async with running() as a:
            stream = await a.chat_stream(
                {"model": "local", "messages": [USER], "stream": True},
                "llama3.2",
                include_usage=include_usage,
            )
            blocks = [block async for block in stream]
    return sse_chunks(b"".join(blocks), done=False), stream


USER = {"role": "user", "content": "hello"}


# -- registry and config -----------------------------------------------------------------------


def test_ollama_is_a_builtin_type_with_its_config_keys() -> None:
    cls = get_adapter_class("ollama")
    assert cls is OllamaAdapter
    assert cls.config_keys["apiKey"].sensitive and cls.config_keys["headers"].sensitive
    assert not cls.config_keys["baseURL"].required
    assert cls.validate_config({}) == []
    problems = cls.validate_config(
        {"baseURL": "ftp://x", "timeout": 0, "keepAlive": "5m", "headers": {"a": 1}}
    )
    assert any("http:// or https://" in p for p in problems)
    assert any("milliseconds" in p for p in problems)
    assert any("'keepAlive' must be an integer" in p for p in problems)
    assert any("map header names to strings" in p for p in problems)
    assert cls.validate_config({"baseURL": "http://u:pw@host"}) == [
        "Config key 'baseURL' must not carry credentials; use 'apiKey'."
    ]


async def test_default_base_url_auth_headers_and_keep_alive_in_ms() -> None:
    with respx.mock(using="httpx") as mock:
        route = mock.post("http://localhost:11434/api/chat").respond(json=final())
        a = OllamaAdapter(
            "oll",
            {"apiKey": "sk-proxy", "headers": {"X-Proxy-Token": "t"}, "keepAlive": 300_000},
            AdapterOptions(),
        )
        try:
            await a.chat({"model": "local", "messages": [USER]}, "llama3.2")
        finally:
            await a.aclose()
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer sk-proxy"
    assert request.headers["x-proxy-token"] == "t"
    assert orjson.loads(request.content)["keep_alive"] == "300000ms"


async def test_negative_keep_alive_keeps_the_model_loaded_and_no_key_sends_no_auth() -> None:
    with respx.mock(using="httpx") as mock:
        route = mock.post(f"{BASE}/api/chat").respond(json=final())
        async with running(keepAlive=-1) as a:
            await a.chat({"model": "local", "messages": [USER]}, "llama3.2")
    request = route.calls.last.request
    assert "authorization" not in request.headers
    assert orjson.loads(request.content)["keep_alive"] == -1


# -- request translation -----------------------------------------------------------------------


async def test_text_and_system_messages_and_parameters() -> None:
    body = {
        "model": "local",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
            {"role": "user", "content": "hello", "name": "ann"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "and now?"},
        ],
        "max_tokens": 50,
        "max_completion_tokens": 20,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": "END",
        "presence_penalty": 0.5,
        "logprobs": True,
        "logit_bias": {"1": 2},
        "user": "someone",
        "n": 1,
    }
    assert await sent_chat(body) == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "No emoji."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "and now?"},
        ],
        "stream": False,
        "options": {
            "num_predict": 20,
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "presence_penalty": 0.5,
            "stop": ["END"],
        },
    }


async def test_max_tokens_alone_and_a_stop_list() -> None:
    sent = await sent_chat({"model": "m", "messages": [USER], "max_tokens": 5, "stop": ["a", "b"]})
    assert sent["options"] == {"num_predict": 5, "stop": ["a", "b"]}
    plain = await sent_chat({"model": "m", "messages": [USER]})
    assert "options" not in plain and "tools" not in plain and "keep_alive" not in plain


async def test_multi_part_user_content_with_data_url_images() -> None:
    body = {
        "model": "local",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "text", "text": "Be precise."},
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}},
                ],
            }
        ],
    }
    assert (await sent_chat(body))["messages"] == [
        {"role": "user", "content": "What is this?\nBe precise.", "images": [PNG, PNG]}
    ]


async def test_an_http_image_url_is_unsupported_so_the_router_tries_another_provider() -> None:
    body = {
        "model": "local",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}],
            }
        ],
    }
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.post(f"{BASE}/api/chat").respond(json=final())
        async with running() as a:
            with pytest.raises(UpstreamUnsupported, match="send a data: URL"):
                await a.chat(body, "llama3.2")
    assert not route.called


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}
                ],
            },
            "not base64",
        ),
        (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                ],
            },
            "must be a JSON object",
        ),
        ({"role": "wizard", "content": "x"}, "unknown role 'wizard'"),
    ],
)
async def test_malformed_input_is_a_400_in_openai_shape_and_nothing_is_sent(
    message: dict[str, Any], expected: str
) -> None:
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        route = mock.post(f"{BASE}/api/chat").respond(json=final())
        async with running() as a:
            with pytest.raises(UpstreamStatusError) as caught:
                await a.chat({"model": "m", "messages": [message]}, "llama3.2")
    assert not route.called
    assert caught.value.status_code == 400 and not caught.value.retryable
    error = orjson.loads(caught.value.body)["error"]
    assert expected in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_audio_parts_and_several_choices_are_unsupported() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": PNG, "format": "wav"}}
    async with running() as a:
        with pytest.raises(UpstreamUnsupported, match="'input_audio' part"):
            await a.chat({"model": "m", "messages": [{"role": "user", "content": [audio]}]}, "x")
        with pytest.raises(UpstreamUnsupported, match="n=2"):
            await a.chat({"model": "m", "messages": [USER], "n": 2}, "x")


async def test_tools_assistant_tool_calls_and_tool_results() -> None:
    body = {
        "model": "local",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
            {
                "role": "tool",
                "tool_call_id": "call_a",
                "content": [{"type": "text", "text": "sun"}],
            },
            {"role": "tool", "tool_call_id": "unknown", "content": "?"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    sent = await sent_chat(body)
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_time", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": "noon", "tool_name": "get_time"},
        {"role": "tool", "content": "sun", "tool_name": "get_weather"},
        {"role": "tool", "content": "?"},
    ]


async def test_tool_choice_none_sends_no_tools_and_a_named_choice_sends_only_that_one() -> None:
    other = {"type": "function", "function": {"name": "other", "parameters": {}}}
    base = {"model": "m", "messages": [USER], "tools": [WEATHER_TOOL, other]}
    assert "tools" not in await sent_chat({**base, "tool_choice": "none"})
    named = {"type": "function", "function": {"name": "other"}}
    assert (await sent_chat({**base, "tool_choice": named}))["tools"] == [other]
    assert (await sent_chat({**base, "tool_choice": "required"}))["tools"] == [WEATHER_TOOL, other]


async def test_response_format_becomes_format() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    json_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert (await sent_chat({"model": "m", "messages": [USER], "response_format": json_schema}))[
        "format"
    ] == schema
    json_object = {"type": "json_object"}
    sent = await sent_chat({"model": "m", "messages": [USER], "response_format": json_object})
    assert sent["format"] == "json"


# -- answers -----------------------------------------------------------------------------------


async def test_a_text_answer_in_openai_shape_with_usage() -> None:
    line = final(message={"role": "assistant", "content": "Hi there."})
    data = await answer(line)
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["model"] == "local"
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi there."},
            "finish_reason": "stop",
        }
    ]
    assert data["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert data["_usage"].total_tokens == 10


async def test_length_and_missing_counts() -> None:
    line = final(done_reason="length", message={"role": "assistant", "content": "cut"})
    del line["prompt_eval_count"]  # Ollama omits a zero count (a fully cached prompt)
    data = await answer(line)
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"] == {"prompt_tokens": 0, "completion_tokens": 3, "total_tokens": 3}


async def test_tool_calls_come_back_with_ids_and_json_string_arguments() -> None:
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"index": 1, "name": "get_time", "arguments": {}}},
    ]
    data = await answer(final(message={"role": "assistant", "content": "", "tool_calls": calls}))
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    got = choice["message"]["tool_calls"]
    assert [c["function"] for c in got] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "get_time", "arguments": "{}"},
    ]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in got)
    assert got[0]["id"] != got[1]["id"]


async def test_thinking_is_not_passed_on() -> None:
    line = final(message={"role": "assistant", "content": "42", "thinking": "hmm"})
    data = await answer(line)
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "42"}


@pytest.mark.parametrize(
    ("status", "error", "kind", "code", "retryable"),
    [
        (404, 'model "nope" not found, try pulling it first', "invalid_request_error",
         "model_not_found", True),  # the provider's model is wrong: tried elsewhere
        (400, "invalid options", "invalid_request_error", None, False),
        (401, "unauthorized", "authentication_error", "invalid_api_key", True),
        (429, "too many requests", "requests", "rate_limit_exceeded", True),
        (500, "llama runner process has terminated", "server_error", None, True),
        (503, "server busy", "server_error", None, True),
    ],
)  # fmt: skip
async def test_ollama_errors_become_openai_errors(
    status: int, error: str, kind: str, code: str | None, retryable: bool
) -> None:
    with respx.mock(using="httpx") as mock:
        mock.post(f"{BASE}/api/chat").respond(
            status, json={"error": error}, headers={"retry-after": "2"}
        )
        async with running(apiKey="sk-secret-key-123456") as a:
            with pytest.raises(UpstreamStatusError) as caught:
                await a.chat({"model": "m", "messages": [USER]}, "llama3.2")
            with pytest.raises(UpstreamStatusError) as caught_stream:
                await a.chat_stream(
                    {"model": "m", "messages": [USER]}, "llama3.2", include_usage=False
                )
    for exc in (caught.value, caught_stream.value):
        assert exc.status_code == status and exc.retryable is retryable
        assert exc.retry_after == 2.0
        assert orjson.loads(exc.body) == {
            "error": {"message": error, "type": kind, "param": None, "code": code}
        }
        assert error in exc.message and "sk-secret" not in exc.message


async def test_a_body_that_is_not_json_and_a_connect_error() -> None:
    with respx.mock(using="httpx") as mock:
        mock.post(f"{BASE}/api/chat").respond(200, content=b"<html>proxy</html>")
        async with running() as a:
            with pytest.raises(UpstreamProtocolError, match="not JSON"):
                await a.chat({"model": "m", "messages": [USER]}, "llama3.2")
    with respx.mock(using="httpx") as mock:
        mock.post(f"{BASE}/api/chat").mock(side_effect=httpx.ConnectError("refused"))
        async with running() as a:
            with pytest.raises(UpstreamConnectError):
                await a.chat({"model": "m", "messages": [USER]}, "llama3.2")


# -- streams -----------------------------------------------------------------------------------


async def test_a_stream_becomes_openai_chunks_role_first_usage_last() -> None:
    response = ndjson(piece("Hel"), piece("lo"), piece(" you"), final(), split=True)
    chunks, stream = await streamed(response)
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * len(chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["model"] == "local"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    texts = [c["choices"][0]["delta"].get("content") for c in chunks[1:4]]
    assert texts == ["Hel", "lo", " you"]
    assert chunks[4]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert chunks[5]["choices"] == []
    assert chunks[5]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert len(chunks) == 6
    assert stream.usage is not None and stream.usage.completion_tokens == 3


async def test_without_include_usage_the_usage_chunk_is_not_sent_but_recorded() -> None:
    chunks, stream = await streamed(
        ndjson(piece("a"), final(done_reason="length")), include_usage=False
    )
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert stream.usage is not None and stream.usage.prompt_tokens == 7


async def test_streamed_tool_calls_are_deltas_with_index_id_and_arguments() -> None:
    first = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    second = {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}
    response = ndjson(
        {"message": {"role": "assistant", "content": "", "tool_calls": [first]}, "done": False},
        {"message": {"role": "assistant", "content": "", "tool_calls": [second]}, "done": False},
        final(),
    )
    chunks, _ = await streamed(response)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:3]]
    assert [c["index"] for c in calls] == [0, 1]
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "get_weather", "arguments": '{"city":"Rome"}'},
    ]
    assert calls[0]["id"] != calls[1]["id"]
    assert chunks[3]["choices"][0]["finish_reason"] == "tool_calls"


async def test_a_stream_without_the_done_line_fails() -> None:
    with pytest.raises(UpstreamProtocolError, match='"done": true'):
        await streamed(ndjson(piece("a"), piece("b")))


async def test_a_stream_that_breaks_off_fails() -> None:
    with pytest.raises(UpstreamProtocolError, match="broken answer"):
        await streamed(ndjson(piece("a"), fail=True))


async def test_an_error_line_mid_stream_fails_and_names_the_error() -> None:
    response = ndjson(piece("a"), {"error": "an error was encountered while running the model"})
    with pytest.raises(UpstreamProtocolError, match="mid-stream: an error was encountered"):
        await streamed(response)


async def test_an_error_on_the_first_line_fails_before_any_chunk_is_yielded() -> None:
    # The router waits for the first block to decide whether to fall back: it must not be the
    # role chunk of a stream that is already dead.
    with respx.mock(using="httpx") as mock:
        mock.post(f"{BASE}/api/chat").mock(return_value=ndjson({"error": "out of memory"}))
        async with running() as a:
            stream = await a.chat_stream(
                {"model": "m", "messages": [USER]}, "llama3.2", include_usage=False
            )
            with pytest.raises(UpstreamProtocolError, match="out of memory"):
                await anext(aiter(stream))


async def test_a_stream_request_says_stream_true() -> None:
    with respx.mock(using="httpx") as mock:
        route = mock.post(f"{BASE}/api/chat").mock(return_value=ndjson(final()))
        async with running() as a:
            stream = await a.chat_stream(
                {"model": "m", "messages": [USER], "stream": True, "stream_options": {}},
                "llama3.2",
                include_usage=False,
            )
            [block async for block in stream]
    sent = orjson.loads(route.calls.last.request.content)
    assert sent == {"model": "llama3.2", "messages": [USER], "stream": True}


# -- embeddings and models ---------------------------------------------------------------------


async def test_embeddings_in_openai_shape_float_and_base64() -> None:
    vectors = [[0.5, -0.25], [1.0, 0.0]]
    with respx.mock(using="httpx") as mock:
        route = mock.post(f"{BASE}/api/embed").respond(
            json={"model": "nomic", "embeddings": vectors, "prompt_eval_count": 4}
        )
        async with running(keepAlive=0) as a:
            body = {"model": "emb", "input": ["a b", "c d"], "dimensions": 2}
            plain = orjson.loads((await a.embeddings(body, "nomic")).body)
            reply = await a.embeddings({**body, "encoding_format": "base64"}, "nomic")
    assert orjson.loads(route.calls[0].request.content) == {
        "model": "nomic",
        "input": ["a b", "c d"],
        "dimensions": 2,
        "keep_alive": "0ms",
    }
    assert plain == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -0.25]},
            {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]},
        ],
        "model": "emb",
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    packed = orjson.loads(reply.body)["data"][1]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(packed)) == (1.0, 0.0)
    assert reply.usage is not None and reply.usage.prompt_tokens == 4


async def test_embeddings_refuse_token_arrays_and_check_the_answer() -> None:
    with respx.mock(using="httpx") as mock:
        mock.post(f"{BASE}/api/embed").respond(json={"model": "n", "embeddings": [[0.1]]})
        async with running() as a:
            with pytest.raises(UpstreamUnsupported, match="token arrays"):
                await a.embeddings({"model": "e", "input": [[1, 2, 3]]}, "n")
            with pytest.raises(UpstreamProtocolError, match="2 embedding"):
                await a.embeddings({"model": "e", "input": ["a", "b"]}, "n")
            reply = await a.embeddings({"model": "e", "input": "a"}, "n")
    assert orjson.loads(reply.body)["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


async def test_list_models_reads_api_tags() -> None:
    tags = {"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest"}, {"name": "qwen"}]}
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/api/tags").respond(json=tags)
        async with running() as a:
            assert await a.list_models() == ["llama3.2:latest", "qwen"]
    with respx.mock(using="httpx") as mock:
        mock.get(f"{BASE}/api/tags").respond(json={"nothing": []})
        async with running() as a:
            with pytest.raises(UpstreamProtocolError, match="'models' list"):
                await a.list_models()


# -- golden: what the fake Ollama upstream receives, over a socket -------------------------------

FAKE_KEY = "sk-upstream-ollama-1"
HELLO = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


def on_fake(**options: Any) -> Any:
    return adapter_on_fake(
        "ollama",
        lambda url: {"baseURL": url, "apiKey": FAKE_KEY, "keepAlive": 60_000},
        MockOptions(api_key=FAKE_KEY, **options),
    )


async def test_the_fake_receives_options_keep_alive_and_the_key() -> None:
    async with on_fake(chunks=4) as (adapter, upstream):
        body = {"model": "local", "messages": HELLO, "max_tokens": 10, "temperature": 0.5}
        reply = await adapter.chat(body, "llama3.2")
        stream = await adapter.chat_stream(
            {"model": "local", "messages": HELLO}, "llama3.2", include_usage=True
        )
        [block async for block in stream]

    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 4)
    plain, streamed = upstream.requests
    assert plain.json == {
        "model": "llama3.2",
        "messages": HELLO,
        "stream": False,
        "options": {"num_predict": 10, "temperature": 0.5},
        "keep_alive": "60000ms",
    }
    assert streamed.json["stream"] is True
    assert [r.path for r in upstream.requests] == ["/api/chat", "/api/chat"]
    assert plain.headers["authorization"] == f"Bearer {FAKE_KEY}"


async def test_a_tool_call_and_its_result_on_the_wire() -> None:
    ask = [{"role": "user", "content": "Use the tool for Paris"}]
    async with on_fake() as (adapter, upstream):
        reply = await adapter.chat({"model": "l", "messages": ask, "tools": [WEATHER_TOOL]}, "m")
        call = orjson.loads(reply.body)["choices"][0]["message"]["tool_calls"][0]
        follow_up = [
            *ask,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"},
        ]
        await adapter.chat({"model": "l", "messages": follow_up, "tools": [WEATHER_TOOL]}, "m")

    assert call["id"].startswith("call_")
    assert orjson.loads(call["function"]["arguments"]) == {"query": "Use the tool for Paris"}
    assert upstream.requests[-1].json["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "function": {
                        "name": "get_weather",
                        "arguments": {"query": "Use the tool for Paris"},
                    }
                }
            ],
        },
        {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"},
    ]


async def test_embeddings_as_base64_say_what_the_floats_say() -> None:
    async with on_fake() as (adapter, upstream):
        packed = await adapter.embeddings(
            {"model": "l", "input": ["one two", "three"], "encoding_format": "base64"}, "m"
        )
        floats = await adapter.embeddings(
            {"model": "l", "input": "one two", "encoding_format": "float"}, "m"
        )

    raw = base64.b64decode(orjson.loads(packed.body)["data"][0]["embedding"])
    unpacked = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert unpacked == pytest.approx(orjson.loads(floats.body)["data"][0]["embedding"], abs=1e-6)
    assert orjson.loads(packed.body)["usage"]["total_tokens"] == 3
    assert upstream.requests[0].path == "/api/embed"
    assert upstream.requests[0].json["input"] == ["one two", "three"]


@pytest.mark.parametrize(("fail", "reason"), [("disconnect", "broken"), ("truncate", "done")])
async def test_a_stream_broken_mid_way_says_how(fail: str, reason: str) -> None:
    async with on_fake(fail=fail, chunks=6) as (adapter, _):
        stream = await adapter.chat_stream(
            {"model": "l", "messages": HELLO}, "m", include_usage=False
        )
        with pytest.raises(UpstreamProtocolError, match=reason):
            [block async for block in stream]


async def test_an_ollama_error_answer_becomes_openais_error_object() -> None:
    async with adapter_on_fake(
        "ollama", lambda url: {"baseURL": url, "apiKey": "wrong"}, MockOptions(api_key="right")
    ) as (adapter, _):
        with pytest.raises(UpstreamStatusError) as caught:
            await adapter.chat({"model": "l", "messages": HELLO}, "m")
    assert caught.value.status_code == 401
    assert orjson.loads(caught.value.body) == {
        "error": {
            "message": "Incorrect API key provided.",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


async def test_the_model_list_comes_from_api_tags() -> None:
    async with on_fake() as (adapter, upstream):
        assert await adapter.list_models() == ["mock-llama:latest"]
    assert upstream.requests[0].path == "/api/tags"


async def test_an_image_url_is_unsupported_before_anything_is_sent() -> None:
    image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}},
            ],
        }
    ]
    async with on_fake() as (adapter, upstream):
        with pytest.raises(UpstreamUnsupported, match="send a data: URL"):
            await adapter.chat({"model": "l", "messages": image}, "m")
    assert upstream.requests == []
