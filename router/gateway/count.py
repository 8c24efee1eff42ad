"""``POST /v1/messages/count_tokens``: how many input tokens a Messages request holds.

The model's providers are asked in routing order: an ``anthropic`` one counts the client's body
as it is (``/v1/messages/count_tokens``), a ``gemini`` one with ``countTokens``. When none can
(other types have no counting endpoint) or all fail, the answer is an estimate:
:func:`estimate_tokens`. Counting is not a generation: it is not recorded in the history and
does not count against rate limits (Anthropic treats it the same way).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson

from providers.base import Reply
from router.doors.chat import parse_object
from router.doors.messages import COUNT_DIALECT, check_messages, forwarded_headers
from router.doors.messages_request import chat_body
from router.errors import RouterError, UpstreamError, UpstreamUnsupported
from router.gateway.handler import (
    ClientDisconnected,
    Proxy,
    Receive,
    Scope,
    Send,
    read_body,
    send_body,
)
from router.resilience.breaker import CLOSED

log = logging.getLogger("provider_router.count_tokens")
# An image costs about (width * height) / 750 tokens in Anthropic's accounting; without
# decoding it, a typical screenshot's share is taken.
IMAGE_TOKENS = 1600
CHARS_PER_TOKEN = 4
# Structure, not content: a few tokens each at most, which the estimate leaves out.
_NOT_TEXT = frozenset({"type", "role", "id", "tool_use_id", "cache_control", "media_type"})


def _texts(value: Any, out: list[str]) -> int:
    """Collect the strings of ``value`` into ``out``; return how many images it holds."""
    images = 0
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            images += _texts(item, out)
    elif isinstance(value, dict):
        if value.get("type") in ("image", "document") and isinstance(value.get("source"), dict):
            source = value["source"]
            if source.get("type") != "text":
                return 1  # base64 data or a URL: its text says nothing about its size
        for key, item in value.items():
            if key not in _NOT_TEXT:
                images += _texts(item, out)
    return images


def estimate_tokens(body: dict[str, Any]) -> int:
    """About one token per four characters of text (system, messages, tools), plus a fixed
    share per image. Off by up to a quarter either way for English prose; code and JSON count
    higher, and scripts like Chinese or Japanese can be undercounted by half or more."""
    out: list[str] = []
    images = _texts([body.get("system"), body.get("messages"), body.get("tools")], out)
    characters = sum(len(text) for text in out)
    return max(1, math.ceil(characters / CHARS_PER_TOKEN) + images * IMAGE_TOKENS)


class TokenCounter:
    """The ASGI endpoint; it shares the proxy's auth, limits, routes and error shape."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.door = proxy.messages_door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxy = self.proxy
        try:
            client = proxy.auth.authenticate_client(scope["headers"]) if proxy.auth else None
            raw = await read_body(scope, receive, proxy.max_body_bytes)
            body = parse_object(raw)
            check_messages(body, max_tokens=False)
            if proxy.limits is not None:
                proxy.limits.check_body(raw, body)
            if client is not None:
                client.check_model(body["model"])
            candidates = proxy.snapshots.current.candidates(body["model"])
            count = await self._ask(candidates, body, forwarded_headers(scope["headers"]))
            if count is None:
                count = estimate_tokens(body)
            answer = orjson.dumps({"input_tokens": count})
            await send_body(send, 200, answer, [(b"content-type", b"application/json")])
        except RouterError as exc:
            status, error = self.door.error(exc)
            await send_body(send, status, error, [(b"content-type", b"application/json")])
        except ClientDisconnected:
            return

    async def _ask(
        self, candidates: tuple[Any, ...], body: dict[str, Any], headers: dict[str, str]
    ) -> int | None:
        chat: dict[str, Any] | None = None
        for candidate in candidates:
            adapter = candidate.adapter
            if self.proxy.resilience.breakers.get(candidate.provider_id).state != CLOSED:
                continue  # counting must not take a half-open circuit's one probe
            try:
                if COUNT_DIALECT in adapter.native_dialects:
                    reply = await adapter.send_native(
                        COUNT_DIALECT, body, candidate.upstream_model, headers, stream=False
                    )
                    assert isinstance(reply, Reply)
                    counted = orjson.loads(reply.body).get("input_tokens")
                    if type(counted) is int and counted >= 0:
                        return counted
                    continue
                if chat is None:
                    chat = chat_body({**body, "max_tokens": 1})
                counted = await adapter.count_tokens(chat, candidate.upstream_model)
                return int(counted)
            except UpstreamUnsupported:
                continue
            except (UpstreamError, orjson.JSONDecodeError, AttributeError) as exc:
                # Counting is advisory: a provider that fails it leaves the estimate.
                log.info("Provider %r could not count tokens: %s", candidate.provider_id, exc)
                continue
        return None
