"""The ``gemini`` adapter: Google's Gemini API behind OpenAI's chat and embeddings API.

Calls ``POST /models/{model}:generateContent``, ``:streamGenerateContent?alt=sse``,
``:embedContent`` and ``:batchEmbedContents``, and ``GET /models``, relative to ``baseURL``
(``https://generativelanguage.googleapis.com/v1beta`` by default). The key travels in the
``x-goog-api-key`` header only: a ``?key=`` URL would end up in access logs.

Translation lives in :mod:`providers.gemini.convert`; this module does the HTTP, turns answers
and streams into OpenAI's format, and maps Gemini's errors
(``{"error": {"code", "message", "status"}}``) onto OpenAI's shape with ``code`` = Gemini's
status, ``RESOURCE_EXHAUSTED`` counting as 429 so the router falls back.
"""

from __future__ import annotations

import base64
import re
import struct
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import orjson

from providers.base import Adapter, AdapterOptions, ChatStream, ConfigKey, Reply, Usage
from providers.gemini.convert import (
    CallMemo,
    call_id,
    finish_reason,
    gemini_request,
    usage_from,
)
from providers.http import (
    HTTP_CONFIG_KEYS,
    call_json,
    client_from_config,
    http_config_problems,
    open_stream,
    retry_after_seconds,
)
from providers.translate import (
    ChunkWriter,
    cannot_translate,
    completion_body,
    completion_id,
    sse_events,
    translating,
)
from router.errors import UpstreamProtocolError, UpstreamStatusError

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
_STATUS_CODES = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "INTERNAL": 500, "UNKNOWN": 500,
    "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}  # fmt: skip
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error"}
_ERROR_TYPES |= {403: "permission_error", 404: "invalid_request_error", 429: "rate_limit_error"}
_BATCH_LIMIT = 100  # batchEmbedContents takes at most 100 requests
_MODEL_PAGES = 20
_MEMO_LIMIT = 10_000


class GeminiAdapter(Adapter):
    """Google's Gemini API (generativelanguage.googleapis.com) with an API key."""

    type = "gemini"
    requires_api_key = True
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {
        "baseURL": ConfigKey(
            str, default=DEFAULT_BASE_URL, description="default " + DEFAULT_BASE_URL
        ),
        "apiKey": ConfigKey(str, sensitive=True, description="sent as 'x-goog-api-key'"),
        "timeout": ConfigKey(int, description="read timeout in milliseconds"),
        "headers": ConfigKey(dict, sensitive=True, description="extra headers for every call"),
        **HTTP_CONFIG_KEYS,
    }

    def __init__(self, provider_id: str, config: Mapping[str, Any], options: AdapterOptions):
        super().__init__(provider_id, config, options)
        base_url = str(config.get("baseURL") or DEFAULT_BASE_URL)
        self._secret = str(config.get("apiKey") or "")
        headers = {"x-goog-api-key": self._secret} if self._secret else {}
        self._client = client_from_config(config, options, base_url, headers)
        # Function calls this adapter returned that carry something Gemini wants back with them
        # (a thought signature, Gemini's own id), by call id; bounded, oldest forgotten first.
        self._memos: OrderedDict[str, CallMemo] = OrderedDict()

    @classmethod
    def validate_config(cls, config: Mapping[str, Any], *, partial: bool = False) -> list[str]:
        problems = super().validate_config(config, partial=partial)
        return problems + http_config_problems(config, allow_query=False)

    # -- requests ----------------------------------------------------------------------------

    @staticmethod
    def _path(model: str, action: str) -> str:
        name = model if model.startswith(("models/", "tunedModels/")) else "models/" + model
        return "/" + quote(name, safe="/-._~") + ":" + action

    def _translate(self, body: dict[str, Any]) -> bytes:
        with translating(self):
            return orjson.dumps(gemini_request(body, self._memos))

    async def _call(self, method: str, path: str, payload: bytes | None = None) -> Any:
        body = None if method == "GET" else payload or b""
        return await call_json(self._client, self.provider_id, path, body, self._status_error)

    def _status_error(self, response: httpx.Response, body: bytes) -> UpstreamStatusError:
        """Gemini's error answer as an OpenAI-shaped one; overload and quota stay retryable."""
        status_code, status, message = response.status_code, None, ""
        retry_after = retry_after_seconds(response)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(data, list) and data and isinstance(data[0], dict):
            error = data[0].get("error")  # the stream endpoint without alt=sse wraps it in [...]
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            status = error.get("status") if isinstance(error.get("status"), str) else None
            retry_after = retry_after if retry_after is not None else _retry_delay(error)
        else:
            message = body[:200].decode("utf-8", "replace").strip()
        if status_code == 400 and (
            b"API_KEY_INVALID" in body or message.startswith("API key not valid")
        ):
            status_code = 401  # Gemini answers a bad key with 400; it is the provider's fault
        mapped = _STATUS_CODES.get(status or "")
        if status == "RESOURCE_EXHAUSTED" or (mapped and mapped >= 500 and status_code < 500):
            status_code = mapped or status_code
        if self._secret:
            message = message.replace(self._secret, "****")
        message = message[:2000] or f"Gemini answered HTTP {status_code}."
        kind = _ERROR_TYPES.get(status_code, "server_error" if status_code >= 500 else None)
        openai = {
            "message": message,
            "type": kind or "invalid_request_error",
            "param": None,
            "code": status,
        }
        label = f" {status}" if status else ""
        return UpstreamStatusError(
            f"Provider {self.provider_id!r} answered HTTP {status_code}{label}: {message[:300]}",
            status_code=status_code,
            body=orjson.dumps({"error": openai}),
            retry_after=retry_after,
        )

    # -- chat --------------------------------------------------------------------------------

    async def chat(self, body: dict[str, Any], upstream_model: str) -> Reply:
        payload = self._translate(body)
        data = await self._call("POST", self._path(upstream_model, "generateContent"), payload)
        response_id = data.get("responseId") if isinstance(data.get("responseId"), str) else None
        candidate = _first_candidate(data)
        texts: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for part in _parts(candidate):
            if isinstance(part.get("text"), str) and not part.get("thought"):
                texts.append(part["text"])
            elif isinstance(part.get("functionCall"), dict):
                tool_calls.append(self._tool_call(part, response_id, len(tool_calls)))
        usage = usage_from(data.get("usageMetadata"))
        if candidate is not None:
            reason = finish_reason(candidate.get("finishReason"), bool(tool_calls))
        elif _blocked(data):
            reason = "content_filter"  # the prompt itself was blocked: no candidate at all
        else:
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} answered without a candidate."
            )
        text = "".join(texts)
        reply = completion_body(
            body["model"],
            content=text if text or not tool_calls else None,
            finish_reason=reason,
            usage=usage,
            tool_calls=tool_calls,
            id="chatcmpl-" + response_id if response_id else None,
        )
        return Reply(reply, usage)

    def _tool_call(
        self, part: dict[str, Any], response_id: str | None, index: int
    ) -> dict[str, Any]:
        """An OpenAI tool call for a ``functionCall`` part; remembers what must go back."""
        call = part["functionCall"]
        given = call.get("id")
        cid = call_id(response_id, index, given)
        signature = part.get("thoughtSignature")
        native = isinstance(given, str) and bool(given)
        if native or isinstance(signature, str):
            self._memos[cid] = CallMemo(signature if isinstance(signature, str) else None, native)
            self._memos.move_to_end(cid)
            while len(self._memos) > _MEMO_LIMIT:
                self._memos.popitem(last=False)
        args = call.get("args")
        return {
            "id": cid,
            "type": "function",
            "function": {
                "name": str(call.get("name", "")),
                "arguments": orjson.dumps(args if isinstance(args, dict) else {}).decode(),
            },
        }

    async def chat_stream(
        self, body: dict[str, Any], upstream_model: str, *, include_usage: bool
    ) -> ChatStream:
        payload = self._translate(body)
        path = self._path(upstream_model, "streamGenerateContent") + "?alt=sse"
        response = await open_stream(
            self._client, self.provider_id, path, payload, self._status_error
        )
        stream = ChatStream()
        stream.events = self._relay(response, body["model"], include_usage, stream)
        return stream

    async def _relay(
        self, response: httpx.Response, model: str, include_usage: bool, stream: ChatStream
    ) -> AsyncIterator[bytes]:
        writer: ChunkWriter | None = None
        response_id: str | None = None
        calls = 0
        finish: str | None = None
        try:
            async for _event, data in sse_events(self.provider_id, response):
                chunk = self._event_json(data)
                if writer is None:
                    given = chunk.get("responseId")
                    response_id = given if isinstance(given, str) and given else None
                    chunk_id = "chatcmpl-" + response_id if response_id else completion_id()
                    writer = ChunkWriter(model, id=chunk_id)
                    out = [writer.role()]
                else:
                    out = []
                stream.usage = usage_from(chunk.get("usageMetadata")) or stream.usage
                candidate = _first_candidate(chunk)
                for part in _parts(candidate):
                    if isinstance(part.get("text"), str) and not part.get("thought"):
                        if part["text"]:
                            out.append(writer.content(part["text"]))
                    elif isinstance(part.get("functionCall"), dict):
                        call = self._tool_call(part, response_id, calls)
                        function = call["function"]
                        out.append(
                            writer.tool_call_start(
                                calls, call["id"], function["name"], function["arguments"]
                            )
                        )
                        calls += 1
                if candidate is not None and candidate.get("finishReason"):
                    finish = finish_reason(candidate["finishReason"], calls > 0)
                elif candidate is None and _blocked(chunk):
                    finish = "content_filter"
                if out:
                    yield b"".join(out)
        finally:
            await response.aclose()
        if writer is None or finish is None:
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} ended its stream without a finishReason."
            )
        # Gemini may follow the finishReason with a chunk carrying only the final usage, so
        # the finish goes out once the stream has ended properly.
        if finish == "stop" and calls:
            finish = "tool_calls"
        last = writer.finish(finish)
        if include_usage:
            last += writer.usage(stream.usage or Usage())
        yield last

    def _event_json(self, data: bytes) -> dict[str, Any]:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} sent a stream event that is not JSON."
            ) from exc
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} sent a stream event that is not an object."
            )
        error = chunk.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("status") or "unknown error")
            if self._secret:
                message = message.replace(self._secret, "****")
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} reported an error mid-stream: {message[:300]}"
            )
        return chunk

    # -- embeddings and models ---------------------------------------------------------------

    async def embeddings(self, body: dict[str, Any], upstream_model: str) -> Reply:
        given = body.get("input")
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise cannot_translate(
                self.provider_id,
                self.type,
                "Gemini embeds text only: 'input' must be a string or a non-empty array of "
                "strings (token arrays are not supported).",
                "input",
            )
        extra: dict[str, Any] = {}
        dimensions = body.get("dimensions")
        if dimensions is not None:
            extra["outputDimensionality"] = dimensions
        vectors: list[Any] = []
        if isinstance(given, str):
            request = {"content": {"parts": [{"text": given}]}, **extra}
            data = await self._call(
                "POST", self._path(upstream_model, "embedContent"), orjson.dumps(request)
            )
            vectors.append((data.get("embedding") or {}).get("values"))
        else:
            name = self._path(upstream_model, "")[1:-1]
            for start in range(0, len(texts), _BATCH_LIMIT):
                requests = [
                    {"model": name, "content": {"parts": [{"text": t}]}, **extra}
                    for t in texts[start : start + _BATCH_LIMIT]
                ]
                data = await self._call(
                    "POST",
                    self._path(upstream_model, "batchEmbedContents"),
                    orjson.dumps({"requests": requests}),
                )
                found = data.get("embeddings")
                if not isinstance(found, list) or len(found) != len(requests):
                    vectors.append(None)
                    break
                vectors.extend(e.get("values") if isinstance(e, dict) else None for e in found)
        if len(vectors) != len(texts) or not all(_is_vector(v) for v in vectors):
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} answered embeddings without one vector per input."
            )
        as_base64 = body.get("encoding_format") == "base64"
        answer = {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": _base64_floats(v) if as_base64 else v,
                }
                for i, v in enumerate(vectors)
            ],
            "model": body["model"],
            # Gemini's embedding API reports no token counts: the client sees 0, the history
            # keeps "unknown" (no Usage) rather than a made-up number.
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }
        return Reply(orjson.dumps(answer), None)

    async def count_tokens(self, body: dict[str, Any], upstream_model: str) -> int:
        """``countTokens`` over the whole translated request (system and tools included)."""
        with translating(self):
            request = gemini_request(body, self._memos)
        path = self._path(upstream_model, "countTokens")
        request["model"] = path[1:].rpartition(":")[0]
        payload = orjson.dumps({"generateContentRequest": request})
        data = await self._call("POST", path, payload)
        total = data.get("totalTokens")
        if type(total) is not int or total < 0:
            raise UpstreamProtocolError(
                f"Provider {self.provider_id!r} answered countTokens without a 'totalTokens'."
            )
        return total

    async def list_models(self) -> list[str]:
        names: list[str] = []
        token = ""
        for _ in range(_MODEL_PAGES):
            path = "/models?pageSize=1000" + (
                f"&pageToken={quote(token, safe='')}" if token else ""
            )
            data = await self._call("GET", path)
            models = data.get("models", [])
            if not isinstance(models, list):
                raise UpstreamProtocolError(
                    f"Provider {self.provider_id!r} answered its model list "
                    "with an unexpected body."
                )
            for model in models:
                name = model.get("name") if isinstance(model, dict) else None
                if isinstance(name, str):
                    names.append(name.removeprefix("models/"))
            token = data.get("nextPageToken") or ""
            if not isinstance(token, str) or not token:
                break
        return names

    async def aclose(self) -> None:
        await self._client.aclose()


def _first_candidate(data: Mapping[str, Any]) -> dict[str, Any] | None:
    candidates = data.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        return candidates[0]
    return None


def _parts(candidate: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    content = candidate.get("content") if candidate else None
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _blocked(data: Mapping[str, Any]) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def _retry_delay(error: Mapping[str, Any]) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "27s"``)."""
    for detail in error.get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str):
            match = re.fullmatch(r"(\d+(?:\.\d+)?)s", delay)
            if match:
                return float(match.group(1))
    return None


def _is_vector(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    )


def _base64_floats(values: list[float]) -> str:
    """OpenAI's ``encoding_format: base64``: little-endian float32s, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
