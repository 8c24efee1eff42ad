"""OpenAI chat answers rendered as Responses objects and event streams (pure, no I/O).

The stream grammar is a contract (docs/codex.md, tests/doors/golden/responses_*.sse): every
frame is an ``event:`` line and a ``data:`` object with ``type`` and a rising
``sequence_number``; ``response.created`` and ``response.in_progress`` first; then each output
item as ``response.output_item.added``, its parts and deltas, ``response.output_item.done``,
never two open at once; then exactly one of ``response.completed``, ``response.incomplete`` (a
``length`` or ``content_filter`` finish) or ``response.failed``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from providers.base import ChatStream
from router.doors.messages_answer import chat_chunks, mid_stream_error
from router.doors.responses_request import arguments_text, item_id
from router.errors import UpstreamProtocolError

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# Echoed request fields: the response object repeats them as OpenAI's does.
ECHOED = (
    "instructions", "max_output_tokens", "metadata", "parallel_tool_calls",
    "previous_response_id", "reasoning", "store", "temperature", "text", "tool_choice", "tools",
    "top_p", "truncation", "user",
)  # fmt: skip
DEFAULTS: dict[str, Any] = {
    "instructions": None, "max_output_tokens": None, "metadata": {},
    "parallel_tool_calls": True, "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": None,
    "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": None,
    "truncation": "disabled", "user": None,
}  # fmt: skip


def response_id() -> str:
    return item_id("resp")


def skeleton(response_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The response object before any output: ``status: in_progress``, the request echoed."""
    found: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": body["model"],
        "output": [],
        "usage": None,
    }
    for key in ECHOED:
        value = body.get(key)
        found[key] = DEFAULTS[key] if value is None else value
    return found


def usage_object(usage: Any) -> dict[str, Any]:
    """Responses usage from a chat ``usage`` object; the details are there even when 0."""
    data = usage if isinstance(usage, dict) else {}

    def count(where: Any, key: str) -> int:
        value = where.get(key) if isinstance(where, dict) else None
        return value if type(value) is int and value >= 0 else 0

    prompt, completion = count(data, "prompt_tokens"), count(data, "completion_tokens")
    total = count(data, "total_tokens") or prompt + completion
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": count(data.get("prompt_tokens_details"), "cached_tokens")
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": count(data.get("completion_tokens_details"), "reasoning_tokens")
        },
        "total_tokens": total,
    }


def finish(response: dict[str, Any], reason: Any, usage: Any) -> dict[str, Any]:
    """``response`` ended: its status from the chat finish reason, and its usage."""
    incomplete = INCOMPLETE.get(reason) if isinstance(reason, str) else None
    response["status"] = "incomplete" if incomplete else "completed"
    response["incomplete_details"] = {"reason": incomplete} if incomplete else None
    response["usage"] = usage_object(usage)
    return response


def text_item(
    text: str, status: str = "completed", found: str | None = None, *, refusal: bool = False
) -> dict[str, Any]:
    """An assistant message item with one ``output_text`` part (or ``refusal`` part)."""
    part: dict[str, Any] = (
        {"type": "refusal", "refusal": text}
        if refusal
        else {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    )
    return {
        "id": found or item_id("msg"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [part],
    }


def reasoning_item(text: str, found: str | None = None) -> dict[str, Any]:
    return {
        "id": found or item_id("rs"),
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    found = call.get("function")
    function: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "id": item_id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": str(call.get("id") or item_id("call")),
        "name": str(function.get("name") or ""),
        "arguments": arguments_text(function.get("arguments")),
    }


def response_from_completion(data: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """A whole ``chat.completion`` as the finished ``response`` (its skeleton filled in)."""
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    found = choice.get("message")
    message: dict[str, Any] = found if isinstance(found, dict) else {}
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(reasoning))
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(text_item(text))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        output.append(text_item(refusal, refusal=True))
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict):
            output.append(call_item(call))
    response["output"] = output
    return finish(response, choice.get("finish_reason"), data.get("usage"))


def event(data: dict[str, Any]) -> bytes:
    """One server-sent event as OpenAI writes them: ``event:`` line (the type), then ``data:``."""
    kind: str = data["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ResponsesStream:
    """Renders one OpenAI chunk stream as the Responses event stream.

    ``on_done`` gets the finished response object (completed or incomplete) before the last
    event goes out, so that it is stored by the time the client has read it.
    """

    def __init__(
        self,
        inner: ChatStream,
        response: dict[str, Any],
        on_done: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.inner = inner
        self.response = response
        self.on_done = on_done
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the output item being streamed
        self.tools: dict[Any, dict[str, Any]] = {}  # chat tool call index -> its item
        self.finish: Any = None
        self.usage: Any = None

    def chat_stream(self) -> ChatStream:
        """The rendered stream; its ``usage`` is the inner stream's, for the history."""
        outer = ChatStream()
        outer.events = self._events(outer)
        return outer

    def frame(self, data: dict[str, Any]) -> bytes:
        data["sequence_number"] = self.sequence
        self.sequence += 1
        return event(data)

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress``, once."""
        self.started = True
        created = self.frame({"type": "response.created", "response": self.response})
        return created + self.frame({"type": "response.in_progress", "response": self.response})

    async def _events(self, outer: ChatStream) -> AsyncIterator[bytes]:
        try:
            async for block in self.inner:
                # Sent with the upstream's first block, so a stream that dies before its first
                # chunk can still fall back to the next provider (this renderer goes with it).
                head = b"" if self.started else self.start()
                out = head + self._block(block)
                outer.usage = self.inner.usage
                if out:
                    yield out
            outer.usage = self.inner.usage
            yield (b"" if self.started else self.start()) + self._finish()
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
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._reasoning(reasoning, out)
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._text(text, out)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._text(refusal, out, refusal=True)
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    self._tool_call(call, out)
        if choice.get("finish_reason") is not None:
            self.finish = choice["finish_reason"]

    def _added(self, item: dict[str, Any], out: list[bytes]) -> int:
        self._close(out)
        self.open = item
        self.output.append(item)
        index = len(self.output) - 1
        added = {"type": "response.output_item.added", "output_index": index, "item": item}
        out.append(self.frame(added))
        return index

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        item = self.open
        if item is None or item["type"] != "reasoning":
            item = reasoning_item("")
            self._added(item, out)
        part = item["content"][0]
        part["text"] += text
        delta = {
            "type": "response.reasoning_text.delta",
            "item_id": item["id"],
            "output_index": len(self.output) - 1,
            "content_index": 0,
            "delta": text,
        }
        out.append(self.frame(delta))

    def _text(self, text: str, out: list[bytes], *, refusal: bool = False) -> None:
        kind = "refusal" if refusal else "output_text"
        item = self.open
        index = len(self.output) - 1
        if item is None or item["type"] != "message" or item["content"][0]["type"] != kind:
            item = text_item("", "in_progress", refusal=refusal)
            part = item["content"].pop()
            index = self._added(item, out)
            added = {
                "type": "response.content_part.added",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "part": dict(part),
            }
            out.append(self.frame(added))
            item["content"].append(part)
        delta: dict[str, Any] = {
            "type": f"response.{kind}.delta",
            "item_id": item["id"],
            "output_index": index,
            "content_index": 0,
            "delta": text,
        }
        if refusal:
            item["content"][0]["refusal"] += text
        else:
            item["content"][0]["text"] += text
            delta["logprobs"] = []
        out.append(self.frame(delta))

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        position = call.get("index", 0)
        found = call.get("function")
        function: dict[str, Any] = found if isinstance(found, dict) else {}
        arguments = function.get("arguments")
        item = self.tools.get(position)
        if item is None:
            item = call_item(
                {"id": call.get("id"), "function": {"name": function.get("name"), "arguments": ""}},
                "in_progress",
            )
            self._added(item, out)
            self.tools[position] = item
        elif item is not self.open:
            # Output items may not overlap, and a finished item cannot take more arguments.
            raise UpstreamProtocolError(
                "The upstream interleaved the arguments of parallel tool calls."
            )
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            delta = {
                "type": "response.function_call_arguments.delta",
                "item_id": item["id"],
                "output_index": len(self.output) - 1,
                "delta": arguments,
            }
            out.append(self.frame(delta))

    def _close(self, out: list[bytes]) -> None:
        item = self.open
        if item is None:
            return
        self.open = None
        index = len(self.output) - 1
        common = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            part = item["content"][0]
            kind = part["type"]
            done = {"type": f"response.{kind}.done", **common, "content_index": 0}
            if kind == "refusal":
                done["refusal"] = part["refusal"]
            else:
                done |= {"text": part["text"], "logprobs": []}
            out.append(self.frame(done))
            out.append(
                self.frame(
                    {"type": "response.content_part.done", **common, "content_index": 0,
                     "part": dict(part)}
                )
            )  # fmt: skip
            item["status"] = "completed"
        elif item["type"] == "reasoning":
            text = item["content"][0]["text"]
            out.append(
                self.frame(
                    {"type": "response.reasoning_text.done", **common, "content_index": 0,
                     "text": text}
                )
            )  # fmt: skip
        else:
            out.append(
                self.frame(
                    {"type": "response.function_call_arguments.done", **common,
                     "name": item["name"], "arguments": item["arguments"]}
                )
            )  # fmt: skip
            item["status"] = "completed"
        done = {"type": "response.output_item.done", "output_index": index, "item": item}
        out.append(self.frame(done))

    def _finish(self) -> bytes:
        out: list[bytes] = []
        self._close(out)
        response = self.response
        response["output"] = self.output
        finish(response, self.finish, self.usage or _usage_dict(self.inner))
        if self.on_done is not None:
            self.on_done(response)
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        out.append(self.frame({"type": kind, "response": response}))
        return b"".join(out)

    def failed(self, message: str, code: str) -> bytes:
        """The last frames of a stream that broke off: open items closed as incomplete is not
        a thing OpenAI sends, so the partial output goes as it stands, with ``status: failed``."""
        out = b"" if self.started else self.start()
        response = self.response
        response["output"] = self.output
        response["status"] = "failed"
        response["error"] = {"code": code, "message": message}
        response["usage"] = usage_object(self.usage or _usage_dict(self.inner))
        return out + self.frame({"type": "response.failed", "response": response})


def _usage_dict(stream: ChatStream) -> dict[str, Any] | None:
    usage = stream.usage
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
