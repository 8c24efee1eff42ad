"""OpenAI chat completions <-> Anthropic Messages API: the pure translation, no I/O.

:func:`messages_request` turns a client's OpenAI request into the body of ``POST /v1/messages``;
:func:`completion_from_message` turns Anthropic's answer into an OpenAI ``chat.completion``.
The streamed counterpart lives with the adapter (``adapter.py`` beside this), which reads the
event stream as it arrives. A request that cannot be translated raises :class:`TranslationError`.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.base import Usage
from providers.translate import TranslationError, completion_body, parse_data_url

# Anthropic's stop_reason -> OpenAI's finish_reason. "pause_turn" (a server tool paused a long
# turn) ends this answer as it is; a context-window stop is a length stop.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return 0


def prompt_tokens(usage: Any) -> int | None:
    """Anthropic's input tokens as OpenAI counts them: cached and cache-writing tokens included."""
    if not isinstance(usage, dict) or "input_tokens" not in usage:
        return None
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return sum(_count(usage, key) for key in keys)


def output_tokens(usage: Any) -> int | None:
    if not isinstance(usage, dict) or "output_tokens" not in usage:
        return None
    return _count(usage, "output_tokens")


def make_usage(prompt: int | None, completion: int | None) -> Usage:
    total = None if prompt is None and completion is None else (prompt or 0) + (completion or 0)
    return Usage(prompt, completion, total)


# -- request ------------------------------------------------------------------------------------


def messages_request(
    body: dict[str, Any], upstream_model: str, default_max_tokens: int
) -> dict[str, Any]:
    """The Anthropic request for the OpenAI chat request ``body`` (without ``stream``)."""
    system, turns = _conversation(body["messages"])
    request: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": _max_tokens(body, default_max_tokens),
        "messages": turns,
    }
    if system:
        request["system"] = system
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TranslationError(f"Field {name!r} must be a number.", name)
            request[name] = value
    stop = _stop_sequences(body.get("stop"))
    if stop:
        request["stop_sequences"] = stop
    user = body.get("user")
    if isinstance(user, str) and user:
        request["metadata"] = {"user_id": user}
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError(
            "Anthropic upstreams answer with one choice only; 'n' must be 1.", "n", unsupported=True
        )
    request.update(_tools(body))
    return request


def _max_tokens(body: dict[str, Any], default: int) -> int:
    # Anthropic requires max_tokens; OpenAI's newer name wins when both are given.
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TranslationError(f"Field {name!r} must be a positive integer.", name)
        return value
    return default


def _stop_sequences(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s]
    raise TranslationError("Field 'stop' must be a string or an array of strings.", "stop")


def _conversation(messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """System text, and the turns with same-role neighbours merged (Anthropic alternates)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where} must be an object.", where)
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_only(message.get("content"), where)
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, where)]
        else:
            raise TranslationError(
                f"{where} has role {role!r}; Anthropic upstreams take system, developer, user, "
                "assistant and tool messages.",
                f"{where}.role",
                unsupported=role == "function",
            )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        blocks = turn["content"]
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            turn["content"] = blocks[0]["text"]
    return "\n\n".join(system), turns


def _parts(content: Any, where: str) -> list[Any]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    raise TranslationError(
        f"{where}.content must be a string or an array of content parts.", f"{where}.content"
    )


def _part_type(part: Any, where: str) -> str:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str):
        raise TranslationError(f"{where} must be an object with a 'type'.", where)
    return kind


def _text_of(part: dict[str, Any], where: str) -> str:
    text = part.get("text", part.get("refusal"))
    if not isinstance(text, str):
        raise TranslationError(f"{where} needs a string 'text'.", where)
    return text


def _text_only(content: Any, where: str) -> str:
    texts = []
    for j, part in enumerate(_parts(content, where)):
        at = f"{where}.content[{j}]"
        kind = _part_type(part, at)
        if kind != "text":
            raise TranslationError(
                f"{at} has type {kind!r}; only text parts are allowed in this message.",
                at,
                unsupported=True,
            )
        texts.append(_text_of(part, at))
    return "".join(texts)


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(_parts(content, where)):
        at = f"{where}.content[{j}]"
        kind = _part_type(part, at)
        if kind == "text":
            text = _text_of(part, at)
            if text:  # Anthropic refuses empty text blocks
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), at))
        else:
            raise TranslationError(
                f"{at} has type {kind!r}, which Anthropic upstreams do not take here "
                "(text and image_url are translated).",
                at,
                unsupported=True,
            )
    return blocks


def _image_block(image: Any, where: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise TranslationError(f"{where}.image_url needs a string 'url'.", f"{where}.image_url")
    if url.startswith("data:"):
        parsed = parse_data_url(url)
        if parsed is None:
            raise TranslationError(
                f"{where}.image_url.url is a data URL but not 'data:<media type>;base64,<data>' "
                "with valid base64.",
                f"{where}.image_url",
            )
        media_type, data = parsed
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError(
        f"{where}.image_url.url must be a data: URL or an http(s) URL.", f"{where}.image_url"
    )


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(_parts(message.get("content"), where)):
        at = f"{where}.content[{j}]"
        kind = _part_type(part, at)
        if kind not in ("text", "refusal"):
            raise TranslationError(
                f"{at} has type {kind!r}; assistant messages take text and refusal parts.", at
            )
        text = _text_of(part, at)
        if text:
            blocks.append({"type": "text", "text": text})
    if message.get("function_call") is not None:
        raise TranslationError(
            f"{where}.function_call is the deprecated form; send tool_calls instead.",
            f"{where}.function_call",
            unsupported=True,
        )
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise TranslationError(f"{where}.tool_calls must be an array.", f"{where}.tool_calls")
    for j, call in enumerate(calls):
        blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
    return blocks


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    call_id = call.get("id") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(call_id, str) or not call_id:
        raise TranslationError(f"{where} needs an 'id' and a 'function'.", where)
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError(f"{where}.function needs a 'name'.", f"{where}.function")
    arguments = function.get("arguments") or "{}"
    try:
        tool_input = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        tool_input = None
    if not isinstance(tool_input, dict):
        raise TranslationError(
            f"{where}.function.arguments must be a JSON object (as a string); Anthropic keeps "
            "tool input as an object.",
            f"{where}.function.arguments",
        )
    return {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError(
            f"{where} (role 'tool') needs the 'tool_call_id' it answers.", f"{where}.tool_call_id"
        )
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    text = _text_only(message.get("content"), where)
    if text:
        block["content"] = text
    return block


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    tools = body.get("tools")
    if not tools:
        return {}
    if not isinstance(tools, list):
        raise TranslationError("Field 'tools' must be an array.", "tools")
    translated = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise TranslationError(
                f"{where}: Anthropic upstreams take tools of type 'function' only.",
                where,
                unsupported=isinstance(tool, dict),
            )
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            raise TranslationError(f"{where}.function needs a 'name'.", f"{where}.function")
        entry: dict[str, Any] = {"name": name}
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        parameters = function.get("parameters")
        entry["input_schema"] = parameters if isinstance(parameters, dict) else _EMPTY_SCHEMA
        translated.append(entry)
    result: dict[str, Any] = {"tools": translated}
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and (choice or {}).get("type") != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        result["tool_choice"] = choice
    return result


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    simple = {"auto": "auto", "none": "none", "required": "any"}
    if isinstance(choice, str) and choice in simple:
        return {"type": simple[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return {"type": "tool", "name": name}
    raise TranslationError(
        "Field 'tool_choice' must be 'auto', 'none', 'required' or "
        '{"type": "function", "function": {"name": ...}}.',
        "tool_choice",
    )


# -- answer -------------------------------------------------------------------------------------


def completion_from_message(message: dict[str, Any], model: str) -> tuple[bytes, Usage | None]:
    """An OpenAI ``chat.completion`` (serialised) and its usage, from an Anthropic message."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    content = message.get("content")
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            name = str(block.get("name", ""))
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
    raw_usage = message.get("usage")
    usage = None
    if isinstance(raw_usage, dict):
        usage = make_usage(prompt_tokens(raw_usage), output_tokens(raw_usage))
    body = completion_body(
        model,
        content="".join(texts) if texts or not calls else None,
        finish_reason=finish_reason(message.get("stop_reason")),
        usage=usage,
        tool_calls=calls or None,
    )
    return body, usage
