"""Request validation and the split of a transcript into the turn Letta has not seen."""

from __future__ import annotations

import time

import pytest

from letta_hayhooks.errors import OpenAIError
from letta_hayhooks.json_body import MAX_NESTING
from letta_hayhooks.openai_request import (
    RequestLimits,
    split_new_turn,
    to_letta_content,
    validate_chat_request,
)
from letta_hayhooks.settings import Settings

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


def refusal(messages, **body) -> OpenAIError:
    with pytest.raises(OpenAIError) as error:
        validate_chat_request("agent", messages, {"messages": messages, **body}, limits=LIMITS)
    assert error.value.status == 400
    return error.value


LIMITS = RequestLimits(max_messages=50, max_new_user_messages=4, max_content_parts=3)
USER = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    ("messages", "code", "setting"),
    [
        ([{"role": "user", "content": "w"}] * 51, "too_many_messages", "LETTA_HAYHOOKS_MAX_MESSAGES"),
        ([{"role": "user", "content": "w"}] * 5, "too_many_new_messages", "LETTA_HAYHOOKS_MAX_NEW_USER_MESSAGES"),
        ([{"role": "user", "content": [{"type": "text", "text": "a"}] * 4}], "too_many_content_parts",
         "LETTA_HAYHOOKS_MAX_CONTENT_PARTS"),
    ],
)
def test_caps_name_the_limit_and_the_setting(messages, code, setting) -> None:
    error = refusal(messages)
    assert error.code == code and setting in error.message


def test_caps_at_the_limit_pass_and_history_is_not_a_new_turn() -> None:
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}] * 23
    request = validate_chat_request("agent", [*history, *[{"role": "user", "content": "n"}] * 4], {}, limits=LIMITS)
    assert len(request.new_turn.user_messages) == 4
    validate_chat_request("agent", [{"role": "user", "content": [{"type": "text", "text": "a"}] * 3}], {},
                          limits=LIMITS)


def test_twenty_thousand_messages_are_refused_before_any_per_message_work() -> None:
    messages = [{"role": "user", "content": "word"}] * 20_000
    started = time.perf_counter()
    with pytest.raises(OpenAIError) as error:
        validate_chat_request("agent", messages, {"messages": messages})
    assert error.value.code == "too_many_messages" and time.perf_counter() - started < 0.05


def test_limits_come_from_the_settings() -> None:
    assert RequestLimits.from_settings(Settings.model_construct()) == RequestLimits()  # defaults, no env
    custom = Settings(LETTA_HAYHOOKS_MAX_MESSAGES="7", LETTA_HAYHOOKS_IMAGE_URLS="off",
                      LETTA_HAYHOOKS_IMAGE_URL_ALLOWED_HOSTS="Images.Internal., cdn.lan",
                      LETTA_HAYHOOKS_MAX_SYSTEM_PROMPT_BYTES="99")
    limits = RequestLimits.from_settings(custom)
    assert limits.max_messages == 7 and limits.image_urls == "off" and limits.max_system_bytes == 99
    assert limits.image_url_allowed_hosts == {"images.internal", "cdn.lan"}


@pytest.mark.parametrize(
    ("messages", "body", "param"),
    [
        ([{"role": "user", "content": "hi \ud800"}], {}, "messages[0].content"),
        ([{"role": "system", "content": "\udfff"}, *USER], {}, "messages[0].content"),
        ([{"role": "user", "content": [{"type": "text", "text": "\ud83d"}]}], {}, "messages[0].content[0].text"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b\udc00"}, *USER], {},
         "messages[1].content"),
        (USER, {"tools": [{"type": "function", "function": {"name": "f", "description": "\ud800"}}]},
         "tools[0].function.description"),
        (USER, {"user": "\ud800"}, "user"),
    ],
)
def test_lone_surrogates_are_refused_where_they_are(messages, body, param) -> None:
    error = refusal(messages, **body)
    assert error.code == "invalid_unicode" and error.param == param


def test_valid_astral_characters_pass() -> None:
    assert check([{"role": "user", "content": "emoji \U0001f600 ok"}]).new_turn.user_messages


def test_deep_nesting_is_refused_naming_the_field() -> None:
    deep: dict = {"type": "string"}
    for _ in range(MAX_NESTING):
        deep = {"type": "object", "properties": {"x": deep}}
    error = refusal(USER, tools=[{"type": "function", "function": {"name": "f", "parameters": deep}}])
    assert error.code == "nested_too_deeply" and error.param == "tools"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "hot"), ("temperature", 2.5), ("temperature", -0.1), ("temperature", True),
        ("temperature", float("nan")), ("temperature", float("inf")),
        ("top_p", 1.5), ("top_p", "1"), ("presence_penalty", -3), ("frequency_penalty", 2.01),
        ("max_tokens", -1), ("max_tokens", 0), ("max_tokens", 10**40), ("max_tokens", 1.5), ("max_tokens", "64"),
        ("max_completion_tokens", 2**31), ("n", 1.0), ("n", True), ("seed", 2**63), ("seed", "7"),
        ("stop", 5), ("stop", ["a", "b", "c", "d", "e"]), ("stop", [1]),
        ("logit_bias", []), ("logit_bias", {"abc": 1}), ("logit_bias", {"50256": 101}),
        ("parallel_tool_calls", "yes"), ("logprobs", 1), ("top_logprobs", 21), ("top_logprobs", "2"),
        ("user", 5), ("metadata", "x"), ("metadata", {"k": 1}), ("metadata", {f"k{i}": "v" for i in range(17)}),
        ("stream_options", "x"), ("response_format", "json"), ("response_format", {"type": "xml"}),
    ],
)
def test_wrong_types_and_ranges_name_the_field(field, value) -> None:
    error = refusal(USER, **{field: value})
    assert error.param == field and error.code is None, error.message


def test_include_usage_must_be_a_boolean() -> None:
    assert refusal(USER, stream_options={"include_usage": "yes"}).param == "stream_options.include_usage"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ("response_format", {"type": "json_object"}),
        ("logprobs", True), ("top_logprobs", 3),
        ("functions", [{"name": "f", "parameters": {}}]), ("function_call", "auto"),
        ("audio", {"voice": "alloy", "format": "wav"}), ("modalities", ["text", "audio"]),
    ],
)
def test_parameters_letta_cannot_honour_are_refused(field, value) -> None:
    error = refusal(USER, **{field: value})
    assert error.code == "unsupported_parameter" and error.param == field and f"'{field}'" in error.message


def test_sampling_parameters_of_the_right_type_are_accepted() -> None:
    request = check(USER, temperature=0, top_p=1, max_tokens=64, max_completion_tokens=2**31 - 1, stop=["\n\n"],
                    seed=-7, presence_penalty=-2, frequency_penalty=2.0, n=1, logit_bias={"50256": -100},
                    parallel_tool_calls=False, user="u", metadata={"k": "v"}, response_format={"type": "text"},
                    logprobs=False, top_logprobs=0, stream_options={"include_usage": True}, stream=True,
                    modalities=["text"], store=False, reasoning_effort="low")
    assert request.include_usage is True


def test_empty_content_lists() -> None:
    assert refusal([{"role": "user", "content": []}]).param == "messages[0].content"
    assert refusal([{"role": "system", "content": []}, *USER]).param == "messages[0].content"
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": []}, *USER]
    assert check(history).new_turn.user_positions == [2]
