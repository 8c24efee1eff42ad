"""Provider type ``echo``: answers every chat with the client's last user message.

A complete provider-router adapter in one module, with no upstream to call, to show the
interface: ``chat`` returns a whole OpenAI ``chat.completion``; ``chat_stream`` returns a
``ChatStream`` whose events are OpenAI SSE chunks, role first, without the final ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from providers.base import Adapter, ChatStream, ConfigKey, Reply, Usage
from providers.translate import ChunkWriter, completion_body, content_text


class EchoAdapter(Adapter):
    """Echoes the last user message, after the configured ``prefix``."""

    type = "echo"
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "prefix": ConfigKey(str, default="", description="text put before every answer"),
    }

    def _answer(self, body: dict[str, Any]) -> tuple[str, Usage]:
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        users = [m for m in messages if m.get("role") == "user"]
        last = content_text(users[-1].get("content")) if users else ""
        text = str(self.config.get("prefix") or "") + last
        prompt = sum(len(content_text(m.get("content")).split()) for m in messages)
        completion = len(text.split())
        return text, Usage(prompt, completion, prompt + completion)

    async def chat(self, body: dict[str, Any], upstream_model: str) -> Reply:
        text, usage = self._answer(body)
        answer = completion_body(body["model"], content=text, finish_reason="stop", usage=usage)
        return Reply(answer, usage)

    async def chat_stream(
        self, body: dict[str, Any], upstream_model: str, *, include_usage: bool
    ) -> ChatStream:
        text, usage = self._answer(body)
        return ChatStream(self._events(body["model"], text, usage, include_usage), usage)

    async def _events(
        self, model: str, text: str, usage: Usage, include_usage: bool
    ) -> AsyncIterator[bytes]:
        writer = ChunkWriter(model)
        yield writer.role()
        for i, word in enumerate(text.split(" ")):
            yield writer.content(word if i == 0 else " " + word)
        yield writer.finish("stop")
        if include_usage:
            yield writer.usage(usage)
