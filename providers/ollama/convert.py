"""Translation between OpenAI's request/answer shapes and Ollama's native API, both ways.

Pure functions (no I/O), so the golden tests can pin every field. What Ollama cannot take raises
:class:`~providers.translate.TranslationError` (the adapter makes it the router's error), never
dropped silently when it carries the client's data:

- image URLs that are not ``data:`` URLs (Ollama takes inline base64 only, and the router does
  not fetch URLs on a client's behalf), audio and file parts, ``n`` > 1: ``unsupported``, so
  the router tries the next provider (one that can) and otherwise names the reason;
- malformed input (a data URL that is not base64, tool-call arguments that are not a JSON
  object, an unknown role): a 400 in OpenAI's shape, as an OpenAI upstream would answer.

Sampling parameters Ollama has no equivalent for (``logprobs``, ``logit_bias``, ``user``, ...) are
not sent, as the issue asks.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson

from providers.base import Usage
from providers.translate import (
    TranslationError,
    parse_data_url,
    stop_list,
    token_limit,
    tool_call_id,
)
from router.errors import (
    UpstreamProtocolError,
)

# OpenAI sampling parameters with the same name and meaning in Ollama's ``options``.
_SAME_OPTIONS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


def keep_alive(value: Any) -> str | int | None:
    """Config ``keepAlive`` (ms) as Ollama's ``keep_alive``: a Go duration, or -1 for ever."""
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        return None
    return -1 if value < 0 else f"{value}ms"


# -- requests ----------------------------------------------------------------------------------


def chat_request(
    body: dict[str, Any],
    upstream_model: str,
    *,
    stream: bool,
    keep_alive: str | int | None = None,
) -> dict[str, Any]:
    """The ``/api/chat`` request for an OpenAI chat-completions request ``body``."""
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        raise TranslationError(f"n={n} (Ollama answers with one choice)", unsupported=True)
    request: dict[str, Any] = {
        "model": upstream_model,
        "messages": messages(body["messages"]),
        "stream": stream,
    }
    tools = _tools(body.get("tools"), body.get("tool_choice"))
    if tools:
        request["tools"] = tools
    options = _options(body)
    if options:
        request["options"] = options
    response_format = _format(body.get("response_format"))
    if response_format is not None:
        request["format"] = response_format
    if keep_alive is not None:
        request["keep_alive"] = keep_alive
    return request


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    limit = token_limit(body)
    if limit is not None:
        options["num_predict"] = limit
    for key in _SAME_OPTIONS:
        if body.get(key) is not None:
            options[key] = body[key]
    stop = stop_list(body.get("stop"))
    if stop:
        options["stop"] = stop
    return options


def _format(response_format: Any) -> Any:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise TranslationError(
                "response_format.json_schema.schema must be a JSON schema object.",
                "response_format",
            )
        return schema
    return None


def _tools(tools: Any, tool_choice: Any) -> list[dict[str, Any]]:
    """OpenAI ``tools`` are already in Ollama's form; ``tool_choice`` narrows what is sent.

    Ollama has no ``tool_choice``: ``"none"`` sends no tools and a named function sends only
    that one; ``"required"`` cannot be enforced and is sent as ``"auto"``.
    """
    if not tools or tool_choice == "none":
        return []
    if not isinstance(tools, list):
        raise TranslationError("Field 'tools' must be an array.", "tools")
    sent: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise TranslationError(f"tools[{i}] (only function tools)", unsupported=True)
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError(f"tools[{i}].function needs a name.", "tools")
        sent.append({"type": "function", "function": function})
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        sent = [t for t in sent if t["function"]["name"] == wanted]
        if not sent:
            message = f"tool_choice names a tool that is not in 'tools': {wanted!r}."
            raise TranslationError(message, "tool_choice")
    return sent


def messages(given: list[Any]) -> list[dict[str, Any]]:
    """OpenAI messages as Ollama messages (``tool_name`` found from the assistant's calls)."""
    tool_names: dict[str, str] = {}
    sent: list[dict[str, Any]] = []
    for i, message in enumerate(given):
        if not isinstance(message, dict):
            raise TranslationError(f"messages[{i}] must be an object.", "messages")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text, _ = _content(content, i, images=False)
            sent.append({"role": "system", "content": text})
        elif role == "user":
            text, images = _content(content, i, images=True)
            out: dict[str, Any] = {"role": "user", "content": text}
            if images:
                out["images"] = images
            sent.append(out)
        elif role == "assistant":
            text, _ = _content(content, i, images=False)
            out = {"role": "assistant", "content": text}
            calls = _ollama_tool_calls(message.get("tool_calls"), i, tool_names)
            if calls:
                out["tool_calls"] = calls
            sent.append(out)
        elif role in ("tool", "function"):
            text, _ = _content(content, i, images=False)
            out = {"role": "tool", "content": text}
            name = (
                tool_names.get(str(message.get("tool_call_id")))
                if role == "tool"
                else message.get("name")
            )
            if isinstance(name, str):
                out["tool_name"] = name
            sent.append(out)
        else:
            raise TranslationError(f"messages[{i}] has an unknown role {role!r}.", "messages")
    return sent


def _content(content: Any, i: int, *, images: bool) -> tuple[str, list[str]]:
    """Message content as (text, base64 images); text parts are joined with newlines."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise TranslationError(f"messages[{i}].content must be a string or an array.", "messages")
    texts: list[str] = []
    found: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"messages[{i}].content[{j}]"
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "image_url" and images:
            url = (part.get("image_url") or {}).get("url")
            if not isinstance(url, str) or not url.startswith("data:"):
                raise TranslationError(
                    f"the image URL in {where}: Ollama needs images inline, send a data: URL",
                    unsupported=True,
                )
            parsed = parse_data_url(url)
            if parsed is None:
                raise TranslationError(f"{where} has a data URL that is not base64.", "messages")
            found.append(parsed[1])
        else:
            raise TranslationError(f"{where} (a {kind!r} part)", unsupported=True)
    return "\n".join(texts), found


def _ollama_tool_calls(calls: Any, i: int, tool_names: dict[str, str]) -> list[dict[str, Any]]:
    if not calls:
        return []
    if not isinstance(calls, list):
        raise TranslationError(f"messages[{i}].tool_calls must be an array.", "messages")
    sent = []
    for j, call in enumerate(calls):
        where = f"messages[{i}].tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str):
            raise TranslationError(f"{where} needs a function with a name.", "messages")
        arguments = _arguments(function.get("arguments"))
        if arguments is None:
            raise TranslationError(f"{where}.function.arguments must be a JSON object.", "messages")
        if isinstance(call.get("id"), str):
            tool_names[call["id"]] = name
        sent.append({"function": {"name": name, "arguments": arguments}})
    return sent


def _arguments(raw: Any) -> dict[str, Any] | None:
    """OpenAI sends arguments as a JSON string; Ollama wants the object."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def embed_request(
    body: dict[str, Any], upstream_model: str, *, keep_alive: str | int | None
) -> tuple[dict[str, Any], str]:
    """The ``/api/embed`` request, and the encoding the client wants the vectors in."""
    given = body.get("input")
    texts_ok = isinstance(given, str) or (
        isinstance(given, list) and given and all(isinstance(t, str) for t in given)
    )
    if not texts_ok:
        if isinstance(given, list) and given:
            raise TranslationError("token arrays as embedding input (text only)", unsupported=True)
        raise TranslationError(
            "Field 'input' must be a string or a non-empty array of strings.", "input"
        )
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise TranslationError(
            "Field 'encoding_format' must be 'float' or 'base64'.", "encoding_format"
        )
    request: dict[str, Any] = {"model": upstream_model, "input": given}
    if body.get("dimensions") is not None:
        request["dimensions"] = body["dimensions"]
    if keep_alive is not None:
        request["keep_alive"] = keep_alive
    return request, encoding


# -- answers -----------------------------------------------------------------------------------


def openai_tool_calls(calls: Any) -> list[dict[str, Any]]:
    """Ollama tool calls as OpenAI ones: arguments as a JSON string, an id for each.

    Ollama names no call, so each gets a fresh ``call_...`` id (kept for the whole answer, so a
    streamed call and its later deltas agree); an id Ollama does send is kept.
    """
    if not isinstance(calls, list):
        return []
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            text = arguments
        else:
            text = orjson.dumps(arguments if arguments is not None else {}).decode()
        given_id = call.get("id")
        out.append(
            {
                "id": given_id if isinstance(given_id, str) and given_id else tool_call_id(),
                "type": "function",
                "function": {"name": function["name"], "arguments": text},
            }
        )
    return out


def finish_reason(done_reason: Any, has_tool_calls: bool) -> str:
    if has_tool_calls:
        return "tool_calls"
    if done_reason == "length":
        return "length"
    return "stop"


def _count(data: dict[str, Any], key: str) -> int:
    # Ollama omits zero counts (Go's omitempty): a missing count is 0, e.g. a cached prompt.
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return 0


def usage(data: dict[str, Any]) -> Usage:
    prompt = _count(data, "prompt_eval_count")
    completion = _count(data, "eval_count")
    return Usage(prompt, completion, prompt + completion)


def embeddings_answer(
    provider_id: str,
    body: dict[str, Any],
    request: dict[str, Any],
    data: dict[str, Any],
    encoding: str,
) -> tuple[bytes, Usage]:
    """The OpenAI embeddings answer for an ``/api/embed`` answer."""
    vectors = data.get("embeddings")
    expected = 1 if isinstance(request["input"], str) else len(request["input"])
    if not isinstance(vectors, list) or len(vectors) != expected:
        raise _protocol(provider_id, f"answered /api/embed without {expected} embedding(s)")
    items = []
    for i, vector in enumerate(vectors):
        if not isinstance(vector, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in vector
        ):
            raise _protocol(provider_id, f"answered /api/embed with a bad vector at {i}")
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        items.append({"object": "embedding", "index": i, "embedding": value})
    tokens = _count(data, "prompt_eval_count")
    answer = {
        "object": "list",
        "data": items,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return orjson.dumps(answer), Usage(tokens, 0, tokens)


def _protocol(provider_id: str, what: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"Provider {provider_id!r} {what}.")


# -- errors ------------------------------------------------------------------------------------


def error_text(error: Any) -> str:
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return orjson.dumps(error).decode()


def error_message(body: bytes) -> str:
    """The message of an Ollama error body ``{"error": "..."}`` (or of whatever came instead)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict) and "error" in data:
        return error_text(data["error"])
    return ""


def openai_error_body(status: int, message: str) -> bytes:
    """An Ollama error as OpenAI's error object, typed by its status."""
    kind, code = "invalid_request_error", None
    if status == 401:
        kind, code = "authentication_error", "invalid_api_key"
    elif status == 403:
        kind, code = "permission_error", "permission_denied"
    elif status == 404:
        code = "model_not_found" if "model" in message.lower() else "not_found"
    elif status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind = "server_error"
    error = {"message": message, "type": kind, "param": None, "code": code}
    return orjson.dumps({"error": error})
