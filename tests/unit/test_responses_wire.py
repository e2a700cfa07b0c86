"""
The Responses wire without Letta: input items as chat messages, ids, and the event sequence of the SSE encoder.
"""

from __future__ import annotations

import uuid

import pytest
from haystack.dataclasses import ReasoningContent, StreamingChunk, ToolCallDelta
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from letta_hayhooks.errors import OpenAIError
from letta_hayhooks.openai_request import validate_chat_request
from letta_hayhooks.openai_responses import (
    ResponseEncoder,
    block_id_of,
    conversation_id_for,
    item_reference,
    parse_request,
    response_id_for,
    run_id_of,
    to_chat,
)

EVENTS = TypeAdapter(ResponseStreamEvent)


def chat_of(body: dict) -> tuple[list[dict], dict]:
    turn = to_chat(parse_request(body), body)
    return turn.messages, turn.body


def test_ids_name_the_letta_run_and_block_both_ways() -> None:
    run = f"run-{uuid.uuid4()}"
    assert run_id_of(response_id_for(run)) == run
    assert run_id_of("resp_not-ours") is None and run_id_of("chatcmpl-1") is None
    block = f"block-{uuid.uuid4()}"
    assert block_id_of(conversation_id_for(block)) == block and block_id_of("conv-123") is None
    hex_id = response_id_for(run).removeprefix("resp_")
    assert item_reference(f"msg_{hex_id}_1") == ("msg", f"resp_{hex_id}", 1)
    assert item_reference("msg_abc") is None


def test_instructions_and_developer_items_are_the_system_prompt() -> None:
    messages, _ = chat_of({"model": "m", "instructions": "Be brief.", "input": [
        {"role": "developer", "content": "Use tools."}, {"role": "user", "content": "hi"}]})
    request = validate_chat_request("m", messages, {})
    assert request.system_prompt == "Be brief.\n\nUse tools."
    assert request.new_turn.user_messages == [{"role": "user", "content": "hi"}]


def test_replayed_history_becomes_a_chat_transcript() -> None:
    messages, body = chat_of({"model": "m", "tools": [
        {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}},
        {"type": "web_search"}, {"type": "namespace", "name": "x"}], "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "call f"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
        {"type": "web_search_call", "id": "ws_1"}]})
    assert messages == [
        {"role": "user", "content": "call f"},
        {"role": "assistant", "content": "calling", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]
    assert [tool["function"]["name"] for tool in body["tools"]] == ["f"]  # hosted tool types left out
    request = validate_chat_request("m", messages, body)
    assert [m["tool_call_id"] for m in request.new_turn.tool_results] == ["c1", "c2"]


def test_a_result_alone_continues_a_named_conversation() -> None:
    messages, _ = chat_of({"model": "m", "previous_response_id": "resp_" + "a" * 32,
                           "input": [{"type": "function_call_output", "call_id": "c9", "output": "done"}]})
    assert messages[0]["tool_calls"][0]["id"] == "c9" and messages[1]["role"] == "tool"
    with pytest.raises(OpenAIError):
        validate_chat_request("m", messages, {})  # a chat client must send a user message...
    request = validate_chat_request("m", messages, {}, require_user=False)  # ...a continuation need not
    assert request.new_turn.tool_results[0]["tool_call_id"] == "c9"


def test_images_and_unsupported_inputs() -> None:
    messages, _ = chat_of({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]})
    assert messages[0]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    for body, param in [
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input[0].content[0]"),
        ({"model": "m", "input": [{"type": "mystery"}]}, "input[0].type"),
        ({"model": "m", "input": "x", "previous_response_id": "resp_1", "conversation": "conv_1"}, "conversation"),
        ({"model": "m", "input": "x", "background": True}, "background"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"model": "m", "input": "x", "max_output_tokens": 3}, "max_output_tokens"),
    ]:
        with pytest.raises(OpenAIError) as error:
            chat_of(body)
        assert (error.value.status, error.value.param) == (400, param)


def test_accepted_knobs_are_checked_like_chat_parameters() -> None:
    _, body = chat_of({"model": "m", "input": "x", "temperature": 0.5, "top_p": 1, "store": False,
                       "parallel_tool_calls": False, "max_output_tokens": 64, "prompt_cache_key": "k",
                       "client_metadata": {"a": 1}, "include": ["reasoning.encrypted_content"],
                       "reasoning": {"summary": "auto"}, "truncation": "auto", "metadata": {"a": "b"}})
    validate_chat_request("m", body["messages"], body)
    _, bad = chat_of({"model": "m", "input": "x", "temperature": 5})
    with pytest.raises(OpenAIError) as error:
        validate_chat_request("m", bad["messages"], bad)
    assert error.value.param == "temperature"


def run_chunks() -> list[StreamingChunk]:
    return [
        StreamingChunk(content="", meta={"run_id": "run-x"}),
        StreamingChunk(content="", index=0, reasoning=ReasoningContent(reasoning_text="think")),
        StreamingChunk(content="Hel", index=0), StreamingChunk(content="lo", index=0),
        StreamingChunk(content="", index=0, tool_calls=[ToolCallDelta(index=0, id="c1", tool_name="f",
                                                                      arguments='{"a"')]),
        StreamingChunk(content="", index=0, tool_calls=[ToolCallDelta(index=0, arguments=": 1}")]),
    ]


def test_the_event_sequence_is_what_the_sdk_accumulates() -> None:
    encoder = ResponseEncoder("resp_" + "b" * 32, "m", parse_request({"model": "m", "input": "x"}).echo)
    events = encoder.start()
    for chunk in run_chunks():
        events += encoder.feed(chunk)
    events += encoder.complete("tool_calls", {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    state = ResponseStreamState(input_tools=[], text_format=omit)  # the SDK's own accumulator and its checks
    for event in events:
        state.handle_event(EVENTS.validate_python(event))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["usage"]["total_tokens"] == 5
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "Hello"
    assert final["output"][2]["arguments"] == '{"a": 1}' and final["output"][2]["call_id"] == "c1"
    assert [item["id"] for item in final["output"]] == [f"{kind}_{'b' * 32}_{i}" for i, kind in
                                                        enumerate(("rs", "msg", "fc"))]


def test_a_failure_ends_the_stream_with_response_failed() -> None:
    encoder = ResponseEncoder("resp_" + "c" * 32, "m", {})
    events = [*encoder.start(), *encoder.feed(StreamingChunk(content="part", index=0))]
    events += encoder.fail(OpenAIError(504, "too slow", type="server_error", code="letta_timeout"))
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "too slow"}
    assert events[-1]["response"]["status"] == "failed"


def test_a_cut_off_answer_is_incomplete() -> None:
    encoder = ResponseEncoder("resp_" + "d" * 32, "m", {})
    encoder.start()
    encoder.feed(StreamingChunk(content="long", index=0))
    events = encoder.complete("length", None)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
