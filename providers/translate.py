"""Shared pieces for adapters whose upstream does not speak OpenAI's format.

Reading the upstream: :func:`sse_events` (Anthropic, Gemini) and :func:`ndjson_lines` (Ollama)
turn a streamed ``httpx.Response`` into parsed events as they arrive. Writing the client's side:
:class:`ChunkWriter` builds OpenAI ``chat.completion.chunk`` SSE events, and
:func:`completion_body` a whole ``chat.completion``. Also the small helpers every translation
needs: data URLs, message content as text, tool-call ids.

One convention for a request that cannot be translated: a ``convert.py`` raises
:class:`TranslationError` (it knows no provider id), and its adapter calls the converter inside
``with translating(self):``, which raises the router's error built by :func:`cannot_translate`.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
import orjson

from providers.base import Adapter, Usage
from providers.http import translate_httpx_error
from router.errors import (
    InvalidRequest,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnsupported,
)

__all__ = [
    "ChunkWriter",
    "TranslationError",
    "cannot_translate",
    "completion_body",
    "completion_id",
    "content_text",
    "ndjson_lines",
    "parse_data_url",
    "sse_events",
    "stop_list",
    "token_limit",
    "tool_call_id",
    "translating",
]


def cannot_translate(
    provider_id: str,
    type_name: str,
    message: str,
    param: str | None = None,
    *,
    unsupported: bool = False,
) -> UpstreamUnsupported | UpstreamStatusError:
    """The router's error for a request that provider ``provider_id`` cannot take.

    ``unsupported``: the request is valid OpenAI but this provider type cannot do it, so
    :class:`~router.errors.UpstreamUnsupported` (the router tries another provider). Otherwise the
    request itself is malformed: a 400 in OpenAI's shape for the client, never retried elsewhere.
    """
    text = f"Provider {provider_id!r} (type {type_name!r}) cannot take this request: {message}"
    if unsupported:
        return UpstreamUnsupported(text)
    body = InvalidRequest(message, param=param).body()
    return UpstreamStatusError(text, status_code=400, body=body)


class TranslationError(Exception):
    """A request that cannot be translated to the upstream's format; every ``convert.py`` raises it.

    ``param`` names the OpenAI field at fault; ``unsupported`` is True when the request is valid
    OpenAI that this provider type cannot serve (another may), False when it is malformed.

    Example, in an adapter::

        with translating(self):
            payload = convert.chat_request(body, upstream_model)
    """

    def __init__(self, message: str, param: str | None = None, *, unsupported: bool = False):
        super().__init__(message)
        self.message = message
        self.param = param
        self.unsupported = unsupported

    def for_provider(
        self, provider_id: str, type_name: str
    ) -> UpstreamUnsupported | UpstreamStatusError:
        """This error as the router raises it for provider ``provider_id`` (see
        :func:`cannot_translate`)."""
        return cannot_translate(
            provider_id, type_name, self.message, self.param, unsupported=self.unsupported
        )


@contextmanager
def translating(adapter: Adapter) -> Iterator[None]:
    """Turn a :class:`TranslationError` raised inside into ``adapter``'s router error."""
    try:
        yield
    except TranslationError as exc:
        raise exc.for_provider(adapter.provider_id, adapter.type) from None


def token_limit(body: Mapping[str, Any]) -> Any:
    """The answer's token limit: ``max_completion_tokens``, else the older ``max_tokens``."""
    limit = body.get("max_completion_tokens")
    return body.get("max_tokens") if limit is None else limit


def stop_list(stop: Any) -> list[Any] | None:
    """OpenAI's ``stop`` (a string or a list) as a list; None when absent, empty or malformed."""
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and stop:
        return stop
    return None


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def tool_call_id() -> str:
    """An OpenAI-style id for a tool call the upstream did not name."""
    return "call_" + secrets.token_hex(12)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:image/png;base64,AAAA`` -> ("image/png", "AAAA"); None for anything else."""
    if not url.startswith("data:"):
        return None
    meta, sep, data = url[5:].partition(",")
    if not sep or not meta.endswith(";base64"):
        return None
    media_type = meta[: -len(";base64")] or "application/octet-stream"
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return media_type, data


def content_text(content: Any) -> str:
    """The text of an OpenAI message content: a string, or the text parts of a list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return str(content)


async def sse_events(
    provider_id: str, response: httpx.Response
) -> AsyncIterator[tuple[str, bytes]]:
    """Yield ``(event, data)`` for each server-sent event of ``response`` as it arrives.

    ``event`` is "" when the event has no ``event:`` line; multi-line data is joined with "\\n".
    Comments and ids are skipped. httpx failures become ``Upstream*`` errors. Ending without
    an error is not proof the stream was complete: the caller checks for its terminal event.
    """
    pending = b""
    try:
        async for chunk in response.aiter_bytes():
            pending += chunk
            if b"\r" in pending:
                # A CR at the very end may be the first half of a CRLF: keep it for later.
                held = pending.endswith(b"\r")
                body = pending[:-1] if held else pending
                pending = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                if held:
                    pending += b"\r"
            while True:
                cut = pending.find(b"\n\n")
                if cut < 0:
                    break
                block, pending = pending[:cut], pending[cut + 2 :]
                event = ""
                data: list[bytes] = []
                for line in block.split(b"\n"):
                    field, _, value = line.partition(b":")
                    if value.startswith(b" "):
                        value = value[1:]
                    if field == b"event":
                        event = value.decode("utf-8", "replace")
                    elif field == b"data":
                        data.append(value)
                if data:
                    yield event, b"\n".join(data)
    except httpx.HTTPError as exc:
        raise translate_httpx_error(provider_id, exc) from exc


async def ndjson_lines(provider_id: str, response: httpx.Response) -> AsyncIterator[Any]:
    """Yield each JSON value of a newline-delimited JSON stream as it arrives."""
    pending = b""
    try:
        async for chunk in response.aiter_bytes():
            pending += chunk
            while True:
                cut = pending.find(b"\n")
                if cut < 0:
                    break
                line, pending = pending[:cut].strip(), pending[cut + 1 :]
                if line:
                    yield _loads_line(provider_id, line)
    except httpx.HTTPError as exc:
        raise translate_httpx_error(provider_id, exc) from exc
    if pending.strip():
        yield _loads_line(provider_id, pending.strip())


def _loads_line(provider_id: str, line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError(
            f"Provider {provider_id!r} sent a stream line that is not JSON."
        ) from exc


class ChunkWriter:
    """Builds the OpenAI ``chat.completion.chunk`` events of one streamed answer.

    Each method returns one complete SSE event (``data: {...}\\n\\n``) as bytes. The first
    event of a stream should be :meth:`role`; the router writes the final ``data: [DONE]``.
    """

    def __init__(self, model: str, *, id: str | None = None, created: int | None = None):
        self.id = id or completion_id()
        self.model = model
        self.created = int(time.time()) if created is None else created

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return self._event([{"index": 0, "delta": delta, "finish_reason": finish_reason}])

    def role(self) -> bytes:
        return self._delta({"role": "assistant", "content": ""})

    def content(self, text: str) -> bytes:
        return self._delta({"content": text})

    def tool_call_start(self, index: int, call_id: str, name: str, arguments: str = "") -> bytes:
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        return self._delta({"tool_calls": [call]})

    def tool_call_arguments(self, index: int, arguments: str) -> bytes:
        return self._delta({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})

    def finish(self, finish_reason: str) -> bytes:
        return self._delta({}, finish_reason)

    def usage(self, usage: Usage) -> bytes:
        """The usage chunk OpenAI sends last when ``stream_options.include_usage`` is set."""
        return self._event([], usage=_usage_dict(usage))


def _usage_dict(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    prompt = usage.prompt_tokens or 0
    completion = usage.completion_tokens or 0
    total = usage.total_tokens if usage.total_tokens is not None else prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def completion_body(
    model: str,
    *,
    content: str | None,
    finish_reason: str,
    usage: Usage | None,
    tool_calls: list[dict[str, Any]] | None = None,
    id: str | None = None,
    created: int | None = None,
) -> bytes:
    """A whole OpenAI ``chat.completion`` object, serialised.

    ``tool_calls`` are OpenAI tool calls: ``{"id", "type": "function", "function": {"name",
    "arguments": "<JSON string>"}}``.
    """
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    body = {
        "id": id or completion_id(),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": _usage_dict(usage),
    }
    return orjson.dumps(body)
