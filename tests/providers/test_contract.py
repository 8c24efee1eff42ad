"""One contract for every adapter, parametrised by provider type.

Two halves:
- the adapter contract of :mod:`providers.testing`, run against each built-in type talking to its
  fake upstream over a loopback socket, and against the third-party example
  (``examples/echo-adapter``), as any adapter package would run it;
- the path a client sees, for each built-in type: the ``openai`` SDK -> the proxy (uvicorn) -> the
  fake upstream (uvicorn), with the history row the request leaves behind.

What each format puts on the wire (paths, headers, the translated JSON) is pinned by the golden
tests in the per-adapter files (test_anthropic.py, test_gemini.py, test_ollama.py, ...).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import orjson
import pytest
from openai import AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from providers.base import Adapter, AdapterOptions, ChatStream, Reply, Usage
from providers.registry import BUILTIN, get_adapter_class
from providers.testing import TOOL, AdapterContract, ContractBroken, opened
from providers.translate import ChunkWriter, completion_body
from router.app import create_app
from router.errors import UpstreamUnsupported
from router.mock.upstream import MockOptions, MockUpstream
from tests.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    adapter_on_fake,
    add_provider,
    last_request,
    make_settings,
    serve_asgi,
)

KEY = "sk-upstream-contract-4242"
FIVE_WORDS = "mock reply alpha bravo charlie"
HELLO = [{"role": "user", "content": "Hello there"}]
TOOL_ASK = [{"role": "user", "content": "Use the get_weather tool for Paris"}]


@dataclass(frozen=True)
class Kind:
    """A built-in provider type and what its fake upstream is like."""

    type: str
    config: Callable[[str], dict[str, Any]]  # the fake's root URL -> provider config
    upstream_model: str
    models: list[str]  # what list_models() finds on the fake
    busy_status: int  # how this API says "overloaded, try elsewhere"
    busy_words: str  # ... and what its error says
    wrong_key_status: int  # what a wrong key reads as (Gemini's 400 API_KEY_INVALID is a 401)
    tools: bool = True
    embeddings: bool = True
    passthrough: bool = False  # speaks OpenAI's format: answers pass through unchanged

    def __str__(self) -> str:
        return self.type


KINDS = [
    Kind(
        "openai",
        lambda url: {"baseURL": f"{url}/v1", "apiKey": KEY},
        "mock-gpt",
        ["mock-gpt"],
        500,
        "fail=status:500",
        401,
        tools=False,  # the fake's OpenAI side never calls tools
        passthrough=True,
    ),
    Kind(
        "lm-studio",
        lambda url: {"baseURL": f"{url}/v1", "apiKey": KEY},
        "mock-gpt",
        ["mock-gpt"],
        502,
        "fail=status:502",
        401,
        tools=False,
        passthrough=True,
    ),
    Kind(
        "anthropic",
        lambda url: {"baseURL": url, "apiKey": KEY},
        "mock-claude",
        ["mock-claude"],
        529,
        "overloaded_error",
        401,
        embeddings=False,
    ),
    Kind(
        "gemini",
        lambda url: {"baseURL": f"{url}/v1beta", "apiKey": KEY},
        "gemini-mock",
        ["gemini-mock", "gemini-embedding-mock"],
        429,
        "RESOURCE_EXHAUSTED",
        401,
    ),
    Kind(
        "ollama",
        lambda url: {"baseURL": url, "apiKey": KEY, "keepAlive": 60_000},
        "llama3.2",
        ["mock-llama:latest"],
        503,
        "fail=status:503",
        401,
    ),
]


# -- the adapter contract ----------------------------------------------------------------------


def contract_for(kind: Kind, upstream: MockUpstream, url: str) -> AdapterContract:
    """The contract for ``kind`` against ``upstream`` (served at ``url``), which each opened
    adapter sets to the fault asked for."""

    def open_adapter(fault: str | None) -> contextlib.AbstractAsyncContextManager[Adapter]:
        upstream.options = MockOptions(api_key=KEY, fail=fault or "none")
        return opened(get_adapter_class(kind.type)("p", kind.config(url), AdapterOptions()))

    return AdapterContract(
        open_adapter,
        model="m",
        upstream_model=kind.upstream_model,
        faults=True,
        tools=kind.tools,
        embeddings=kind.embeddings,
        max_tokens=True,
    )


CHECKS = [
    (kind, check.__name__)
    for kind in KINDS
    for check in contract_for(kind, MockUpstream(), "http://127.0.0.1:9").checks()
]


@pytest.mark.parametrize(("kind", "check"), CHECKS, ids=[f"{k}-{c}" for k, c in CHECKS])
async def test_the_adapter_contract(kind: Kind, check: str) -> None:
    upstream = MockUpstream(MockOptions(api_key=KEY))
    async with serve_asgi(upstream.app()) as url:
        try:
            await getattr(contract_for(kind, upstream, url), check)()
        finally:
            upstream.release_hangs()
    # Every check talks to the upstream, except the one whose adapter must refuse first.
    assert upstream.requests or check == "embeddings_refused"


ECHO = Path(__file__).resolve().parents[2] / "examples" / "echo-adapter"


def echo_checks() -> list[str]:
    """The checks examples/echo-adapter/test_echo_adapter.py runs (the docs show that file)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ECHO))
        from test_echo_adapter import CONTRACT

        return [check.__name__ for check in CONTRACT.checks()]


def test_the_echo_example_runs_the_shape_checks_only() -> None:
    names = echo_checks()
    assert "embeddings_refused" in names and "chat_is_an_openai_completion" in names
    assert "a_broken_stream_raises" not in names and "a_required_tool_is_called" not in names


@pytest.mark.parametrize("check", echo_checks())
async def test_the_third_party_example_keeps_the_contract(
    check: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ECHO))
    from test_echo_adapter import CONTRACT

    await getattr(CONTRACT, check)()


# -- through the proxy --------------------------------------------------------------------------


class Stack:
    """A running proxy with its management client and an SDK client."""

    def __init__(self, url: str, admin: httpx.AsyncClient, app: Any) -> None:
        self.url, self.admin, self.app = url, admin, app
        self.sdk = openai.AsyncOpenAI(
            base_url=f"{url}/v1", api_key=ADMIN_TOKEN, max_retries=0, timeout=10
        )

    async def add(
        self, kind: Kind, provider_id: str, url: str, key: str = KEY, **fields: Any
    ) -> None:
        config = {**kind.config(url), "apiKey": key}
        await add_provider(self.admin, provider_id, url, type=kind.type, config=config, **fields)
        link = {"model_id": "m", "upstream_model": kind.upstream_model}
        linked = await self.admin.post(
            f"/v1/providers/{provider_id}/models", json=link, headers=ADMIN
        )
        assert linked.status_code == 201, linked.text

    async def complete(self, **fields: Any) -> ChatCompletion:
        answer = await self.sdk.chat.completions.create(**{"model": "m", **fields})
        return cast(ChatCompletion, answer)

    async def stream(
        self, into: list[ChatCompletionChunk] | None = None, **fields: Any
    ) -> list[ChatCompletionChunk]:
        """The chunks of a streamed completion, appended to ``into`` as they arrive."""
        chunks = [] if into is None else into
        body = {"model": "m", **fields, "stream": True}
        stream = cast(
            AsyncStream[ChatCompletionChunk], await self.sdk.chat.completions.create(**body)
        )
        async for chunk in stream:
            chunks.append(chunk)
        return chunks

    async def row(self) -> dict[str, Any]:
        return await last_request(self.admin, self.app)


@contextlib.asynccontextmanager
async def proxy(tmp_path: Path, *fakes: MockUpstream) -> AsyncIterator[tuple[Stack, list[str]]]:
    """The proxy on a socket and each fake on its own; yields the stack and the fakes' URLs."""
    app = create_app(make_settings(tmp_path))
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serve_asgi(fake.app())) for fake in fakes]
        url = await stack.enter_async_context(serve_asgi(app))
        admin = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=10))
        running = Stack(url, admin, app)
        try:
            yield running, urls
        finally:
            await running.sdk.close()
            for fake in fakes:
                fake.release_hangs()


def fake(**options: Any) -> MockUpstream:
    return MockUpstream(MockOptions(api_key=KEY, **options))


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_chat_and_stream_through_the_proxy(tmp_path: Path, kind: Kind) -> None:
    upstream = fake()
    async with proxy(tmp_path, upstream) as (stack, [url]):
        await stack.add(kind, "up", url)
        answer = await stack.complete(messages=HELLO)
        row = await stack.row()
        chunks = await stack.stream(messages=HELLO, stream_options={"include_usage": True})
        streamed_row = await stack.row()

    # A pass-through type reports the model as the upstream named it.
    assert answer.model == (kind.upstream_model if kind.passthrough else "m")
    assert answer.choices[0].message.content == FIVE_WORDS
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 5
    assert (row["status"], row["provider_id"], row["upstream_model"]) == (
        "success",
        "up",
        kind.upstream_model,
    )
    assert row["total_tokens"] == answer.usage.total_tokens
    assert text_of(chunks) == FIVE_WORDS
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == answer.usage.total_tokens
    assert (streamed_row["status"], streamed_row["stream"]) == ("success", True)
    assert len(upstream.requests) == 2
    for seen in upstream.requests:  # the client's key never goes upstream
        assert ADMIN_TOKEN not in str(seen.headers)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_a_busy_provider_falls_back_to_the_next(
    tmp_path: Path, kind: Kind, stream: bool
) -> None:
    busy, healthy = fake(fail=f"status:{kind.busy_status}"), MockUpstream()
    async with proxy(tmp_path, busy, healthy) as (stack, [busy_url, ok_url]):
        await stack.add(kind, "busy", busy_url, priority=2)
        await add_provider(stack.admin, "backup", f"{ok_url}/v1", ["m"], priority=1)
        reply = await stack.sdk.chat.completions.with_raw_response.create(
            model="m", messages=cast(Any, HELLO), stream=stream
        )
        row = await stack.row()

    assert reply.headers["x-provider-router-provider"] == "backup"
    first, second = row["attempt_details"]
    assert (first["provider_id"], first["status_code"]) == ("busy", kind.busy_status)
    assert kind.busy_words in first["error"]
    assert (second["provider_id"], second["status"]) == ("backup", "success")
    assert len(busy.requests) == 1


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_an_upstream_refusal_reaches_the_client_in_openai_shape(
    tmp_path: Path, kind: Kind
) -> None:
    upstream = fake(fail="status:400")
    async with proxy(tmp_path, upstream) as (stack, [url]):
        await stack.add(kind, "up", url)
        with pytest.raises(openai.BadRequestError) as refused:
            await stack.complete(messages=HELLO)
        assert len(upstream.requests) == 1  # a client error is not tried elsewhere or again
        await stack.admin.delete("/v1/providers/up", headers=ADMIN)
        await stack.add(kind, "wrong-key", url, key="sk-the-wrong-key-1234")
        upstream.options = MockOptions(api_key=KEY)
        with pytest.raises(openai.APIStatusError) as wrong_key:
            await stack.complete(messages=HELLO)

    assert "fail=status:400" in refused.value.message
    # A provider's rejected key is the provider's fault, not the client's: no 401 for the
    # client, but a 502 naming the provider and the cause, and no SDK retry.
    assert wrong_key.value.status_code == 502
    assert wrong_key.value.response.headers["x-should-retry"] == "false"
    body = wrong_key.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert body["code"] == "all_providers_failed"
    assert "'wrong-key'" in body["message"] and "credential rejected" in body["message"]
    assert f"HTTP {kind.wrong_key_status}" in body["message"]
    assert "sk-the-wrong-key-1234" not in str(body)


@pytest.mark.parametrize("fail", ["disconnect", "truncate"])
@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_a_stream_broken_mid_way_reaches_the_client_as_an_error(
    tmp_path: Path, kind: Kind, fail: str
) -> None:
    async with proxy(tmp_path, fake(fail=fail, chunks=6)) as (stack, [url]):
        await stack.add(kind, "up", url)
        received: list[ChatCompletionChunk] = []
        with pytest.raises(openai.APIError) as caught:
            await stack.stream(received, messages=HELLO)
        row = await stack.row()

    assert text_of(received).startswith("mock")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "stream_interrupted"
    assert (row["status"], row["status_code"]) == ("error", 502)
    assert row["attempt_details"][0]["status"] == "error"


@pytest.mark.parametrize("kind", [k for k in KINDS if k.tools], ids=str)
async def test_a_tool_call_round_trip_through_the_proxy(tmp_path: Path, kind: Kind) -> None:
    async with proxy(tmp_path, fake()) as (stack, [url]):
        await stack.add(kind, "up", url)
        answer = await stack.complete(messages=TOOL_ASK, tools=[TOOL], tool_choice="required")
        message = answer.choices[0].message
        assert message.tool_calls
        call = cast(Any, message.tool_calls[0])
        follow_up = [
            *TOOL_ASK,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'},
        ]
        # The fakes refuse a call without its result in the next turn, as the real APIs do:
        # a text answer means the follow-up was translated right.
        final = await stack.complete(messages=follow_up, tools=[TOOL])

    assert answer.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather"
    assert isinstance(orjson.loads(call.function.arguments), dict)
    assert final.choices[0].message.content and final.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_embeddings_are_served_or_passed_to_a_provider_that_can(
    tmp_path: Path, kind: Kind
) -> None:
    upstream, backup = fake(), MockUpstream()
    async with proxy(tmp_path, upstream, backup) as (stack, [url, backup_url]):
        await stack.add(kind, "up", url, priority=2)
        await add_provider(stack.admin, "backup", f"{backup_url}/v1", ["m"], priority=1)
        embedded = await stack.sdk.embeddings.create(
            model="m", input=["one two", "three"], encoding_format="float"
        )
        row = await stack.row()

    assert [len(item.embedding) for item in embedded.data] == [8, 8]
    attempts = [(a["provider_id"], a["status"]) for a in row["attempt_details"]]
    if kind.embeddings:
        assert attempts == [("up", "success")]
    else:
        assert attempts == [("up", "error"), ("backup", "success")]
        assert "embeddings" in row["attempt_details"][0]["error"]


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_the_adapter_lists_the_fakes_models(kind: Kind) -> None:
    options = MockOptions(api_key=KEY)
    async with adapter_on_fake(kind.type, kind.config, options) as (adapter, _):
        assert await adapter.list_models() == kind.models


def test_every_built_in_type_is_under_contract() -> None:
    assert sorted(kind.type for kind in KINDS) == sorted(BUILTIN)


class Sloppy(Adapter):
    """An adapter that breaks one rule of the contract, chosen by ``flaw``."""

    type = "sloppy"

    def __init__(self, flaw: str) -> None:
        super().__init__("sloppy", {}, AdapterOptions())
        self.flaw = flaw

    async def chat(self, body: dict[str, Any], upstream_model: str) -> Reply:
        usage = Usage(2, 2, 4 if self.flaw != "usage" else 5)
        answer = completion_body(
            body["model"], content="hi there", finish_reason="stop", usage=usage
        )
        return Reply(answer, usage)

    async def chat_stream(
        self, body: dict[str, Any], upstream_model: str, *, include_usage: bool
    ) -> ChatStream:
        async def events() -> AsyncIterator[bytes]:
            writer = ChunkWriter(body["model"])
            if self.flaw != "role":
                yield writer.role()
            yield writer.content("hi there" if self.flaw != "text" else "hi")
            yield writer.finish("stop")
            if include_usage or self.flaw == "usage chunk":
                yield writer.usage(Usage(2, 2, 4))
            if self.flaw == "done":
                yield b"data: [DONE]\n\n"

        return ChatStream(events(), Usage(2, 2, 4))


@pytest.mark.parametrize(
    ("flaw", "check", "words"),
    [
        ("usage", "chat_is_an_openai_completion", "does not add up"),
        ("role", "stream_says_the_same_as_chat", "role comes first"),
        ("text", "stream_says_the_same_as_chat", "streamed 'hi'"),
        ("done", "stream_says_the_same_as_chat", "[DONE]"),
        ("usage chunk", "stream_ends_with_usage_only_when_asked", "include_usage was off"),
        # Told it serves embeddings, an adapter that does not is caught too.
        ("none", "embeddings_are_vectors", "does not serve embeddings"),
    ],
)
async def test_the_contract_catches_an_adapter_that_breaks_it(
    flaw: str, check: str, words: str
) -> None:
    contract = AdapterContract(lambda fault: opened(Sloppy(flaw)), model="m")
    with pytest.raises((ContractBroken, UpstreamUnsupported), match=re.escape(words)):
        await getattr(contract, check)()


async def test_a_sloppy_adapter_without_flaws_keeps_the_contract() -> None:
    contract = AdapterContract(lambda fault: opened(Sloppy("none")), model="m")
    for check in contract.checks():
        await check()
