"""Messages request -> chat body: what maps across, what stays where it is, what is dropped."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.doors.messages_request import DROPPED_FIELDS, chat_body
from router.errors import InvalidRequest

IMAGE = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def translate(**fields: Any) -> dict[str, Any]:
    body = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
    return chat_body({**body, **fields})


def test_system_blocks_and_an_in_messages_system_turn_stay_where_they_stand() -> None:
    chat = translate(
        system=[{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Be kind."}],
        messages=[
            {"role": "user", "content": "Where am I?"},
            {"role": "system", "content": "<env>cwd: /work/project</env>"},
            {"role": "assistant", "content": "Let me see."},
        ],
    )
    assert chat["messages"] == [
        {"role": "system", "content": "You are terse.\n\nBe kind."},
        {"role": "user", "content": "Where am I?"},
        {"role": "system", "content": "<env>cwd: /work/project</env>"},
        {"role": "assistant", "content": "Let me see."},
    ]


def test_tool_use_and_tool_result_become_paired_calls_and_tool_messages() -> None:
    chat = translate(
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "Look"},
                {"type": "image", "source": IMAGE},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hidden", "signature": "sig"},
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "/a"}},
                {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"path": "/b"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "no such file"}]},
                {"type": "text", "text": "Go on."},
            ]},
        ],
    )  # fmt: skip
    user, assistant, first, second, after = chat["messages"]
    assert user["content"] == [
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    assert assistant["content"] == "Reading."
    assert [c["id"] for c in assistant["tool_calls"]] == ["toolu_1", "toolu_2"]
    assert orjson.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"path": "/a"}
    assert first == {"role": "tool", "tool_call_id": "toolu_1", "content": "A"}
    assert second == {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such file"}
    assert after == {"role": "user", "content": "Go on."}
    assert "hidden" not in orjson.dumps(chat).decode()


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "Read", "disable_parallel_tool_use": True},
            {
                "tool_choice": {"type": "function", "function": {"name": "Read"}},
                "parallel_tool_calls": False,
            },
        ),
    ],
)
def test_tools_and_tool_choice_map_across(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    tools = [
        {"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ]
    chat = translate(tools=tools, tool_choice=choice)
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "Read",
                "parameters": {"type": "object"},
                "description": "Read a file",
            },
        }
    ]
    assert {k: chat[k] for k in expected} == expected


def test_sampling_fields_map_and_anthropic_only_fields_never_leak() -> None:
    fields: dict[str, Any] = {name: {"anything": 1} for name in DROPPED_FIELDS}
    chat = translate(
        temperature=0.2,
        top_p=0.9,
        stop_sequences=["END"],
        metadata={"user_id": "user-7", "other": "x"},
        stream=True,
        **fields,
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "user-7",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"messages": [{"role": "robot", "content": "x"}]}, "'robot'"),
        ({"messages": [{"role": "user", "content": 7}]}, "content"),
        ({"tool_choice": {"type": "tool", "name": "Nope"}, "tools": [
            {"name": "Read", "input_schema": {}}
        ]}, "'Nope'"),
        ({"stop_sequences": "END"}, "stop_sequences"),
    ],
)  # fmt: skip
def test_malformed_requests_are_refused_with_a_sentence(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        translate(**fields)
    assert words in caught.value.message
