"""The adapter contract: what every provider type keeps, as checks any test suite can run.

Built-in and third-party adapters run the same checks. A package describes its adapter with an
:class:`AdapterContract` and runs each of :meth:`AdapterContract.checks` as a test (pytest shown;
this module does not import pytest)::

    import pytest
    from providers.testing import AdapterContract

    CONTRACT = AdapterContract(open_adapter=my_adapter_on_a_fake_upstream, model="parrot")

    @pytest.mark.parametrize("check", CONTRACT.checks(), ids=lambda check: check.__name__)
    async def test_the_adapter_contract(check):
        await check()

``open_adapter(fault)`` is an async context manager that yields an adapter pointed at a working
upstream when ``fault`` is None, or at one that fails in the way ``fault`` names when the
contract says the upstream can (``faults=True``): ``"status:<code>"`` (an error answer),
``"disconnect"`` (the connection drops mid-stream) or ``"truncate"`` (a stream without its end).
The upstream must answer the same request the same way each time (a fake does).

Each check raises :class:`ContractBroken` (an ``AssertionError``) naming what the adapter did.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from providers.base import Adapter, Reply, Usage
from router.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnsupported,
)

__all__ = ["TOOL", "AdapterContract", "ContractBroken", "OpenAdapter", "opened"]

OpenAdapter = Callable[[str | None], contextlib.AbstractAsyncContextManager[Adapter]]
Check = Callable[[], Awaitable[None]]
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
# The tool the tool check offers (an OpenAI function tool).
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


class ContractBroken(AssertionError):
    """The adapter broke the contract; the message says how."""


def expect(condition: object, message: str) -> None:
    """Raise :class:`ContractBroken` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ContractBroken(message)


@dataclass
class AdapterContract:
    """What to run the contract against, and which optional abilities the adapter has."""

    open_adapter: OpenAdapter
    model: str = "contract-model"  # what the client asked for: answers must name it
    upstream_model: str = "contract-upstream-model"
    messages: list[dict[str, Any]] = field(
        default_factory=lambda: [{"role": "user", "content": "Hello there"}]
    )
    # What the tool check asks; fakes that call a tool only when told to see the word "tool".
    tool_messages: list[dict[str, Any]] = field(
        default_factory=lambda: [{"role": "user", "content": "Use the get_weather tool for Paris"}]
    )
    faults: bool = False  # open_adapter(fault) can make the upstream fail
    tools: bool = False  # answers with a call when the request requires a tool
    embeddings: bool = False  # serves embeddings (otherwise it must raise UpstreamUnsupported)
    max_tokens: bool = False  # honours max_tokens: a cut answer ends with "length"

    def checks(self) -> list[Check]:
        """The contract's checks that apply to this adapter, each an async callable."""
        found: list[Check] = [
            self.chat_is_an_openai_completion,
            self.stream_says_the_same_as_chat,
            self.stream_ends_with_usage_only_when_asked,
            self.models_are_listed_or_unsupported,
        ]
        found.append(self.embeddings_are_vectors if self.embeddings else self.embeddings_refused)
        if self.tools:
            found.append(self.a_required_tool_is_called)
        if self.max_tokens:
            found.append(self.max_tokens_cuts_with_length)
        if self.faults:
            found += [
                self.an_upstream_error_is_a_status_error,
                self.a_client_error_is_not_retried,
                self.a_broken_stream_raises,
                self.a_truncated_stream_raises,
            ]
        return found

    # -- helpers --------------------------------------------------------------------------------

    def answer_models(self) -> set[str]:
        """The model an answer may name: the one asked for (an adapter that translates), or the
        upstream's (a pass-through adapter reports what the upstream resolved)."""
        return {self.model, self.upstream_model}

    def body(self, **fields: Any) -> dict[str, Any]:
        """A chat request for :attr:`model` (of :attr:`messages` unless ``fields`` say)."""
        return {"model": self.model, "messages": self.messages, **fields}

    async def chat(self, fault: str | None = None, **fields: Any) -> dict[str, Any]:
        async with self.open_adapter(fault) as adapter:
            reply = await adapter.chat(self.body(**fields), self.upstream_model)
        return self.completion(reply)

    async def stream(
        self, fault: str | None = None, *, include_usage: bool = False, **fields: Any
    ) -> tuple[list[dict[str, Any]], Usage | None]:
        body = self.body(stream=True, **fields)
        async with self.open_adapter(fault) as adapter:
            stream = await adapter.chat_stream(
                body, self.upstream_model, include_usage=include_usage
            )
            try:
                chunks = [chunk async for block in stream for chunk in self.events(block)]
            finally:
                await stream.aclose()
        return chunks, stream.usage

    def completion(self, reply: Reply) -> dict[str, Any]:
        """Check ``reply`` is an OpenAI ``chat.completion`` for :attr:`model`; return its body."""
        expect(reply.status_code == 200, f"chat() replied with status {reply.status_code}")
        answer: dict[str, Any] = orjson.loads(reply.body)
        expect(answer.get("object") == "chat.completion", f"not a chat.completion: {answer}")
        expect(answer.get("model") in self.answer_models(), f"model {answer.get('model')!r}")
        choice = answer["choices"][0]
        expect(choice["message"].get("role") == "assistant", f"message role: {choice['message']}")
        expect(choice.get("finish_reason") in FINISH_REASONS, f"finish_reason: {choice}")
        usage: dict[str, Any] = answer.get("usage") or {}
        expect(usage, "a chat.completion carries usage")
        expect(
            usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"],
            f"usage does not add up: {usage}",
        )
        expect(
            reply.usage is not None and reply.usage.total_tokens == usage["total_tokens"],
            f"Reply.usage {reply.usage} differs from the body's {usage}",
        )
        return answer

    def events(self, block: bytes) -> list[dict[str, Any]]:
        """The chunks in one block a stream yielded: whole ``data:`` events, never ``[DONE]``."""
        found = []
        for event in block.split(b"\n\n")[:-1]:
            expect(event.startswith(b"data: "), f"not an SSE data event: {event[:80]!r}")
            expect(event != b"data: [DONE]", "the adapter wrote [DONE]; the router writes it")
            chunk = orjson.loads(event[6:])
            expect(chunk.get("object") == "chat.completion.chunk", f"not a chunk: {chunk}")
            expect(chunk.get("model") in self.answer_models(), f"model {chunk.get('model')!r}")
            found.append(chunk)
        expect(block.endswith(b"\n\n"), f"a block must hold whole events: {block[-80:]!r}")
        return found

    @staticmethod
    def text(chunks: list[dict[str, Any]]) -> str:
        return "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )

    # -- the checks -----------------------------------------------------------------------------

    async def chat_is_an_openai_completion(self) -> None:
        answer = await self.chat()
        content = answer["choices"][0]["message"].get("content")
        expect(isinstance(content, str) and content, f"no text in the answer: {answer}")

    async def stream_says_the_same_as_chat(self) -> None:
        answer = await self.chat()
        chunks, usage = await self.stream()
        expect(chunks, "the stream yielded no chunk")
        expect(chunks[0]["choices"][0]["delta"].get("role") == "assistant", "role comes first")
        said = answer["choices"][0]["message"]["content"]
        expect(self.text(chunks) == said, f"streamed {self.text(chunks)!r}, chat said {said!r}")
        finishes = [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]]
        expect(finishes[-1] in FINISH_REASONS, f"the last choice has no finish_reason: {finishes}")
        expect(not any(finishes[:-1]), f"a finish_reason before the end: {finishes}")
        expect(usage is not None, "ChatStream.usage is set once the stream has ended")

    async def stream_ends_with_usage_only_when_asked(self) -> None:
        without, _ = await self.stream()
        expect(all(c["choices"] for c in without), "a usage chunk though include_usage was off")
        chunks, usage = await self.stream(include_usage=True)
        last = chunks[-1]
        expect(last["choices"] == [] and last.get("usage"), f"no final usage chunk: {last}")
        expect(
            usage is not None and last["usage"]["total_tokens"] == usage.total_tokens,
            f"the usage chunk {last['usage']} differs from ChatStream.usage {usage}",
        )

    async def models_are_listed_or_unsupported(self) -> None:
        async with self.open_adapter(None) as adapter:
            try:
                models = await adapter.list_models()
            except UpstreamUnsupported:
                return  # the default: the type has no model list
        expect(all(isinstance(m, str) and m for m in models), f"model ids: {models!r}")

    async def embeddings_are_vectors(self) -> None:
        body = {"model": self.model, "input": ["one two", "three"], "encoding_format": "float"}
        async with self.open_adapter(None) as adapter:
            reply = await adapter.embeddings(body, self.upstream_model)
        answer = orjson.loads(reply.body)
        expect(answer.get("object") == "list", f"not an embeddings list: {answer}")
        expect(answer.get("model") in self.answer_models(), f"model {answer.get('model')!r}")
        vectors = [item["embedding"] for item in answer["data"]]
        expect(len(vectors) == 2, f"{len(vectors)} embeddings for 2 inputs")
        expect(all(v and all(isinstance(x, float) for x in v) for v in vectors), "float vectors")
        expect([item["index"] for item in answer["data"]] == [0, 1], "indexes in input order")

    async def embeddings_refused(self) -> None:
        body = {"model": self.model, "input": "one two"}
        async with self.open_adapter(None) as adapter:
            try:
                await adapter.embeddings(body, self.upstream_model)
            except UpstreamError as exc:
                # Unsupported: the router tries a provider that can.
                expect(exc.retryable, f"not retryable elsewhere: {exc!r}")
                return
        raise ContractBroken("embeddings answered though the contract says unsupported")

    async def a_required_tool_is_called(self) -> None:
        fields: dict[str, Any] = {
            "tools": [TOOL],
            "tool_choice": "required",
            "messages": self.tool_messages,
        }
        answer = await self.chat(**fields)
        choice = answer["choices"][0]
        expect(choice["finish_reason"] == "tool_calls", f"finish_reason: {choice}")
        call = choice["message"]["tool_calls"][0]
        expect(call["type"] == "function" and call["id"], f"tool call: {call}")
        expect(call["function"]["name"] == "get_weather", f"tool call: {call}")
        expect(isinstance(orjson.loads(call["function"]["arguments"]), dict), "JSON arguments")
        chunks, _ = await self.stream(**fields)
        calls = [
            tc
            for c in chunks
            if c["choices"]
            for tc in c["choices"][0]["delta"].get("tool_calls") or []
        ]
        expect(calls and calls[0]["index"] == 0 and calls[0]["id"], f"streamed calls: {calls}")
        expect(calls[0]["function"]["name"] == "get_weather", f"streamed calls: {calls}")
        finishes = [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]]
        expect(finishes[-1] == "tool_calls", f"streamed finish_reason: {finishes}")

    async def max_tokens_cuts_with_length(self) -> None:
        answer = await self.chat(max_tokens=2)
        expect(answer["choices"][0]["finish_reason"] == "length", f"cut answer: {answer}")
        expect(answer["usage"]["completion_tokens"] <= 2, f"usage: {answer['usage']}")

    async def an_upstream_error_is_a_status_error(self) -> None:
        calls: list[tuple[int, Callable[[str], Awaitable[object]]]] = [
            (429, self.chat),
            (503, self.chat),
            (503, self.stream),
        ]
        for status, call in calls:
            try:
                await call(f"status:{status}")
            except UpstreamStatusError as exc:
                expect(exc.status_code == status and exc.retryable, f"{status}: {exc!r}")
                error = orjson.loads(exc.body).get("error")
                expect(
                    isinstance(error, dict) and error.get("message"),
                    f"not OpenAI's shape: {exc.body!r}",
                )
                continue
            raise ContractBroken(f"an upstream {status} was answered as a success")

    async def a_client_error_is_not_retried(self) -> None:
        try:
            await self.chat("status:400")
        except UpstreamStatusError as exc:
            expect(exc.status_code == 400 and not exc.retryable, f"400: {exc!r}")
            return
        raise ContractBroken("an upstream 400 was answered as a success")

    async def a_broken_stream_raises(self) -> None:
        await self._stream_must_break("disconnect")

    async def a_truncated_stream_raises(self) -> None:
        await self._stream_must_break("truncate")

    async def _stream_must_break(self, fault: str) -> None:
        try:
            await self.stream(fault)
        except UpstreamProtocolError:
            return
        raise ContractBroken(f"a stream that broke off ({fault}) ended as if complete")


@contextlib.asynccontextmanager
async def opened(adapter: Adapter) -> AsyncIterator[Adapter]:
    """``adapter`` as an :data:`OpenAdapter` yields it: closed on the way out."""
    try:
        yield adapter
    finally:
        await adapter.aclose()
