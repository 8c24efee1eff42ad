"""Adapters for OpenAI-compatible servers: ``openai`` and ``lm-studio``.

The upstream already speaks our format, so answers pass through as bytes: a JSON body is parsed
only to read its usage, and a stream is split into events only to find the usage chunk and the
closing ``[DONE]``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import orjson

from providers.base import Adapter, AdapterOptions, ChatStream, ConfigKey, Reply, Usage
from providers.http import (
    HTTP_CONFIG_KEYS,
    client_from_config,
    http_config_problems,
    open_stream,
    status_error,
    translate_httpx_error,
)
from router.errors import UpstreamProtocolError

_DONE = b"data: [DONE]"
RESPONSES_DIALECT = "openai.responses"
# The events that end a Responses stream; the one that ends it well carries the usage.
_RESPONSES_END = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')


class OpenAIAdapter(Adapter):
    """Any server that speaks the OpenAI API (OpenAI itself, vLLM, llama.cpp, LiteLLM, ...)."""

    type = "openai"
    default_base_url: ClassVar[str | None] = None
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "baseURL": ConfigKey(str, required=True, description="e.g. https://api.openai.com/v1"),
        "apiKey": ConfigKey(str, sensitive=True, description="sent as 'Authorization: Bearer'"),
        "timeout": ConfigKey(int, description="read timeout in milliseconds"),
        "headers": ConfigKey(dict, sensitive=True, description="extra headers for every call"),
        "responsesAPI": ConfigKey(
            bool,
            description="the upstream serves POST /responses itself: Responses requests pass "
            "through untranslated",
        ),
        **HTTP_CONFIG_KEYS,
    }

    @classmethod
    def needs_api_key(cls, config: Mapping[str, Any]) -> bool:
        # Local OpenAI-compatible servers take no key; OpenAI itself refuses every call without.
        base_url = str(config.get("baseURL") or cls.default_base_url or "")
        return urlsplit(base_url).hostname == "api.openai.com"

    def __init__(self, provider_id: str, config: Mapping[str, Any], options: AdapterOptions):
        super().__init__(provider_id, config, options)
        if config.get("responsesAPI") is True:
            self.native_dialects = frozenset({RESPONSES_DIALECT})
        base_url = str(config.get("baseURL") or self.default_base_url or "")
        auth = {"authorization": f"Bearer {config['apiKey']}"} if config.get("apiKey") else {}
        self._client = client_from_config(config, options, base_url, auth)

    @classmethod
    def validate_config(cls, config: Mapping[str, Any], *, partial: bool = False) -> list[str]:
        return super().validate_config(config, partial=partial) + http_config_problems(config)

    def _payload(self, body: dict[str, Any], upstream_model: str, **extra: Any) -> bytes:
        if body.get("model") != upstream_model or extra:
            body = {**body, "model": upstream_model, **extra}
        return orjson.dumps(body)

    async def _post(self, path: str, payload: bytes) -> Reply:
        try:
            response = await self._client.post(path, payload)
        except httpx.HTTPError as exc:
            raise translate_httpx_error(self.provider_id, exc) from exc
        if response.status_code >= 400:
            raise status_error(self.provider_id, response, response.content)
        body = response.content
        try:
            usage = Usage.from_openai(orjson.loads(body).get("usage"))
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} answered HTTP {response.status_code} "
                "with a body that is not a JSON object."
            ) from exc
        return Reply(body, usage, response.status_code)

    async def chat(self, body: dict[str, Any], upstream_model: str) -> Reply:
        return await self._post("/chat/completions", self._payload(body, upstream_model))

    async def embeddings(self, body: dict[str, Any], upstream_model: str) -> Reply:
        return await self._post("/embeddings", self._payload(body, upstream_model))

    async def list_models(self) -> list[str]:
        try:
            response = await self._client.get("/models")
        except httpx.HTTPError as exc:
            raise translate_httpx_error(self.provider_id, exc) from exc
        if response.status_code >= 400:
            raise status_error(self.provider_id, response, response.content)
        try:
            data = orjson.loads(response.content).get("data")
            return [str(item["id"]) for item in data]
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} answered its model list with an unexpected body."
            ) from exc

    async def chat_stream(
        self, body: dict[str, Any], upstream_model: str, *, include_usage: bool
    ) -> ChatStream:
        # Always ask for usage so the record has it; the client sees it only if it asked.
        stream_options = {**(body.get("stream_options") or {}), "include_usage": True}
        payload = self._payload(body, upstream_model, stream_options=stream_options)
        response = await open_stream(
            self._client,
            self.provider_id,
            "/chat/completions",
            payload,
            functools.partial(status_error, self.provider_id),
        )
        stream = ChatStream()
        stream.events = self._relay(response, include_usage, stream)
        return stream

    async def _relay(
        self, response: httpx.Response, include_usage: bool, stream: ChatStream
    ) -> AsyncIterator[bytes]:
        pending = bytearray()  # the start of an event whose end has not arrived yet
        try:
            async for chunk in response.aiter_bytes():
                if not pending and chunk.endswith(b"\n\n") and b"\r" not in chunk:
                    block = chunk  # the common case: whole events, nothing copied
                else:
                    if b"\r" in chunk or pending.endswith(b"\r"):
                        if pending.endswith(b"\r"):  # the first half of a CRLF, held last time
                            del pending[-1:]
                            chunk = b"\r" + chunk
                        chunk = chunk.replace(b"\r\n", b"\n")
                    # Only the new bytes (and the one before them) can complete an event:
                    # searching just those keeps a long event linear, not quadratic.
                    start = max(0, len(pending) - 1)
                    pending += chunk
                    cut = pending.rfind(b"\n\n", start)
                    if cut < 0:
                        continue
                    block = bytes(pending[: cut + 2])
                    del pending[: cut + 2]
                if b"[DONE]" not in block and b'"usage"' not in block:
                    yield block
                    continue
                kept, done = self._inspect(block, include_usage, stream)
                if kept:
                    yield kept
                if done:
                    return
        except httpx.HTTPError as exc:
            raise translate_httpx_error(self.provider_id, exc) from exc
        finally:
            await response.aclose()
        raise UpstreamProtocolError(
            f"Provider {self.provider_id!r} ended its stream without 'data: [DONE]'."
        )

    def _inspect(self, block: bytes, include_usage: bool, stream: ChatStream) -> tuple[bytes, bool]:
        """Look at each event of a block that mentions usage or [DONE]; drop what must go."""
        kept: list[bytes] = []
        for event in block.split(b"\n\n"):
            if not event:
                continue
            if event.strip() == _DONE:
                return b"".join(kept), True
            if b'"usage"' in event and b'"usage":null' not in event.replace(b" ", b""):
                data = event.partition(b"data:")[2]
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    chunk = None
                if isinstance(chunk, dict):
                    stream.usage = Usage.from_openai(chunk.get("usage")) or stream.usage
                    if not include_usage and not chunk.get("choices"):
                        continue
            kept.append(event + b"\n\n")
        return b"".join(kept), False

    async def send_native(
        self,
        dialect: str,
        body: dict[str, Any],
        upstream_model: str,
        headers: Mapping[str, str],
        *,
        stream: bool,
    ) -> Reply | ChatStream:
        """A Responses request passed through: only ``model`` replaced, nothing added (no
        ``stream_options``: OpenAI's Responses API and Azure's refuse it)."""
        if dialect != RESPONSES_DIALECT or RESPONSES_DIALECT not in self.native_dialects:
            return await super().send_native(dialect, body, upstream_model, headers, stream=stream)
        payload = self._payload(body, upstream_model)
        if not stream:
            reply = await self._post("/responses", payload)
            reply.usage = _responses_usage(orjson.loads(reply.body).get("usage"))
            return reply
        response = await open_stream(
            self._client,
            self.provider_id,
            "/responses",
            payload,
            functools.partial(status_error, self.provider_id),
        )
        native = ChatStream()
        native.events = self._relay_responses(response, native)
        return native

    async def _relay_responses(
        self, response: httpx.Response, stream: ChatStream
    ) -> AsyncIterator[bytes]:
        """A Responses event stream byte for byte, read only at its terminal event (usage)."""
        pending = b""
        try:
            async for chunk in response.aiter_bytes():
                pending += chunk
                if b"\r" in pending:
                    pending = pending.replace(b"\r\n", b"\n")
                cut = pending.rfind(b"\n\n")
                if cut < 0:
                    continue
                block, pending = pending[: cut + 2], pending[cut + 2 :]
                if any(end in block for end in _RESPONSES_END):
                    for line in block.split(b"\n"):
                        if not line.startswith(b"data:"):
                            continue
                        try:
                            data = orjson.loads(line[5:])
                        except orjson.JSONDecodeError:
                            continue
                        found = data.get("response") if isinstance(data, dict) else None
                        if isinstance(found, dict):
                            stream.usage = _responses_usage(found.get("usage")) or stream.usage
                    yield block
                    return
                yield block
        except httpx.HTTPError as exc:
            raise translate_httpx_error(self.provider_id, exc) from exc
        finally:
            await response.aclose()
        raise UpstreamProtocolError(
            f"Provider {self.provider_id!r} ended its Responses stream without a terminal event."
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _responses_usage(data: Any) -> Usage | None:
    """A Responses ``usage`` object as the router's usage."""
    if not isinstance(data, dict):
        return None
    return Usage.from_openai(
        {
            "prompt_tokens": data.get("input_tokens"),
            "completion_tokens": data.get("output_tokens"),
            "total_tokens": data.get("total_tokens"),
        }
    )


class LMStudioAdapter(OpenAIAdapter):
    """LM Studio's local server: OpenAI-compatible, on localhost:1234 unless told otherwise."""

    type = "lm-studio"
    default_base_url = "http://localhost:1234/v1"
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        **OpenAIAdapter.config_keys,
        "baseURL": ConfigKey(
            str, default=default_base_url, description="default " + default_base_url
        ),
    }
