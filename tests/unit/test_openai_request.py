"""Request validation and the split of a transcript into the turn Letta has not seen."""

from __future__ import annotations

import pytest

from letta_hayhooks.errors import OpenAIError
from letta_hayhooks.openai_request import split_new_turn, to_letta_content, validate_chat_request

PIXEL = "data:image/png;base64,iVBORw0KGgo="


def check(messages, **body):
    return validate_chat_request("agent", messages, {"messages": messages, **body}, max_system_bytes=1000)


def test_new_turn_is_the_trailing_user_messages() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
                {"role": "user", "content": "d"}]
    turn = split_new_turn(messages)
    assert [m["content"] for m in turn.user_messages] == ["c", "d"] and turn.user_positions == [3, 4]
    assert turn.tool_results == []


def test_new_turn_after_tool_calls_is_the_results() -> None:
    messages = [{"role": "user", "content": "a"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                       "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    turn = split_new_turn(messages)
    assert turn.user_messages == [] and [m["tool_call_id"] for m in turn.tool_results] == ["c1"]


def test_system_prompt_joins_system_and_developer_messages() -> None:
    request = check([{"role": "system", "content": "one"}, {"role": "developer", "content": [{"type": "text",
                                                                                             "text": "two"}]},
                     {"role": "user", "content": "hi"}])
    assert request.system_prompt == "one\n\ntwo"


@pytest.mark.parametrize(
    ("messages", "body", "status", "param"),
    [
        ([], {}, 400, "messages"),
        ([{"role": "system", "content": "s"}], {}, 400, "messages"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], {}, 400, "messages"),
        ([{"role": "user", "content": 3}], {}, 400, "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}], {}, 400,
         "messages[0].content[0]"),
        ([{"role": "user", "content": "x"}], {"n": 2}, 400, "n"),
        ([{"role": "user", "content": "x"}], {"stream": "yes"}, 400, "stream"),
        ([{"role": "system", "content": "x" * 1001}, {"role": "user", "content": "x"}], {}, 413, "messages"),
        ([{"role": "user", "content": "x"}], {"tool_choice": "required", "tools": []}, 400, "tool_choice"),
        ([{"role": "user", "content": "x"}], {"letta_tool_activity": "loud"}, 400, "letta_tool_activity"),
    ],
)
def test_bad_requests(messages, body, status, param) -> None:
    with pytest.raises(OpenAIError) as error:
        check(messages, **body)
    assert error.value.status == status and error.value.param == param


def test_tools_are_normalised() -> None:
    request = check([{"role": "user", "content": "x"}], tools=[{"type": "function", "function": {"name": "f"}}])
    assert request.tools == [{"name": "f", "description": "", "parameters": {"type": "object", "properties": {}}}]
    assert request.tool_choice == "auto"


def test_letta_content_joins_text_and_keeps_images() -> None:
    assert to_letta_content({"content": "plain"}) == "plain"
    assert to_letta_content({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}) == "a\nb"
    parts = to_letta_content({"content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]})
    assert parts == [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo=",
                                     "detail": "low"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]
