"""The ``ollama`` adapter: Ollama's native API (``/api/chat``, ``/api/embed``, ``/api/tags``).

Ollama also serves an OpenAI-compatible ``/v1`` that the ``openai`` type can use as it is; this
adapter speaks the native API, which is what an Ollama behind an authenticating proxy often
exposes alone, and which carries ``keep_alive``. The translation both ways lives in
:mod:`providers.ollama.convert`; this module sends requests and reads answers and streams.

Ollama streams newline-delimited JSON: one object per line, the last one with ``"done": true``
and the token counts. A stream without that line, or with an ``{"error": ...}`` line, failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import httpx
import orjson

from providers.base import Adapter, AdapterOptions, ChatStream, ConfigKey, Reply
from providers.http import (
    HTTP_CONFIG_KEYS,
    call_json,
    client_from_config,
    http_config_problems,
    open_stream,
    retry_after_seconds,
)
from providers.ollama import convert as fmt
from providers.translate import ChunkWriter, completion_body, ndjson_lines, translating
from router.errors import UpstreamProtocolError, UpstreamStatusError

DEFAULT_BASE_URL = "http://localhost:11434"


class OllamaAdapter(Adapter):
    """An Ollama server, reached through its native API."""

    type = "ollama"
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "baseURL": ConfigKey(
            str, default=DEFAULT_BASE_URL, description=f"default {DEFAULT_BASE_URL} (no /api)"
        ),
        "apiKey": ConfigKey(
            str, sensitive=True, description="optional; sent as 'Authorization: Bearer'"
        ),
        "timeout": ConfigKey(int, description="read timeout in milliseconds"),
        "headers": ConfigKey(
            dict, sensitive=True, description="extra headers, e.g. for an auth proxy"
        ),
        **HTTP_CONFIG_KEYS,
        "keepAlive": ConfigKey(
            int,
            description="ms the model stays loaded after a request (Ollama keep_alive); "
            "0 unloads at once, a negative value keeps it loaded",
        ),
    }

    def __init__(self, provider_id: str, config: Mapping[str, Any], options: AdapterOptions):
        super().__init__(provider_id, config, options)
        base_url = str(config.get("baseURL") or DEFAULT_BASE_URL)
        auth = {"authorization": f"Bearer {config['apiKey']}"} if config.get("apiKey") else {}
        self._keep_alive = fmt.keep_alive(config.get("keepAlive"))
        self._client = client_from_config(config, options, base_url, auth)

    @classmethod
    def validate_config(cls, config: Mapping[str, Any], *, partial: bool = False) -> list[str]:
        return super().validate_config(config, partial=partial) + http_config_problems(config)

    # -- sending -----------------------------------------------------------------------------

    def _status_error(self, response: httpx.Response, body: bytes) -> UpstreamStatusError:
        status = response.status_code
        message = fmt.error_message(body) or f"HTTP {status} without an error message"
        return UpstreamStatusError(
            f"Provider {self.provider_id!r} answered HTTP {status}: {message[:300]}",
            status_code=status,
            body=fmt.openai_error_body(status, message),
            content_type="application/json",
            retry_after=retry_after_seconds(response),
        )

    async def _call(self, method: str, path: str, payload: bytes | None = None) -> Any:
        """Send a non-streamed request; return the answer's parsed JSON object."""
        data = await call_json(self._client, self.provider_id, path, payload, self._status_error)
        if "error" in data:
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} reported an error: "
                f"{fmt.error_text(data['error'])[:300]}"
            )
        return data

    # -- the adapter interface ---------------------------------------------------------------

    async def chat(self, body: dict[str, Any], upstream_model: str) -> Reply:
        with translating(self):
            request = fmt.chat_request(
                body, upstream_model, stream=False, keep_alive=self._keep_alive
            )
        data = await self._call("POST", "/api/chat", orjson.dumps(request))
        message = data.get("message")
        if not isinstance(message, dict):
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} answered /api/chat without a 'message' object."
            )
        tool_calls = fmt.openai_tool_calls(message.get("tool_calls"))
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        usage = fmt.usage(data)
        answer = completion_body(
            body["model"],
            content=None if tool_calls and not text else text,
            finish_reason=fmt.finish_reason(data.get("done_reason"), bool(tool_calls)),
            usage=usage,
            tool_calls=tool_calls,
        )
        return Reply(answer, usage)

    async def chat_stream(
        self, body: dict[str, Any], upstream_model: str, *, include_usage: bool
    ) -> ChatStream:
        with translating(self):
            request = fmt.chat_request(
                body, upstream_model, stream=True, keep_alive=self._keep_alive
            )
        response = await open_stream(
            self._client, self.provider_id, "/api/chat", orjson.dumps(request), self._status_error
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
        # The role chunk waits for the first line, so that a stream failing on its first line
        # fails before the client saw a byte and the router can still fall back.
        pending = [writer.role()]
        calls = 0
        lines = ndjson_lines(self.provider_id, response)
        try:
            async for line in lines:
                if not isinstance(line, dict):
                    raise UpstreamProtocolError(
                        f"Provider {self.provider_id!r} sent a stream line that is not an object."
                    )
                if "error" in line:
                    raise UpstreamProtocolError(
                        f"Provider {self.provider_id!r} reported an error mid-stream: "
                        f"{fmt.error_text(line['error'])[:300]}"
                    )
                message = line.get("message")
                if isinstance(message, dict):
                    content = message.get("content")
                    if isinstance(content, str) and content:
                        pending.append(writer.content(content))
                    for call in fmt.openai_tool_calls(message.get("tool_calls")):
                        function = call["function"]
                        pending.append(
                            writer.tool_call_start(
                                calls, call["id"], function["name"], function["arguments"]
                            )
                        )
                        calls += 1
                if line.get("done") is True:
                    usage = fmt.usage(line)
                    stream.usage = usage
                    pending.append(
                        writer.finish(fmt.finish_reason(line.get("done_reason"), calls > 0))
                    )
                    if include_usage:
                        pending.append(writer.usage(usage))
                    yield b"".join(pending)
                    return
                if pending:
                    yield b"".join(pending)
                    pending = []
        finally:
            close_lines = getattr(lines, "aclose", None)
            if close_lines is not None:
                await close_lines()
            await response.aclose()
        raise UpstreamProtocolError(
            f'Provider {self.provider_id!r} ended its stream without the final "done": true line.'
        )

    async def embeddings(self, body: dict[str, Any], upstream_model: str) -> Reply:
        with translating(self):
            request, encoding = fmt.embed_request(body, upstream_model, keep_alive=self._keep_alive)
        data = await self._call("POST", "/api/embed", orjson.dumps(request))
        answer, usage = fmt.embeddings_answer(self.provider_id, body, request, data, encoding)
        return Reply(answer, usage)

    async def list_models(self) -> list[str]:
        data = await self._call("GET", "/api/tags")
        models = data.get("models")
        if not isinstance(models, list):
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} answered /api/tags without a 'models' list."
            )
        names = []
        for model in models:
            name = model.get("name") or model.get("model") if isinstance(model, dict) else None
            if not isinstance(name, str):
                raise UpstreamProtocolError(
                    f"Provider {self.provider_id!r} listed a model without a name."
                )
            names.append(name)
        return names

    async def aclose(self) -> None:
        await self._client.aclose()
