"""An OpenAI Responses request as input items and as the router's OpenAI chat body (pure, no I/O).

:func:`check_request` refuses what cannot be served (``background``, ``conversation``, an
unknown parameter); :func:`input_items` turns ``input`` into items, each with an ``id`` (what is
stored and listed by ``GET /v1/responses/{id}/input_items``); :func:`chat_body` maps the items and
the request's options onto a chat request. Fields a chat upstream cannot take are dropped here
and never copied into the chat body (a strict OpenAI-compatible server refuses unknown
parameters): see docs/codex.md for the full list.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from router.errors import InvalidRequest

# Every top-level field of OpenAI's Responses create request; anything else is refused, as
# OpenAI does ("Unknown parameter").
KNOWN_FIELDS = frozenset(
    {
        "model", "input", "instructions", "stream", "stream_options", "store", "background",
        "conversation", "previous_response_id", "include", "tools", "tool_choice",
        "parallel_tool_calls", "max_output_tokens", "max_tool_calls", "text", "reasoning",
        "temperature", "top_p", "top_logprobs", "truncation", "user", "safety_identifier",
        "metadata", "prompt", "prompt_cache_key", "prompt_cache_retention", "client_metadata",
        "service_tier",
    }
)  # fmt: skip
# Accepted, never forwarded to a chat upstream (no chat counterpart, or ours alone).
DROPPED_FIELDS = frozenset(
    {
        "include", "prompt_cache_key", "prompt_cache_retention", "client_metadata",
        "service_tier", "store", "stream_options", "truncation", "top_logprobs",
        "max_tool_calls", "safety_identifier",
    }
)  # fmt: skip
ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal", "summary_text"})


class Untranslatable(InvalidRequest):
    """A valid Responses request that a chat upstream cannot carry (a built-in tool's item, a
    file input): a provider that serves the Responses API itself may still take it, so the
    router refuses it with this 400 only when the model has no such provider."""


def item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def check_request(body: dict[str, Any]) -> None:
    """Refuse a request this gateway cannot serve, naming the field."""
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown parameter: {unknown[0]!r}.", param=unknown[0])
    if body.get("background") is True:
        raise InvalidRequest(
            "Background responses ('background': true) are not supported by provider-router; "
            "send the request without it.",
            param="background",
        )
    if body.get("conversation") is not None:
        raise InvalidRequest(
            "Conversation objects ('conversation') are not supported by provider-router; "
            "continue a conversation with 'previous_response_id' instead.",
            param="conversation",
        )
    if body.get("prompt") is not None:
        raise InvalidRequest(
            "Reusable prompts ('prompt') are not supported by provider-router; send the "
            "prompt's text as 'instructions' or 'input'.",
            param="prompt",
        )
    for key in ("stream", "store", "parallel_tool_calls"):
        if not isinstance(body.get(key, False), bool):
            raise InvalidRequest(f"Field {key!r} must be true or false.", param=key)
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise InvalidRequest(
            "Field 'previous_response_id' must be a response id.", param="previous_response_id"
        )
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("Field 'instructions' must be a string.", param="instructions")
    limit = body.get("max_output_tokens")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidRequest(
            f"Field 'max_output_tokens' must be a positive integer, got {limit!r}.",
            param="max_output_tokens",
        )
    for key in ("metadata", "text", "reasoning"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise InvalidRequest(f"Field {key!r} must be an object.", param=key)
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        raise InvalidRequest("Field 'tools' must be an array.", param="tools")


def input_items(given: Any) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items, each with an ``id`` (one is made if missing).

    A string is one user message. Items are checked here, so a stored item is always one the
    translation can read back.
    """
    if isinstance(given, str):
        part = {"type": "input_text", "text": given}
        return [{"type": "message", "id": item_id("msg"), "role": "user", "content": [part]}]
    if not isinstance(given, list):
        raise InvalidRequest("Field 'input' must be a string or an array of items.", param="input")
    items = []
    for i, item in enumerate(given):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object.", param=where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            if item.get("role") not in ROLES:
                raise InvalidRequest(
                    f"{where}.role must be one of user, system, developer, assistant; got "
                    f"{item.get('role')!r}.",
                    param=f"{where}.role",
                )
            if not isinstance(item.get("content"), str | list):
                raise InvalidRequest(
                    f"{where}.content must be a string or an array of parts.",
                    param=f"{where}.content",
                )
            prefix = "msg"
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise InvalidRequest(f"{where}.{key} must be a string.", param=f"{where}.{key}")
            prefix = "fc"
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise InvalidRequest(f"{where}.call_id must be a string.", param=f"{where}.call_id")
            if not isinstance(item.get("output"), str | list):
                raise InvalidRequest(
                    f"{where}.output must be a string or an array of parts.",
                    param=f"{where}.output",
                )
            prefix = "fco"
        elif kind == "reasoning":
            prefix = "rs"
        elif kind == "item_reference":
            if not isinstance(item.get("id"), str):
                raise InvalidRequest(f"{where}.id must be a string.", param=f"{where}.id")
            items.append(item)
            continue
        elif isinstance(kind, str) and kind:
            prefix = "item"  # another type (a built-in tool's call, say): chat_messages decides
        else:
            raise InvalidRequest(
                f"{where} needs a 'type' (or a 'role', for a message).", param=f"{where}.type"
            )
        found = item.get("id")
        given_id = found if isinstance(found, str) else item_id(prefix)
        items.append({**item, "type": kind, "id": given_id})
    return items


def resolve_references(
    items: list[dict[str, Any]], earlier: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``item_reference`` items replaced by the earlier items (of the stored conversation)
    they name."""
    if not any(item.get("type") == "item_reference" for item in items):
        return items
    known = {item.get("id"): item for item in earlier}
    resolved = []
    for item in items:
        if item.get("type") == "item_reference":
            found = known.get(item["id"])
            if found is None:
                raise InvalidRequest(
                    f"Item reference {item['id']!r} names no item of this conversation.",
                    param="input",
                )
            item = found
        resolved.append(item)
    return resolved


def _part_text(part: Any, where: str) -> str | None:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        raise InvalidRequest(f"{where} must be an object.", param=where)
    if part.get("type") in TEXT_PARTS:
        text = part.get("text", part.get("refusal"))
        return text if isinstance(text, str) else ""
    return None


def _chat_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    """A message's parts as chat content: a string when all text, else chat parts."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        text = _part_text(part, at)
        if text is not None:
            parts.append({"type": "text", "text": text})
        elif part.get("type") == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise Untranslatable(
                    f"{at}: only images given by 'image_url' (a URL or a data URL) can be sent "
                    "to a chat upstream.",
                    param=at,
                )
            image: dict[str, Any] = {"url": url}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise Untranslatable(
                f"{at} has type {part.get('type')!r}, which a chat upstream cannot take "
                "(input_text, output_text and input_image can).",
                param=at,
            )
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _output_text(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    texts = []
    for j, part in enumerate(output):
        text = _part_text(part, f"{where}.output[{j}]")
        if text is None:
            raise Untranslatable(
                f"{where}.output[{j}]: a tool result sent to a chat upstream must be text.",
                param=f"{where}.output",
            )
        texts.append(text)
    return "".join(texts)


def chat_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages for ``instructions`` and the conversation's items, in order.

    Consecutive function calls (and an assistant message just before them) become one assistant
    message with ``tool_calls``; reasoning items are dropped (a chat upstream takes no reasoning
    in its input, and a strict one refuses ``reasoning_content``).
    """
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for i, item in enumerate(items):
        kind = item["type"]
        where = f"input[{i}]"
        if kind == "message":
            role = ROLES[item["role"]]
            messages.append({"role": role, "content": _chat_content(item["content"], where)})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not _follows_tool(items, i):
                last.setdefault("tool_calls", []).append(call)
                if last.get("content") == "":
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            text = _output_text(item["output"], where)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind != "reasoning":
            raise Untranslatable(
                f"{where} has type {kind!r}, which provider-router cannot send to a chat "
                "upstream (it takes message, function_call, function_call_output, reasoning "
                "and item_reference items).",
                param=f"{where}.type",
            )
    return messages


def _follows_tool(items: list[dict[str, Any]], i: int) -> bool:
    """Whether the item before ``items[i]`` (skipping reasoning) is a tool result, after which a
    function call starts a new assistant turn."""
    for item in reversed(items[:i]):
        if item["type"] != "reasoning":
            return bool(item["type"] == "function_call_output")
    return False


def _tools(tools: Any) -> list[dict[str, Any]]:
    """Function tools in chat's shape. Other tool types (built-in ones such as web_search,
    file_search or computer use; custom and namespace tools) are dropped: a chat upstream runs
    only functions."""
    found = []
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"tools[{i}].name must be a string.", param=f"tools[{i}].name")
        function: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        found.append({"type": "function", "function": function})
    return found


def _tool_choice(choice: Any, names: set[str]) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if name not in names:
            raise InvalidRequest(
                f"tool_choice names function {name!r}, which is not among the tools.",
                param="tool_choice",
            )
        return {"type": "function", "function": {"name": name}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        mode = choice.get("mode")
        return mode if mode in ("auto", "required") else "auto"
    return None  # a built-in tool type: nothing to map onto


def _response_format(text: Any) -> dict[str, Any] | None:
    found = text.get("format") if isinstance(text, dict) else None
    if not isinstance(found, dict) or found.get("type") in (None, "text"):
        return None
    if found["type"] == "json_object":
        return {"type": "json_object"}
    if found["type"] == "json_schema":
        schema = {k: found[k] for k in ("name", "schema", "strict", "description") if k in found}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(
        f"text.format type {found['type']!r} is not known (text, json_object, json_schema).",
        param="text.format",
    )


def chat_body(body: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAI chat request for the Responses request ``body`` over the whole conversation's
    ``items`` (earlier turns first)."""
    messages = chat_messages(body.get("instructions"), items)
    if not messages:
        raise InvalidRequest("Field 'input' must hold at least one message.", param="input")
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "user"):
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("metadata"):
        chat["metadata"] = body["metadata"]
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), {t["function"]["name"] for t in tools})
        if choice is not None:
            chat["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    if body.get("stream") is True:
        # The usage chunk carries the cached and reasoning token counts the answer reports.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def arguments_text(arguments: Any) -> str:
    """A tool call's arguments as the JSON string Responses carries."""
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments if arguments is not None else {}).decode()
