"""The Gemini API on the fake upstream: ``/v1beta/models...``, streaming included.

Served beside the OpenAI endpoints, sharing the fake's :class:`~router.mock.state.MockState`:
the same options (latency, chunks, chunk delay, failure modes, api_key), request log and faults,
so tests drive every format alike. Answers are the OpenAI mock's words; errors come in Gemini's
shape (``{"error": {"code", "message", "status"}}``), a 429 with a ``RetryInfo`` detail.

Function calls: when the request declares functions and either forces them
(``toolConfig.functionCallingConfig.mode`` "ANY") or its last user text names one, the answer is
a ``functionCall`` of that function (the first allowed one when forced) with
``{"query": <last user text>}``. A turn that answers with ``functionResponse`` gets text back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from router.mock.answers import answer_pieces, embed
from router.mock.faults import JSON, BodyStream, json_reply
from router.mock.openai import hang_error
from router.mock.options import CUT_SHORT, MockOptions
from router.mock.state import MockState
from router.mock.tools import requested_tool

_MODELS = [
    {"name": "models/gemini-mock", "displayName": "Gemini Mock",
     "supportedGenerationMethods": ["generateContent", "countTokens"]},
    {"name": "models/gemini-embedding-mock", "displayName": "Gemini Embedding Mock",
     "supportedGenerationMethods": ["embedContent"]},
]  # fmt: skip
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
    500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip
_ROLES = frozenset({"user", "model"})


def gemini_error(code: int, message: str, details: list[Any] | None = None) -> Response:
    """An error in Gemini's (google.rpc.Status) shape."""
    status = _STATUS_NAMES.get(code, "INTERNAL" if code >= 500 else "FAILED_PRECONDITION")
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return Response(orjson.dumps({"error": error}), code, media_type=JSON)


def _injected(code: int) -> Response:
    note = f"(mock upstream, fail=status:{code})"
    if code == 429:
        retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
        return gemini_error(429, f"Resource has been exhausted {note}.", [retry])
    if code >= 500:
        return gemini_error(code, f"An internal error has occurred {note}.")
    return gemini_error(code, f"Request refused {note}.")


def gemini_routes(state: MockState) -> list[Route]:
    """The Gemini endpoints of the fake sharing ``state``."""
    fake = _GeminiFake(state)
    return [
        Route("/v1beta/models", fake.models, methods=["GET"]),
        Route("/v1beta/models/{target}", fake.action, methods=["POST"]),
    ]


class _GeminiFake:
    def __init__(self, state: MockState) -> None:
        self.state = state

    async def _accept(self, request: Request) -> dict[str, Any] | Response:
        """Log the request, check the key (header only), and return its JSON body or an error."""
        opts = self.state.options
        body = await self.state.record(request)
        if opts.api_key is not None:
            given = request.headers.get("x-goog-api-key")
            if given is None:
                return gemini_error(403, "Method doesn't allow unregistered callers.")
            if given != opts.api_key:
                return gemini_error(400, "API key not valid. Please pass a valid API key.")
        if request.method == "GET":
            return {}
        if not isinstance(body, dict):
            return gemini_error(400, "Invalid JSON payload received.")
        return body

    async def _deliver(
        self, request: Request, opts: MockOptions, reply: Callable[[str], ASGIApp]
    ) -> ASGIApp:
        return await self.state.faults.deliver(
            request, opts, reply, refuse=_injected, hung=hang_error
        )

    async def models(self, request: Request) -> Response:
        refused = await self._accept(request)
        if isinstance(refused, Response):
            return refused
        return Response(orjson.dumps({"models": _MODELS}), media_type=JSON)

    async def action(self, request: Request) -> ASGIApp:
        model, _, verb = request.path_params["target"].partition(":")
        body = await self._accept(request)
        if isinstance(body, Response):
            return body
        if verb in ("generateContent", "streamGenerateContent"):
            stream = verb == "streamGenerateContent"
            if stream and request.query_params.get("alt") != "sse":
                return gemini_error(400, "This fake streams only with alt=sse.")
            return await self._generate(request, body, model, stream)
        if verb == "countTokens":
            return _count_tokens(body)
        if verb == "embedContent":
            return await self._embed_one(request, body)
        if verb == "batchEmbedContents":
            return await self._embed_batch(request, body, model)
        return gemini_error(404, f"Method {verb!r} of models/{model} is not found.")

    async def _generate(
        self, request: Request, body: dict[str, Any], model: str, stream: bool
    ) -> ASGIApp:
        opts = self.state.options
        contents = body.get("contents")
        problem = _check_contents(contents)
        if problem or not isinstance(contents, list):
            return gemini_error(400, problem or "contents must be an array.")
        config = body.get("generationConfig") or {}
        pieces, finish = answer_pieces(opts.chunks), "STOP"
        limit = config.get("maxOutputTokens")
        if limit is not None:
            if type(limit) is not int or limit < 1:
                return gemini_error(400, "generation_config.max_output_tokens must be positive.")
            if limit < len(pieces):
                pieces, finish = pieces[:limit], "MAX_TOKENS"
        call = _function_call(body, contents)
        prompt = max(1, _count_words([*contents, body.get("systemInstruction")]))
        head = {"modelVersion": opts.model_prefix + model, "responseId": uuid.uuid4().hex[:22]}
        if call is not None:
            texts: list[str] = []
            parts: list[dict[str, Any]] = [{"functionCall": call}]
            finish, completion = "STOP", 3
        else:
            texts, parts, completion = list(pieces), [], len(pieces)
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": completion,
            "totalTokenCount": prompt + completion,
        }
        if stream:
            delay = opts.chunk_delay_ms / 1000
            return await self._deliver(
                request,
                opts,
                lambda kind: _stream(head, texts, parts, finish, usage, delay, kind),
            )
        all_parts = ([{"text": "".join(texts)}] if texts else []) + parts
        candidate = {
            "content": {"role": "model", "parts": all_parts},
            "finishReason": finish,
            "index": 0,
        }
        answer = {"candidates": [candidate], "usageMetadata": usage, **head}
        return await self._deliver(request, opts, lambda kind: json_reply(answer, kind))

    async def _embed_one(self, request: Request, body: dict[str, Any]) -> ASGIApp:
        text = _content_text(body.get("content"))
        if text is None:
            return gemini_error(400, "content must have text parts.")
        answer = {"embedding": {"values": embed(text)}}
        return await self._deliver(
            request, self.state.options, lambda kind: json_reply(answer, kind)
        )

    async def _embed_batch(self, request: Request, body: dict[str, Any], model: str) -> ASGIApp:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return gemini_error(400, "requests must be a non-empty array.")
        vectors = []
        for i, item in enumerate(requests):
            if not isinstance(item, dict) or item.get("model") != f"models/{model}":
                return gemini_error(
                    400, f"requests[{i}].model must be models/{model}, as in the URL."
                )
            text = _content_text(item.get("content"))
            if text is None:
                return gemini_error(400, f"requests[{i}].content must have text parts.")
            vectors.append({"values": embed(text)})
        answer = {"embeddings": vectors}
        return await self._deliver(
            request, self.state.options, lambda kind: json_reply(answer, kind)
        )


def _check_contents(contents: Any) -> str | None:
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role") not in _ROLES:
            return f"Please use a valid role: user, model (contents[{i}])."
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{i}].parts: must not be empty."
        for part in parts:
            if isinstance(part, dict) and part.get("text") == "":
                return "Unable to submit request because it has an empty text parameter."
    return None


def _content_text(content: Any) -> str | None:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        return None
    texts = [p.get("text") for p in parts if isinstance(p, dict)]
    if not all(isinstance(t, str) for t in texts):
        return None
    return "".join(t for t in texts if isinstance(t, str))


def _count_words(contents: list[Any]) -> int:
    total = 0
    for content in contents:
        for part in content.get("parts") or [] if isinstance(content, dict) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"].split())
    return total


def _count_tokens(body: dict[str, Any]) -> Response:
    """``countTokens``: the words of ``contents`` (or of ``generateContentRequest``'s)."""
    request = body.get("generateContentRequest")
    contents = (request if isinstance(request, dict) else body).get("contents")
    problem = _check_contents(contents)
    if problem or not isinstance(contents, list):
        return gemini_error(400, problem or "contents must be an array.")
    return Response(orjson.dumps({"totalTokens": _count_words(contents)}), media_type=JSON)


def _function_call(body: dict[str, Any], contents: list[Any]) -> dict[str, Any] | None:
    """The call the fake makes, if the request asks for one (see the module docstring)."""
    names = [
        d["name"]
        for tool in body.get("tools") or []
        if isinstance(tool, dict)
        for d in tool.get("functionDeclarations") or []
        if isinstance(d, dict) and isinstance(d.get("name"), str)
    ]
    last = contents[-1]
    if not names or last.get("role") != "user":
        return None
    if any(isinstance(p, dict) and "functionResponse" in p for p in last["parts"]):
        return None
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = config.get("mode", "AUTO")
    text = " ".join(p["text"] for p in last["parts"] if isinstance(p.get("text"), str))
    if mode == "NONE":
        return None
    if mode == "ANY":
        allowed = config.get("allowedFunctionNames") or names
        name = allowed[0]
    elif requested_tool(text, names) is not None:
        name = str(requested_tool(text, names))
    else:
        mentioned = [n for n in names if n in text]
        if not mentioned:
            return None
        name = mentioned[0]
    return {"name": name, "args": {"query": text}}


def _stream(
    head: dict[str, Any],
    texts: list[str],
    calls: list[dict[str, Any]],
    finish: str,
    usage: dict[str, int],
    delay: float,
    kind: str,
) -> ASGIApp:
    """SSE events of GenerateContentResponse chunks, CRLF-separated as Gemini sends them."""

    def event(parts: list[dict[str, Any]], last: bool, done: int) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if last:
            candidate["finishReason"] = finish
        meta = {**usage, "candidatesTokenCount": done}
        meta["totalTokenCount"] = usage["promptTokenCount"] + done
        chunk = {"candidates": [candidate], "usageMetadata": meta, **head}
        return b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"

    pieces: list[list[dict[str, Any]]] = [[{"text": t}] for t in texts] + ([calls] if calls else [])
    broken = kind in CUT_SHORT
    if broken:
        pieces = pieces[: max(1, len(pieces) // 2)]
    events = []
    for i, parts in enumerate(pieces):
        last = not broken and i == len(pieces) - 1
        done = usage["candidatesTokenCount"] if last else i + 1
        events.append(event(parts, last, done))
    return BodyStream(events, range(1, len(events)), delay, abort=kind == "disconnect")
