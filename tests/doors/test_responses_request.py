"""Responses requests as chat bodies (pure): items, tools, options, and what is dropped."""

from __future__ import annotations

from typing import Any

import pytest

from router.doors.responses_request import (
    chat_body,
    chat_messages,
    check_request,
    input_items,
    resolve_references,
)
from router.errors import InvalidRequest

FUNCTION = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a command",
    "strict": False,
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
}


def translate(body: dict[str, Any]) -> dict[str, Any]:
    check_request(body)
    return chat_body(body, input_items(body["input"]))


def test_a_string_input_is_one_user_message_with_an_id() -> None:
    [item] = input_items("Hello")
    assert item["type"] == "message" and item["role"] == "user"
    assert item["content"] == [{"type": "input_text", "text": "Hello"}]
    assert item["id"].startswith("msg_") and len(item["id"]) == 52


def test_given_item_ids_are_kept() -> None:
    items = input_items([{"type": "message", "id": "msg_given", "role": "user", "content": "x"}])
    assert items[0]["id"] == "msg_given"


def test_codex_style_input_developer_messages_and_tools() -> None:
    body = {
        "model": "m",
        "input": [
            {"type": "message", "id": "msg_1", "role": "developer",
             "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"type": "message", "id": "msg_2", "role": "user",
             "content": [{"type": "input_text", "text": "<env/>"},
                         {"type": "input_text", "text": " Fix it."}]},
        ],
        "tools": [
            FUNCTION,
            {"type": "namespace", "name": "multi_agent_v1", "tools": [FUNCTION]},
            {"type": "web_search", "external_web_access": False},
            {"type": "custom", "name": "apply_patch"},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "k",
        "client_metadata": {"a": "b"},
        "stream": True,
    }  # fmt: skip
    assert translate(body) == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are Codex."},
            {"role": "user", "content": "<env/> Fix it."},
        ],
        "tools": [{"type": "function", "function": {
            "name": "exec_command", "description": "Run a command", "parameters":
            FUNCTION["parameters"], "strict": False,
        }}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip


def test_consecutive_function_calls_merge_into_one_assistant_turn() -> None:
    items = input_items(
        [
            {"role": "user", "content": "Two calls please"},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "Calling.", "annotations": []}]},
            {"type": "reasoning", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "b", "arguments": '{"x":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2",
             "output": [{"type": "input_text", "text": "two"}]},
            {"type": "function_call", "call_id": "c3", "name": "a", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c3", "output": "three"},
        ]
    )  # fmt: skip
    messages = chat_messages(None, items)
    assert messages == [
        {"role": "user", "content": "Two calls please"},
        {"role": "assistant", "content": "Calling.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c3", "type": "function", "function": {"name": "a", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "c3", "content": "three"},
    ]  # fmt: skip


def test_images_become_image_url_parts() -> None:
    items = input_items(
        [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
        ]}]
    )  # fmt: skip
    assert chat_messages(None, items)[0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
    ]


def test_options_map_onto_chat() -> None:
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": "Hi",
        "max_output_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u",
        "metadata": {"k": "v"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"},
                            "strict": True}, "verbosity": "low"},
        "reasoning": {"effort": "high", "summary": "detailed"},
        "tools": [FUNCTION],
        "tool_choice": {"type": "function", "name": "exec_command"},
        "parallel_tool_calls": False,
        "service_tier": "flex",
        "truncation": "auto",
    }  # fmt: skip
    chat = translate(body)
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat["max_tokens"] == 64 and chat["temperature"] == 0.2 and chat["top_p"] == 0.9
    assert chat["user"] == "u" and chat["metadata"] == {"k": "v"}
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert chat["reasoning_effort"] == "high"
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "exec_command"}}
    assert chat["parallel_tool_calls"] is False
    assert not set(chat) & {"service_tier", "truncation", "text", "reasoning", "stream_options"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "file_search_call"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input[0].content[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
         "input[0].content[0]"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "a"}]},
         "input[0].arguments"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"input": 3}, "input"),
        ({"input": "x", "tool_choice": {"type": "function", "name": "nope"},
          "tools": [FUNCTION]}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format"),
        ({"input": "x", "previous_response_id": ""}, "previous_response_id"),
        ({"input": "x", "instructions": ["a"]}, "instructions"),
        ({"input": "x", "metadata": "a"}, "metadata"),
        ({"input": []}, "input"),
    ],
)  # fmt: skip
def test_what_cannot_be_translated_is_a_400_naming_the_field(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        translate({"model": "m", **body})
    assert raised.value.param == param and raised.value.message


def test_item_references_resolve_against_the_stored_conversation() -> None:
    earlier = input_items([{"type": "message", "id": "msg_old", "role": "user", "content": "a"}])
    items = input_items([{"type": "item_reference", "id": "msg_old"}])
    assert resolve_references(items, earlier) == earlier
    with pytest.raises(InvalidRequest, match="msg_gone"):
        resolve_references(input_items([{"type": "item_reference", "id": "msg_gone"}]), earlier)
