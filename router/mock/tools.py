"""Tool calls on request, shared by every format the fake upstream speaks.

A request that has tools gets a tool call instead of text when its last user turn contains the
magic word ``mock-tool-call`` (the first tool is called) or ``mock-tool-call:NAME`` (tool NAME),
when its ``tool_choice`` demands one (``"required"``: the first tool; a named function: that
one), or, in OpenAI's format, on every user turn when the fake runs with ``tool_calls="always"``
(``mock-upstream --tool-calls always``).
A turn that answers a tool call (tool results) always gets text, so an agent's loop ends. The
call's arguments are built from the tool's JSON schema: an enum's first value, strings "mock",
numbers 1, booleans true, null for other types. Coding agents (Claude Code, Codex) put the magic
word in their prompt, as the tests through the gateway do.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp

from router.mock.faults import BodyStream, json_reply
from router.mock.options import CUT_SHORT

MAGIC_WORD = "mock-tool-call"
_REQUEST = re.compile(re.escape(MAGIC_WORD) + r"(?::([A-Za-z0-9_.\-]+))?")
_SAMPLES: dict[Any, Any] = {"string": "mock", "integer": 1, "number": 1, "boolean": True}


def requested_tool(text: str, names: list[str]) -> str | None:
    """The tool ``text`` asks the fake to call, among ``names``; None when it asks for none."""
    found = _REQUEST.search(text)
    if found is None or not names:
        return None
    wanted = found.group(1)
    if wanted is None:
        return names[0]
    return wanted if wanted in names else None


def sample_input(schema: Any) -> dict[str, Any]:
    """Arguments for a tool from its JSON schema's top-level properties: an enum's first value,
    else by type (null for types other than strings, numbers and booleans)."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    return {name: _sample(spec) for name, spec in (properties or {}).items()}


def _sample(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return None
    choices = spec.get("enum")
    if isinstance(choices, list) and choices:
        return choices[0]
    return _SAMPLES.get(spec.get("type"))


def openai_tool_call(body: dict[str, Any], mode: str = "on-request") -> dict[str, Any] | None:
    """The OpenAI tool call to answer ``body`` (a chat request) with, if it asks for one (or
    ``mode`` is ``"always"``)."""
    tools = [
        t["function"]
        for t in body.get("tools") or []
        if isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
    ]
    # Claude Code puts its environment in a system turn after the user's: look past those.
    turns = [m for m in body["messages"] if m.get("role") not in ("system", "developer")]
    last = turns[-1] if turns else {}
    choice = body.get("tool_choice")
    if not tools or last.get("role") != "user" or choice == "none":
        return None
    content = last.get("content")
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    names = [t["name"] for t in tools]
    name = requested_tool(str(content or ""), names)
    forced = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(forced, dict) and forced.get("name") in names:
        name = str(forced["name"])
    elif name is None and (choice == "required" or mode == "always"):
        name = names[0]
    if name is None:
        return None
    schema = next(t.get("parameters") for t in tools if t["name"] == name)
    arguments = orjson.dumps(sample_input(schema)).decode()
    call_id = f"call_mock_{uuid.uuid4().hex[:20]}"
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def openai_tool_answer(
    head: dict[str, Any],
    call: dict[str, Any],
    prompt: int,
    stream: bool,
    with_usage: bool,
    delay: float,
    kind: str,
) -> ASGIApp:
    """The OpenAI chat answer (a ``chat.completion`` or its chunks) that makes ``call``."""
    usage = {"prompt_tokens": prompt, "completion_tokens": 1, "total_tokens": prompt + 1}
    if not stream:
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
        return json_reply({**head, "choices": [choice], "usage": usage}, kind)
    frame: dict[str, Any] = {**head, "object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        data = {**frame, "choices": [choice]}
        if with_usage:
            data["usage"] = None
        return b"data: " + orjson.dumps(data) + b"\n\n"

    function = call["function"]
    started = {**call, "index": 0, "function": {"name": function["name"], "arguments": ""}}
    events = [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [started]}),
    ]
    broken = kind in CUT_SHORT or kind == "stall"
    if not broken:
        arguments = function["arguments"]
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
        events.append(chunk({}, "tool_calls"))
        if with_usage:
            events.append(
                b"data: " + orjson.dumps({**frame, "choices": [], "usage": usage}) + b"\n\n"
            )
        events.append(b"data: [DONE]\n\n")
    paced = range(1, len(events))
    return BodyStream(events, paced, delay, abort=kind == "disconnect", stall=kind == "stall")
