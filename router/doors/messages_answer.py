"""OpenAI chat answers rendered as Anthropic Messages answers and event streams (pure).

The stream grammar is a contract (docs/claude-code.md): ``message_start`` first, then each
content block as ``content_block_start``, its deltas and ``content_block_stop``, never two open
at once, indices from 0; then ``message_delta`` (stop reason, usage) and ``message_stop``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from providers.base import ChatStream, Usage
from router.errors import UpstreamProtocolError, UpstreamStatusError

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def stop_reason(finish: Any, matched: Any, stops: list[str]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for a chat finish reason.

    OpenAI does not say which stop sequence ended an answer; vLLM (``stop_reason``) and SGLang
    (``matched_stop``) do, and a match with the request's sequences is reported as one.
    """
    if finish == "stop" and isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn", None


def usage_fields(usage: Usage | None, cached: int | None = None) -> dict[str, int]:
    """Anthropic's usage: input_tokens excludes the cached tokens it reports apart."""
    prompt = (usage.prompt_tokens if usage else None) or 0
    out = {"input_tokens": prompt, "output_tokens": (usage.completion_tokens if usage else 0) or 0}
    if cached:
        out["input_tokens"] = max(0, prompt - cached)
        out["cache_read_input_tokens"] = cached
    return out


def _cached_tokens(usage: Any) -> int | None:
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    value = details.get("cached_tokens") if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def mid_stream_error(error: Any) -> UpstreamStatusError:
    """An OpenAI-compatible server's error chunk (vLLM, OpenRouter and others send one when
    they fail mid-answer, often followed by ``[DONE]``): the stream failed, however it ends.
    Its numeric ``code``, when it has one, is the status the error is reported with."""
    found = error if isinstance(error, dict) else {"message": str(error)}
    code = found.get("code")
    status = code if type(code) is int and 400 <= code <= 599 else 500
    message = str(found.get("message") or "no message")[:300]
    return UpstreamStatusError(
        f"The upstream reported an error mid-stream (HTTP {status}): {message}",
        status_code=status,
        body=orjson.dumps({"error": found}),
    )


def chat_chunks(block: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects in the ``data:`` lines of one block of a chat-completions stream
    (``[DONE]`` and blank data skipped); a line that is not JSON fails the stream."""
    for line in block.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]" or not data:
            continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError("The upstream sent a chunk that is not JSON.") from exc
        if isinstance(chunk, dict):
            yield chunk


def _tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as the ``input`` object; kept whole if not an object."""
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"arguments": arguments}


def message_from_completion(data: dict[str, Any], model: str, stops: list[str]) -> bytes:
    """A whole ``chat.completion`` as a Messages ``message`` object, serialised."""
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    found = choice.get("message")
    message: dict[str, Any] = found if isinstance(found, dict) else {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or "toolu_" + secrets.token_hex(12)),
                "name": str(function.get("name", "")),
                "input": _tool_input(function.get("arguments")),
            }
        )
    reason, sequence = stop_reason(
        choice.get("finish_reason"), choice.get("stop_reason") or choice.get("matched_stop"), stops
    )
    raw_usage = data.get("usage")
    answer = {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_fields(Usage.from_openai(raw_usage), _cached_tokens(raw_usage)),
    }
    return orjson.dumps(answer)


def event(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event as Anthropic writes them: ``event:`` line, then ``data:``."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessagesStream:
    """Renders one OpenAI chunk stream as Anthropic's event stream."""

    def __init__(self, inner: ChatStream, model: str, stops: list[str]) -> None:
        self.inner = inner
        self.model = model
        self.stops = stops
        self.index = -1  # the open block's index, or of the last closed one
        self.open: str | None = None  # "text", "thinking", "tool_use" or None
        self.tools: dict[int, int] = {}  # OpenAI tool call index -> block index
        self.finish: Any = None
        self.matched: Any = None
        self.cached: int | None = None

    def chat_stream(self) -> ChatStream:
        """The rendered stream; its ``usage`` is the inner stream's, for the history."""
        outer = ChatStream()
        outer.events = self._events(outer)
        return outer

    async def _events(self, outer: ChatStream) -> AsyncIterator[bytes]:
        start: dict[str, Any] = {
            "id": message_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        # At once, before the upstream's first token (clients show progress from here).
        yield event("message_start", {"type": "message_start", "message": start})
        try:
            async for block in self.inner:
                out = self._block(block)
                outer.usage = self.inner.usage
                if out:
                    yield out
            outer.usage = self.inner.usage
            yield self._finish()
        finally:
            outer.usage = self.inner.usage
            await self.inner.aclose()

    def _block(self, block: bytes) -> bytes:
        out: list[bytes] = []
        for chunk in chat_chunks(block):
            self._chunk(chunk, out)
        return b"".join(out)

    def _chunk(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        if chunk.get("error"):
            raise mid_stream_error(chunk["error"])
        cached = _cached_tokens(chunk.get("usage"))
        if cached is not None:
            self.cached = cached
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._open("thinking", {"type": "thinking", "thinking": ""}, out)
                self._delta({"type": "thinking_delta", "thinking": reasoning}, out)
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._open("text", {"type": "text", "text": ""}, out)
                self._delta({"type": "text_delta", "text": text}, out)
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    self._tool_call(call, out)
        if choice.get("finish_reason") is not None:
            self.finish = choice["finish_reason"]
            self.matched = choice.get("stop_reason") or choice.get("matched_stop")

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        position = call.get("index", 0)
        found = call.get("function")
        function: dict[str, Any] = found if isinstance(found, dict) else {}
        arguments = function.get("arguments")
        if position not in self.tools:
            block = {
                "type": "tool_use",
                "id": str(call.get("id") or "toolu_" + secrets.token_hex(12)),
                "name": str(function.get("name") or ""),
                "input": {},
            }
            self._close(out)
            self._open("tool_use", block, out)
            self.tools[position] = self.index
        elif self.tools[position] != self.index or self.open != "tool_use":
            # Blocks may not overlap, and a closed block cannot take more input.
            raise UpstreamProtocolError(
                "The upstream interleaved the arguments of parallel tool calls."
            )
        if isinstance(arguments, str) and arguments:
            self._delta({"type": "input_json_delta", "partial_json": arguments}, out)

    def _open(self, kind: str, block: dict[str, Any], out: list[bytes]) -> None:
        if self.open == kind and kind != "tool_use":
            return
        self._close(out)
        self.index += 1
        self.open = kind
        start = {"type": "content_block_start", "index": self.index, "content_block": block}
        out.append(event("content_block_start", start))

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        data = {"type": "content_block_delta", "index": self.index, "delta": delta}
        out.append(event("content_block_delta", data))

    def _close(self, out: list[bytes]) -> None:
        if self.open is not None:
            stop = {"type": "content_block_stop", "index": self.index}
            out.append(event("content_block_stop", stop))
            self.open = None

    def _finish(self) -> bytes:
        out: list[bytes] = []
        self._close(out)
        reason, sequence = stop_reason(self.finish, self.matched, self.stops)
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        usage = usage_fields(self.inner.usage, self.cached)
        out.append(
            event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        )
        out.append(event("message_stop", {"type": "message_stop"}))
        return b"".join(out)
