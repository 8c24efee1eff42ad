"""An Anthropic Messages request as the router's OpenAI chat body (pure, no I/O).

Used when the candidate does not speak Messages itself (every type but ``anthropic``). What an
OpenAI chat upstream cannot honour is dropped here, never copied into the chat body, because a
strict OpenAI-compatible server refuses unknown parameters: see :data:`DROPPED_FIELDS` and
docs/claude-code.md.
"""

from __future__ import annotations

from typing import Any

import orjson

from router.errors import InvalidRequest

# Top-level Messages fields with no chat counterpart; documented in docs/claude-code.md.
DROPPED_FIELDS = frozenset(
    {
        "thinking",
        "context_management",
        "output_config",
        "cache_control",
        "top_k",
        "service_tier",
        "container",
        "mcp_servers",
        "inference_geo",
    }
)
_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}


def chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request for the Messages request ``body`` (already shape-checked)."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _text(system, "system")
        if text:
            messages.append({"role": "system", "content": text})
    for i, message in enumerate(body["messages"]):
        messages.extend(_message(message, f"messages.{i}"))
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    chat["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    stops = body.get("stop_sequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidRequest(
                "Field 'stop_sequences' must be an array of strings.", param="stop_sequences"
            )
        chat["stop"] = stops
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
        choice = body.get("tool_choice")
        if choice is not None:
            chat.update(_tool_choice(choice, {t["function"]["name"] for t in tools}))
    if body.get("stream") is True:
        # The usage chunk carries cached-token counts the Messages answer reports.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _text(content: Any, where: str) -> str:
    """A system prompt or tool result: a string, or text blocks joined with blank lines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                raise InvalidRequest(f"{where}.{j} must be an object.", param=where)
            if block.get("type") == "text":
                texts.append(_string(block, "text", f"{where}.{j}"))
        return "\n\n".join(texts)
    raise InvalidRequest(f"{where} must be a string or an array of blocks.", param=where)


def _string(block: dict[str, Any], key: str, where: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}.{key} must be a string.", param=where)
    return value


def _blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or an array.", param=where)
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f"{where}.content.{j} must be an object with a 'type'.")
    return content


def _message(message: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise InvalidRequest(f"{where} must be an object.", param="messages")
    role = message.get("role")
    if role == "system":
        # Honoured where it stands: Claude Code sends its environment this way.
        return [{"role": "system", "content": _text(message.get("content"), where + ".content")}]
    if role == "assistant":
        return [_assistant(_blocks(message, where), where)]
    if role == "user":
        return _user(_blocks(message, where), where)
    raise InvalidRequest(
        f"{where}.role must be 'user', 'assistant' or 'system', got {role!r}.", param="messages"
    )


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        media = source.get("media_type")
        data = source.get("data")
        if isinstance(media, str) and isinstance(data, str):
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if isinstance(source, dict) and source.get("type") == "url":
        url = source.get("url")
        if isinstance(url, str):
            return {"type": "image_url", "image_url": {"url": url}}
    raise InvalidRequest(
        f"{where}.source must be a base64 or url image source for a non-Anthropic provider.",
        param="messages",
    )


def _user(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Tool results become tool messages (first, as chat wants them right after the calls);
    text, images and text documents become the user message that follows."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block["type"]
        at = f"{where}.content.{j}"
        if kind == "text":
            parts.append({"type": "text", "text": _string(block, "text", at)})
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            text = _text(block.get("content", ""), at + ".content")
            if block.get("is_error") is True:
                text = "Error: " + text
            call_id = _string(block, "tool_use_id", at)
            results.append({"role": "tool", "tool_call_id": call_id, "content": text})
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "text":
                parts.append({"type": "text", "text": str(source.get("data", ""))})
        # thinking, search results and server tool blocks have no chat counterpart.
    if not parts:
        return results
    single = len(parts) == 1 and parts[0]["type"] == "text"
    return [*results, {"role": "user", "content": parts[0]["text"] if single else parts}]


def _assistant(blocks: list[dict[str, Any]], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        if block["type"] == "text":
            texts.append(_string(block, "text", at))
        elif block["type"] == "tool_use":
            arguments = block.get("input", {})
            calls.append(
                {
                    "id": _string(block, "id", at),
                    "type": "function",
                    "function": {
                        "name": _string(block, "name", at),
                        "arguments": orjson.dumps(arguments).decode(),
                    },
                }
            )
        # thinking blocks are the upstream's own; a chat upstream takes none back.
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise InvalidRequest("Field 'tools' must be an array.", param="tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"tools.{i} must be an object with a 'name'.", param="tools")
        if "input_schema" not in tool:
            continue  # a server tool (web search, code execution...): Anthropic's own
        function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, names: set[str]) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    out: dict[str, Any] = {}
    if kind in _TOOL_CHOICE:
        out["tool_choice"] = _TOOL_CHOICE[kind]
    elif kind == "tool":
        name = choice.get("name")
        if name not in names:
            raise InvalidRequest(
                f"tool_choice names tool {name!r}, which is not in 'tools'.", param="tool_choice"
            )
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise InvalidRequest(
            f"tool_choice.type must be auto, any, tool or none, got {kind!r}.",
            param="tool_choice",
        )
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out
