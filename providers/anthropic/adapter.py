"""The ``anthropic`` provider type: Anthropic's Messages API behind the OpenAI chat API.

Requests go to ``POST /v1/messages`` with ``x-api-key`` and ``anthropic-version`` headers; the
translation both ways is in :mod:`providers.anthropic.convert`. A stream is read event by event
(``message_start``, ``content_block_start/delta/stop``, ``message_delta``, ``message_stop``,
``ping``, ``error``) and each event that carries something for the client is written as an
OpenAI chunk at once. A stream is complete only when ``message_stop`` arrives.

Errors arrive as ``{"type": "error", "error": {"type", "message"}}``, in a body or as an
``error`` event mid-stream; both become an OpenAI-shaped error whose ``code`` is Anthropic's
error type. 529 (overloaded) and 429 are retryable, so the router falls back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import orjson

from providers.anthropic.convert import (
    completion_from_message,
    finish_reason,
    make_usage,
    messages_request,
    output_tokens,
    prompt_tokens,
)
from providers.base import Adapter, AdapterOptions, ChatStream, ConfigKey, Reply
from providers.http import (
    HTTP_CONFIG_KEYS,
    client_from_config,
    http_config_problems,
    retry_after_seconds,
    translate_httpx_error,
)
from providers.translate import ChunkWriter, sse_events, translating
from router.errors import (
    UpstreamProtocolError,
    UpstreamStatusError,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
_MODEL_PAGES = 20  # 1000 models a page: far more than Anthropic lists

# The status each Anthropic error type comes with; used for errors sent as stream events.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_OPENAI_TYPE = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "billing_error": "insufficient_quota",
    "rate_limit_error": "rate_limit_error",
}


def upstream_error(
    provider_id: str,
    status: int,
    error_type: str | None,
    message: str,
    retry_after: float | None = None,
) -> UpstreamStatusError:
    """An Anthropic error as an UpstreamStatusError whose body is in OpenAI's shape.

    With no ``error_type`` the upstream's body was not an Anthropic error: ``message`` is then
    a snippet of it, kept for the attempt record, and the client gets a sentence instead.
    """
    if error_type in _OPENAI_TYPE:
        openai_type = _OPENAI_TYPE[error_type]
    else:
        openai_type = "server_error" if status >= 500 else "invalid_request_error"
    text = message if error_type else ""
    text = text or f"Provider {provider_id!r} answered HTTP {status} without an Anthropic error."
    body = {"error": {"message": text, "type": openai_type, "param": None, "code": error_type}}
    detail = f" ({error_type}): {message[:300]}" if error_type else f": {message[:200]}"
    return UpstreamStatusError(
        f"Provider {provider_id!r} answered HTTP {status}{detail}".removesuffix(": "),
        status_code=status,
        body=orjson.dumps(body),
        content_type="application/json",
        retry_after=retry_after,
    )


def _anthropic_error(data: Any) -> tuple[str | None, str]:
    """(error type, message) of an Anthropic error object, or (None, "")."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, ""
    kind = error.get("type")
    message = error.get("message")
    return (kind if isinstance(kind, str) else None), (message if isinstance(message, str) else "")


class AnthropicAdapter(Adapter):
    """Anthropic's Messages API (api.anthropic.com, or a server that speaks it)."""

    type = "anthropic"
    requires_api_key = True
    # Messages requests (and token counts) from the Messages front door pass through as they are.
    native_dialects = frozenset({"anthropic.messages", "anthropic.messages.count_tokens"})
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "baseURL": ConfigKey(
            str, default=DEFAULT_BASE_URL, description=f"default {DEFAULT_BASE_URL}"
        ),
        "apiKey": ConfigKey(str, sensitive=True, description="sent as 'x-api-key'"),
        "anthropicVersion": ConfigKey(
            str, default=DEFAULT_VERSION, description="the 'anthropic-version' header"
        ),
        "defaultMaxTokens": ConfigKey(
            int,
            default=DEFAULT_MAX_TOKENS,
            description="max_tokens when the client gives neither max_tokens nor "
            "max_completion_tokens (Anthropic requires one)",
        ),
        "timeout": ConfigKey(int, description="read timeout in milliseconds"),
        "headers": ConfigKey(dict, sensitive=True, description="extra headers for every call"),
        **HTTP_CONFIG_KEYS,
    }

    def __init__(self, provider_id: str, config: Mapping[str, Any], options: AdapterOptions):
        super().__init__(provider_id, config, options)
        # The paths carry /v1 (as in Anthropic's SDKs); accept a base URL written OpenAI-style.
        base_url = str(config.get("baseURL") or DEFAULT_BASE_URL).rstrip("/").removesuffix("/v1")
        headers = {"anthropic-version": str(config.get("anthropicVersion") or DEFAULT_VERSION)}
        if config.get("apiKey"):
            headers["x-api-key"] = str(config["apiKey"])
        self.default_max_tokens = int(config.get("defaultMaxTokens") or DEFAULT_MAX_TOKENS)
        self._client = client_from_config(config, options, base_url, headers)

    @classmethod
    def validate_config(cls, config: Mapping[str, Any], *, partial: bool = False) -> list[str]:
        problems = super().validate_config(config, partial=partial)
        problems += http_config_problems(config)
        value = config.get("defaultMaxTokens")
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            problems.append(f"Config key 'defaultMaxTokens' must be > 0, got {value}.")
        version = config.get("anthropicVersion")
        if isinstance(version, str) and not version.strip():
            problems.append("Config key 'anthropicVersion' must not be empty.")
        return problems

    def _payload(self, body: dict[str, Any], upstream_model: str, **extra: Any) -> bytes:
        with translating(self):
            request = messages_request(body, upstream_model, self.default_max_tokens)
        request.update(extra)
        return orjson.dumps(request)

    async def _send(
        self, request: httpx.Request, *, stream: bool = False, native: bool = False
    ) -> httpx.Response:
        """Send ``request``; raise the translated error for a status >= 400 (with Anthropic's
        own body when ``native``: the client speaks Messages too)."""
        try:
            response = await self._client.send(request, stream=stream)
            if response.status_code < 400:
                return response
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise translate_httpx_error(self.provider_id, exc) from exc
        try:
            error_type, message = _anthropic_error(orjson.loads(raw))
        except orjson.JSONDecodeError:
            error_type, message = None, ""
        if error_type is None:
            message = raw[:200].decode("utf-8", "replace")
        if native:
            raise UpstreamStatusError(
                f"Provider {self.provider_id!r} answered HTTP {response.status_code}"
                + (f" ({error_type}): {message[:300]}" if error_type else f": {message}"),
                status_code=response.status_code,
                body=raw,
                content_type=response.headers.get("content-type", "application/json"),
                retry_after=retry_after_seconds(response),
            )
        raise upstream_error(
            self.provider_id,
            response.status_code,
            error_type,
            message,
            retry_after_seconds(response),
        )

    def _json(self, raw: bytes, what: str) -> dict[str, Any]:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} answered {what} with a body that is not a JSON "
                "object."
            )
        return data

    async def chat(self, body: dict[str, Any], upstream_model: str) -> Reply:
        request = self._client.build("POST", "/v1/messages", self._payload(body, upstream_model))
        response = await self._send(request)
        message = self._json(response.content, "a message")
        if message.get("type") != "message":
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} answered with a JSON object that is not an "
                "Anthropic message."
            )
        answer, usage = completion_from_message(message, body["model"])
        return Reply(answer, usage)

    async def chat_stream(
        self, body: dict[str, Any], upstream_model: str, *, include_usage: bool
    ) -> ChatStream:
        payload = self._payload(body, upstream_model, stream=True)
        response = await self._send(
            self._client.build("POST", "/v1/messages", payload), stream=True
        )
        stream = ChatStream()
        stream.events = self._relay(response, ChunkWriter(body["model"]), include_usage, stream)
        return stream

    async def _relay(
        self,
        response: httpx.Response,
        writer: ChunkWriter,
        include_usage: bool,
        stream: ChatStream,
    ) -> AsyncIterator[bytes]:
        # The role chunk waits for the first content, so an 'error' event (say overloaded)
        # that comes before any content still lets the router fall back.
        role_sent = False
        tool_index: dict[Any, int] = {}  # Anthropic content block index -> OpenAI tool index
        prompt: int | None = None
        completion: int | None = None
        stop_reason: Any = None
        try:
            async for name, data in sse_events(self.provider_id, response):
                event = self._event(data)
                kind = event.get("type") or name
                out: list[bytes] = []
                if kind == "message_start":
                    message = event.get("message")
                    usage = message.get("usage") if isinstance(message, dict) else None
                    prompt = prompt_tokens(usage)
                    completion = output_tokens(usage)
                    stream.usage = make_usage(prompt, completion)
                elif kind == "content_block_start":
                    out.extend(self._block_start(event, tool_index, writer))
                elif kind == "content_block_delta":
                    out.extend(self._delta(event, tool_index, writer))
                elif kind == "message_delta":
                    delta = event.get("delta")
                    if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                        stop_reason = delta["stop_reason"]
                    usage = event.get("usage")
                    prompt = prompt_tokens(usage) if prompt_tokens(usage) is not None else prompt
                    counted = output_tokens(usage)
                    completion = counted if counted is not None else completion
                    stream.usage = make_usage(prompt, completion)
                elif kind == "message_stop":
                    out.append(writer.finish(finish_reason(stop_reason)))
                    if include_usage and stream.usage is not None:
                        out.append(writer.usage(stream.usage))
                    yield (b"" if role_sent else writer.role()) + b"".join(out)
                    return
                elif kind == "error":
                    error_type, text = _anthropic_error(event)
                    status = ERROR_STATUS.get(error_type or "", 500)
                    raise upstream_error(self.provider_id, status, error_type, text)
                # ping, content_block_stop and event types added later carry nothing for us.
                if out:
                    if not role_sent:
                        out.insert(0, writer.role())
                        role_sent = True
                    yield b"".join(out)
        finally:
            await response.aclose()
        raise UpstreamProtocolError(
            f"Provider {self.provider_id!r} ended its stream without 'message_stop'."
        )

    def _event(self, data: bytes) -> dict[str, Any]:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} sent a stream event that is not a JSON object."
            )
        return event

    @staticmethod
    def _block_start(
        event: dict[str, Any], tool_index: dict[Any, int], writer: ChunkWriter
    ) -> list[bytes]:
        block = event.get("content_block")
        if not isinstance(block, dict):
            return []
        if block.get("type") == "tool_use":
            index = tool_index[event.get("index")] = len(tool_index)
            started = block.get("input")  # {} on the wire: the deltas carry the input
            arguments = orjson.dumps(started).decode() if started else ""
            call_id, name = str(block.get("id", "")), str(block.get("name", ""))
            return [writer.tool_call_start(index, call_id, name, arguments)]
        if block.get("type") == "text" and block.get("text"):
            return [writer.content(str(block["text"]))]
        return []

    @staticmethod
    def _delta(
        event: dict[str, Any], tool_index: dict[Any, int], writer: ChunkWriter
    ) -> list[bytes]:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return []
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [writer.content(str(delta["text"]))]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            index = tool_index.get(event.get("index"))
            if index is not None:
                return [writer.tool_call_arguments(index, str(delta["partial_json"]))]
        # thinking, signature and citation deltas have no place in an OpenAI chat answer.
        return []

    async def send_native(
        self,
        dialect: str,
        body: dict[str, Any],
        upstream_model: str,
        headers: Mapping[str, str],
        *,
        stream: bool,
    ) -> Reply | ChatStream:
        path = "/v1/messages/count_tokens" if dialect.endswith(".count_tokens") else "/v1/messages"
        payload = orjson.dumps({**body, "model": upstream_model})
        request = self._client.build("POST", path, payload, headers)
        response = await self._send(request, stream=stream, native=True)
        if not stream:
            message = self._json(response.content, "a message")
            usage = message.get("usage")
            reply_usage = make_usage(prompt_tokens(usage), output_tokens(usage))
            return Reply(response.content, reply_usage, response.status_code)
        native = ChatStream()
        native.events = self._relay_native(response, native)
        return native

    async def _relay_native(
        self, response: httpx.Response, stream: ChatStream
    ) -> AsyncIterator[bytes]:
        """The upstream's events byte for byte, read only for usage and the terminal event."""
        pending = b""
        prompt: int | None = None
        completion: int | None = None
        try:
            async for chunk in response.aiter_bytes():
                pending += chunk
                if b"\r" in pending:
                    pending = pending.replace(b"\r\n", b"\n")
                cut = pending.rfind(b"\n\n")
                if cut < 0:
                    continue
                block, pending = pending[: cut + 2], pending[cut + 2 :]
                if b"message_" not in block and b"error" not in block:
                    yield block  # content block events: nothing to read
                    continue
                kept: list[bytes] = []
                for raw in block.split(b"\n\n"):
                    if not raw:
                        continue
                    data = raw.partition(b"data:")[2]
                    event = self._event(data) if data else {}
                    kind = event.get("type")
                    if kind == "error":
                        if kept:
                            yield b"".join(kept)
                        error_type, text = _anthropic_error(event)
                        status = ERROR_STATUS.get(error_type or "", 500)
                        raise upstream_error(self.provider_id, status, error_type, text)
                    if kind in ("message_start", "message_delta"):
                        message = event.get("message")
                        usage = message.get("usage") if isinstance(message, dict) else None
                        usage = event.get("usage") if kind == "message_delta" else usage
                        if prompt_tokens(usage) is not None:
                            prompt = prompt_tokens(usage)
                        if output_tokens(usage) is not None:
                            completion = output_tokens(usage)
                        stream.usage = make_usage(prompt, completion)
                    kept.append(raw + b"\n\n")
                    if kind == "message_stop":
                        yield b"".join(kept)
                        return
                yield b"".join(kept)
        except httpx.HTTPError as exc:
            raise translate_httpx_error(self.provider_id, exc) from exc
        finally:
            await response.aclose()
        raise UpstreamProtocolError(
            f"Provider {self.provider_id!r} ended its stream without 'message_stop'."
        )

    async def list_models(self) -> list[str]:
        ids: list[str] = []
        path = "/v1/models?limit=1000"
        for _ in range(_MODEL_PAGES):
            response = await self._send(self._client.build("GET", path))
            page = self._json(response.content, "its model list")
            data = page.get("data")
            if not isinstance(data, list) or not all(
                isinstance(m, dict) and isinstance(m.get("id"), str) for m in data
            ):
                raise UpstreamProtocolError(
                    f"Provider {self.provider_id!r} answered its model list with an unexpected "
                    "body."
                )
            ids.extend(m["id"] for m in data)
            last = page.get("last_id")
            if page.get("has_more") is not True or not isinstance(last, str) or not data:
                break
            path = f"/v1/models?limit=1000&after_id={quote(last, safe='')}"
        return ids

    async def aclose(self) -> None:
        await self._client.aclose()
