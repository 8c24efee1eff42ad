"""OpenAI chat requests to Gemini ``generateContent`` requests, and Gemini answers back.

Pure functions, no I/O, so every rule can be tested on its own; the adapter beside this does the
HTTP. The formats (Gemini API ``v1beta``):

- ``contents``: turns with ``role`` "user" or "model" and ``parts`` (``text``, ``inlineData``,
  ``fileData``, ``functionCall``, ``functionResponse``); system and developer messages go to
  ``systemInstruction``. Consecutive turns of one role are merged, so tool results answering
  parallel calls arrive in one turn, as Gemini wants.
- Parameters go to ``generationConfig``; tools to ``tools[].functionDeclarations`` whose
  ``parameters`` accept only a subset of OpenAPI 3.0 schema: :func:`gemini_schema` keeps that
  subset, since one unknown keyword (``additionalProperties``, ``$schema``, ``const``...) makes
  Gemini refuse the whole request.
- Gemini function calls may carry no id: :func:`call_id` derives one from the response id and
  the call's position, so a stream's deltas and a retried read of the same answer agree.

A request Gemini cannot take (a tool result for an unknown call, an unsupported content part)
raises :class:`TranslationError`, which the adapter answers as a 400 in OpenAI's shape.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from providers.base import Usage
from providers.translate import TranslationError, parse_data_url, stop_list, token_limit

__all__ = [
    "SKIP_SIGNATURE",
    "CallMemo",
    "TranslationError",
    "call_id",
    "finish_reason",
    "gemini_request",
    "gemini_schema",
    "usage_from",
]

# Gemini 3 wants the thoughtSignature of a function call back with the call. A call whose
# signature we no longer know is sent with this value, which Gemini documents as "skip the check".
SKIP_SIGNATURE = "skip_thought_signature_validator"

_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"})
_FILTERED |= {"IMAGE_SAFETY"}
_SCHEMA_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "items", "properties",
        "required", "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum",
        "maximum", "minProperties", "maxProperties", "anyOf", "propertyOrdering",
    }
)  # fmt: skip
_FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}}
_FORMATS["INTEGER"] = {"int32", "int64"}
_MAX_REF_DEPTH = 8


@dataclass(frozen=True)
class CallMemo:
    """What Gemini attached to a function call that must go back with it in the next turn."""

    signature: str | None = None
    native_id: bool = False  # the id came from Gemini (not made up by us): send it back


def call_id(response_id: str | None, index: int, given: Any = None) -> str:
    """The OpenAI id of the ``index``-th function call of one answer.

    Gemini's own id when it sent one; otherwise derived from the response id, so the streamed
    and final forms of one answer name their calls alike.
    """
    if isinstance(given, str) and given:
        return given
    seed = f"{response_id or ''}:{index}".encode()
    return "call_" + hashlib.blake2b(seed, digest_size=12).hexdigest()


def finish_reason(gemini_reason: str | None, has_tool_calls: bool) -> str:
    """OpenAI's finish_reason for a Gemini ``finishReason``."""
    if gemini_reason == "MAX_TOKENS":
        return "length"
    if gemini_reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if has_tool_calls else "stop"


def usage_from(metadata: Any) -> Usage | None:
    """OpenAI usage from ``usageMetadata``; thinking tokens count as completion tokens."""
    if not isinstance(metadata, dict):
        return None

    def count(key: str) -> int | None:
        value = metadata.get(key)
        return value if type(value) is int and 0 <= value < 2**53 else None

    prompt = count("promptTokenCount")
    candidates, thoughts = count("candidatesTokenCount"), count("thoughtsTokenCount")
    completion = None if candidates is None and thoughts is None else (candidates or 0)
    if completion is not None and thoughts:
        completion += thoughts
    total = count("totalTokenCount")
    if total is None and prompt is not None:
        total = prompt + (completion or 0)
    return Usage(prompt, completion, total)


def gemini_request(body: Mapping[str, Any], memos: Mapping[str, CallMemo]) -> dict[str, Any]:
    """The ``generateContent`` body for an OpenAI chat request ``body``.

    ``memos``: what the adapter remembers of function calls it returned before, by call id.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("Field 'messages' must be an array.", "messages")
    system, contents = _contents(messages, memos)
    if not contents:
        raise TranslationError(
            "Gemini needs at least one user or assistant message besides system messages.",
            "messages",
        )
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    tools = _tools(body.get("tools"))
    if tools:
        request["tools"] = tools
        tool_config = _tool_config(body.get("tool_choice"))
        if tool_config:
            request["toolConfig"] = tool_config
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    return request


def _contents(
    messages: list[Any], memos: Mapping[str, CallMemo]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for n, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TranslationError(f"Message {n} must be an object.", "messages")
        role = message.get("role")
        where = f"messages[{n}]"
        if role in ("system", "developer"):
            system.extend(_text_parts(message.get("content"), where))
            continue
        if role == "user":
            turn, parts = "user", _user_parts(message.get("content"), where)
        elif role == "assistant":
            turn, parts = "model", _assistant_parts(message, where, call_names, memos)
        elif role in ("tool", "function"):
            turn, parts = "user", [_tool_result(message, where, call_names, memos)]
        else:
            raise TranslationError(f"Message {n} has an unknown role {role!r}.", where)
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    return system, contents


def _text_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or an array.", where)
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise TranslationError(
                f"{where}: Gemini takes only text here, not {_part_type(part)!r} parts.", where
            )
        if part.get("text"):
            parts.append({"text": str(part["text"])})
    return parts


def _part_type(part: Any) -> str:
    return str(part.get("type")) if isinstance(part, dict) else type(part).__name__


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_parts(content, where)
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = _part_type(part)
        if kind == "text":
            parts.extend(_text_parts([part], where))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_media_part(url, where, "image"))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            if not isinstance(audio.get("data"), str) or not isinstance(audio.get("format"), str):
                raise TranslationError(f"{where}: input_audio needs 'data' and 'format'.", where)
            mime = "audio/" + audio["format"]
            parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        elif kind == "file":
            file = part.get("file") or {}
            if not isinstance(file.get("file_data"), str):
                raise TranslationError(
                    f"{where}: Gemini needs a file's content as 'file_data' (a data URL); "
                    "file ids of another provider mean nothing to it.",
                    where,
                )
            parts.append(_media_part(file["file_data"], where, "file"))
        else:
            raise TranslationError(f"{where}: unsupported content part type {kind!r}.", where)
    return parts


def _media_part(url: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(url, str):
        raise TranslationError(f"{where}: the {what} needs a URL.", where)
    data = parse_data_url(url)
    if data is not None:
        return {"inlineData": {"mimeType": data[0], "data": data[1]}}
    if urlsplit(url).scheme in ("http", "https"):
        # Gemini fetches public (or pre-signed) http(s) URLs given as fileData itself.
        file_data = {"fileUri": url}
        guessed = mimetypes.guess_type(urlsplit(url).path)[0]
        if guessed:
            file_data["mimeType"] = guessed
        return {"fileData": file_data}
    raise TranslationError(
        f"{where}: the {what} must be a base64 data URL or an http(s) URL.", where
    )


def _assistant_parts(
    message: dict[str, Any],
    where: str,
    call_names: dict[str, str],
    memos: Mapping[str, CallMemo],
) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, list):
        content = [p for p in content if not (isinstance(p, dict) and p.get("type") == "refusal")]
    parts = _text_parts(content, where)
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise TranslationError(f"{where}.tool_calls must be an array.", where)
    for i, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError(f"{where}.tool_calls[{i}] needs a function name.", where)
        args = _arguments(function.get("arguments"), f"{where}.tool_calls[{i}]")
        name, cid = function["name"], call.get("id")
        gemini_call: dict[str, Any] = {"name": name, "args": args}
        memo = memos.get(cid) if isinstance(cid, str) else None
        if memo is not None and memo.native_id:
            gemini_call["id"] = cid
        part: dict[str, Any] = {"functionCall": gemini_call}
        if memo is not None and memo.signature:
            part["thoughtSignature"] = memo.signature
        elif i == 0:
            part["thoughtSignature"] = SKIP_SIGNATURE
        parts.append(part)
        if isinstance(cid, str):
            call_names[cid] = name
    return parts


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        args = orjson.loads(raw) if isinstance(raw, str | bytes) else None
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise TranslationError(
            f"{where}.function.arguments must be a JSON object (as a string).", where
        )
    return args


def _tool_result(
    message: dict[str, Any],
    where: str,
    call_names: dict[str, str],
    memos: Mapping[str, CallMemo],
) -> dict[str, Any]:
    cid = message.get("tool_call_id")
    name = call_names.get(cid) if isinstance(cid, str) else None
    if name is None and isinstance(message.get("name"), str):
        name = message["name"]
    if name is None:
        raise TranslationError(
            f"{where} answers tool_call_id {cid!r}, which no earlier assistant tool call has; "
            "Gemini needs the function's name.",
            where,
        )
    content = message.get("content")
    text = content if isinstance(content, str) else "".join(
        str(p.get("text", "")) for p in content or [] if isinstance(p, dict)
    )  # fmt: skip
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"output": text}
    result: dict[str, Any] = {"name": name, "response": response}
    memo = memos.get(cid) if isinstance(cid, str) else None
    if memo is not None and memo.native_id:
        result["id"] = cid
    return {"functionResponse": result}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not tools:
        return []
    if not isinstance(tools, list):
        raise TranslationError("Field 'tools' must be an array.", "tools")
    declarations = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise TranslationError(
                f"tools[{i}]: Gemini takes only tools of type 'function'.", "tools"
            )
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise TranslationError(f"tools[{i}].function needs a name.", "tools")
        declaration: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            declaration["description"] = function["description"]
        parameters = function.get("parameters")
        if isinstance(parameters, dict) and parameters.get("properties"):
            declaration["parameters"] = gemini_schema(parameters)
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"functionCallingConfig": {"mode": modes[choice]}}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        config = {"mode": "ANY", "allowedFunctionNames": [function["name"]]}
        return {"functionCallingConfig": config}
    raise TranslationError(
        "Field 'tool_choice' must be 'auto', 'none', 'required' or a named function.",
        "tool_choice",
    )


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    n = body.get("n")
    if n not in (None, 1):
        raise TranslationError("This Gemini provider answers with one choice only (n=1).", "n")
    config: dict[str, Any] = {}
    limit = token_limit(body)
    if limit is not None:
        config["maxOutputTokens"] = limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    stop = stop_list(body.get("stop"))
    if stop:
        config["stopSequences"] = stop
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind in ("json_object", "json_schema"):
            config["responseMimeType"] = "application/json"
        spec = response_format.get("json_schema")
        if (
            kind == "json_schema"
            and isinstance(spec, dict)
            and isinstance(spec.get("schema"), dict)
        ):
            config["responseSchema"] = gemini_schema(spec["schema"])
    return config


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a JSON schema that Gemini's ``Schema`` object accepts.

    Keeps the OpenAPI 3.0 subset Gemini knows; resolves local ``$ref``s; turns ``oneOf`` into
    ``anyOf``, ``const`` into a one-value ``enum``, ``["string", "null"]`` into ``nullable``;
    drops every other keyword (``additionalProperties``, ``$schema``, ``default``, ...).
    """
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            defs.update({f"#/{key}/{name}": value for name, value in schema[key].items()})
    return _clean(schema, defs, 0)


def _clean(schema: Any, defs: Mapping[str, Any], depth: int) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref)
        if target is None or depth >= _MAX_REF_DEPTH:
            return {"description": schema.get("description", f"(schema {ref} not expanded)")}
        return _clean(
            {**target, **{k: v for k, v in schema.items() if k != "$ref"}}, defs, depth + 1
        )
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        schema = {**all_of[0], **{k: v for k, v in schema.items() if k != "allOf"}}
    out: dict[str, Any] = {}
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [str(k).upper() for k in kind if k != "null"]
        if len(kinds) < len(kind):
            out["nullable"] = True
        if len(kinds) == 1:
            out["type"] = kinds[0]
        elif kinds:
            out["anyOf"] = [{"type": k} for k in kinds]
    elif isinstance(kind, str):
        out["type"] = kind.upper()
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS or key in ("type", "anyOf"):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _clean(sub, defs, depth) for name, sub in value.items()}
        elif key == "items":
            out[key] = _clean(value[0] if isinstance(value, list) and value else value, defs, depth)
        elif key == "enum" and isinstance(value, list):
            out[key] = [v if isinstance(v, str) else orjson.dumps(v).decode() for v in value]
        else:
            out[key] = value
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(alternatives, list):
        cleaned = [_clean(a, defs, depth) for a in alternatives if a != {"type": "null"}]
        if len(cleaned) < len(alternatives):
            out["nullable"] = True
        out["anyOf"] = out.get("anyOf", []) + cleaned
    if "const" in schema and "enum" not in out:
        const = schema["const"]
        out["enum"] = [const if isinstance(const, str) else orjson.dumps(const).decode()]
    if "format" in out and out["format"] not in _FORMATS.get(out.get("type", ""), ()):
        del out["format"]
    if isinstance(out.get("required"), list):
        known = out.get("properties") or {}
        out["required"] = [name for name in out["required"] if name in known]
        if not out["required"]:
            del out["required"]
    return out
