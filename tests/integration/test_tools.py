"""
OpenAI tools as Letta client tools, against the real Letta server.

Proves: the agent's calls come back as OpenAI tool_calls (non-stream and stream, parallel calls in order); tool
results go back and the agent answers with them; nothing is registered on the agent; the agent's own tools never
show up as client calls; malformed tools and unknown tool_call_ids get a 400.
"""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest

from tests.conftest import Backend, Server, wait_for_model

pytestmark = pytest.mark.integration

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def agent(letta_backend: Backend, server: Server):
    created = letta_backend.create_agent("tools", model_settings={"provider_type": "openai",
                                                                  "parallel_tool_calls": True})
    wait_for_model(server.url, created.name)
    return created


def client_for(server: Server) -> openai.OpenAI:
    session = f"tools-{uuid.uuid4().hex}"
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60,
                         default_headers={"X-Session-Id": session})


def test_tool_call_round_trip_non_stream(letta_backend: Backend, server: Server, agent) -> None:
    tools_before = sorted(t.name for t in letta_backend.client.agents.tools.list(agent.id))
    client = client_for(server)
    messages = [{"role": "user", "content": 'CALL get_weather {"city": "Paris"}'}]
    first = client.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21C"}]
    final = client.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER])
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content.startswith("Tool get_weather returned:")
    assert "Sunny, 21C" in final.choices[0].message.content

    # a later request without tools: nothing was left behind on the agent
    messages += [final.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "thanks"}]
    assert client.chat.completions.create(model=agent.name, messages=messages).choices[0].message.content \
        == "You said: thanks"
    assert sorted(t.name for t in letta_backend.client.agents.tools.list(agent.id)) == tools_before
    assert "get_weather" not in {t.name for t in letta_backend.client.tools.list(name="get_weather")}


def test_streamed_follow_up_after_a_tool_result(server: Server, agent) -> None:
    client = client_for(server)
    messages = [{"role": "user", "content": 'CALL get_weather {"city": "Bern"}'}]
    first = client.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER], stream=True)
    calls = [tc for c in first if c.choices and c.choices[0].delta.tool_calls for tc in c.choices[0].delta.tool_calls]
    call_id = calls[0].id
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Bern"}'}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "Snow, -2C"}]
    chunks = list(client.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Tool get_weather returned:") and "Snow, -2C" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_stream_helper_accumulates_the_tool_call(server: Server, agent) -> None:
    client = client_for(server)
    with client.chat.completions.stream(
        model=agent.name, tools=[WEATHER],
        messages=[{"role": "user", "content": 'PRE:Let me check.|CALL get_weather {"city": "Oslo"}'}],
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."  # content streamed before the call is kept
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}


def test_stream_tool_call_deltas_are_well_formed(server: Server, agent) -> None:
    client = client_for(server)
    chunks = list(client.chat.completions.create(
        model=agent.name, tools=[WEATHER, TIME], stream=True,
        messages=[{"role": "user", "content": 'CALL get_time {"city": "Lima"}'}]))
    deltas = [tc for c in chunks if c.choices and c.choices[0].delta.tool_calls for tc in c.choices[0].delta.tool_calls]
    assert deltas[0].index == 0 and deltas[0].id and deltas[0].function.name == "get_time"
    assert all(d.index == 0 and d.id is None for d in deltas[1:])
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Lima"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_parallel_tool_calls_and_results(server: Server, agent) -> None:
    client = client_for(server)
    calls = json.dumps([{"name": "get_weather", "arguments": {"city": "Rome"}},
                        {"name": "get_time", "arguments": {"city": "Rome"}}])
    messages = [{"role": "user", "content": f"CALLS {calls}"}]
    first = client.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER, TIME])
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in message.tool_calls] == ["get_weather", "get_time"]
    assert len({c.id for c in message.tool_calls}) == 2

    streamed = list(client_for(server).chat.completions.create(
        model=agent.name, messages=messages, tools=[WEATHER, TIME], stream=True))
    firsts = [tc for c in streamed if c.choices and c.choices[0].delta.tool_calls
              for tc in c.choices[0].delta.tool_calls if tc.id]
    assert [(tc.index, tc.function.name) for tc in firsts] == [(0, "get_weather"), (1, "get_time")]

    messages += [message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "Cloudy"},
                 {"role": "tool", "tool_call_id": message.tool_calls[1].id, "content": "10:30"}]
    final = client.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER, TIME])
    text = final.choices[0].message.content
    assert "Tool get_weather returned:" in text and "Cloudy" in text
    assert "Tool get_time returned:" in text and "10:30" in text


def test_error_marker_sets_error_status(letta_backend: Backend, server: Server, agent) -> None:
    client = client_for(server)
    messages = [{"role": "user", "content": 'CALL get_weather {"city": "Nowhere"}'}]
    first = client.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "Error: city not found"}]
    final = client.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER])
    assert '"status": "Failed"' in final.choices[0].message.content
    # another result for that call, after it was answered: the chat's history left the session's (an edit of the
    # tool result), so it is answered in a branch seeded with what the client shows
    edited = client.chat.completions.create(model=agent.name, tools=[WEATHER], messages=[
        *messages[:-1], {"role": "tool", "tool_call_id": call.id, "content": "Sunny after all"}])
    assert "Sunny after all" in edited.choices[0].message.content


def test_agent_internal_tools_are_not_client_calls(server: Server, agent) -> None:
    client = client_for(server)
    request = {"model": agent.name, "tools": [WEATHER], "messages": [
        {"role": "user",
         "content": 'CALL memory_insert {"label": "human", "new_string": "likes tea", "insert_line": 0}'}]}
    reply = client.chat.completions.create(**request)
    assert reply.choices[0].finish_reason == "stop"
    assert not reply.choices[0].message.tool_calls
    assert reply.choices[0].message.content.startswith("Tool memory_insert returned:")

    chunks = list(client_for(server).chat.completions.create(
        **request, stream=True, extra_body={"letta_tool_activity": "delta"}))
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    activity = [c.choices[0].delta.model_extra.get("letta_tool_activity") for c in chunks if c.choices]
    activity = [a for a in activity if a]
    assert [(a["phase"], a["name"]) for a in activity] == [("call", "memory_insert"), ("return", "memory_insert")]


def test_tool_choice_none_sends_no_tools(server: Server, agent) -> None:
    reply = client_for(server).chat.completions.create(
        model=agent.name, tools=[WEATHER], tool_choice="none",
        messages=[{"role": "user", "content": 'CALL get_weather {"city": "Paris"}'}])
    assert reply.choices[0].finish_reason == "stop"
    assert not reply.choices[0].message.tool_calls


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "name"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}, "object"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": []}}}]}, "properties"),
        ({"tools": [WEATHER, WEATHER]}, "Duplicate"),
        ({"tools": "get_weather"}, "list"),
        ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                       {"role": "tool", "content": "no id"}]}, "tool_call_id"),
        # a result for a call the assistant message before it never made (OpenAI refuses it the same way)
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_other", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_nope", "content": "42"}]}, "call_nope"),
    ],
)
def test_bad_tool_input_is_400(server: Server, agent, extra: dict, needle: str) -> None:
    body = {"model": agent.name, "messages": [{"role": "user", "content": "hi"}], **extra}
    response = httpx.post(f"{server.v1}/chat/completions", json=body, timeout=30,
                          headers={"X-Session-Id": f"bad-{uuid.uuid4().hex}"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert needle in error["message"]


@pytest.mark.parametrize(("stream", "keyed"), [(False, True), (True, True), (False, False)])
def test_a_new_message_instead_of_the_tool_result_moves_the_conversation_on(
    letta_backend: Backend, server: Server, agent, stream: bool, keyed: bool
) -> None:
    # One unanswered client tool call used to lock the conversation (or the agent's default thread, for every keyless
    # client): Letta rejected every later turn while its approval was pending. The proxy denies the pending call
    # ("the client did not run the tool") and sends the turn.
    client = client_for(server) if keyed else openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0,
                                                            timeout=60)
    messages = [{"role": "user", "content": 'CALL get_weather {"city": "Oslo"}'}]
    first = client.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER])
    (call,) = first.choices[0].message.tool_calls
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "user", "content": "never mind, hello instead"}]
    if stream:
        chunks = list(client.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER],
                                                     stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER]) \
            .choices[0].message.content
    assert text == "You said: never mind, hello instead"
    # and the conversation keeps working without tools, too
    messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "still there?"}]
    again = client.chat.completions.create(model=agent.name, messages=messages)
    assert again.choices[0].message.content == "You said: still there?"
    assert call.id  # the denied call is not offered again
