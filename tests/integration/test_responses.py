"""
The OpenAI Responses API against the real Letta, through the openai SDK: create and stream, tools, chains by
`previous_response_id`, conversations, stored responses, chat identity with `store: false`, and errors.
"""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import openai
import pytest

from letta_hayhooks.openai_responses import run_id_of
from tests.conftest import Backend, Server, wait_for_model

pytestmark = pytest.mark.integration

# A 1x1 PNG.
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360f8cf0000000301"
    "0100c9fe92ef0000000049454e44ae426082")).decode()
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)


def conversation_of(backend: Backend, response_id: str) -> str | None:
    run_id = run_id_of(response_id)
    assert run_id is not None
    return backend.client.runs.retrieve(run_id).conversation_id


def user_messages(backend: Backend, conversation_id: str) -> list[str]:
    messages = backend.client.conversations.messages.list(conversation_id, limit=100, order="asc")
    texts = []
    for message in getattr(messages, "items", messages):
        if message.message_type == "user_message":
            content = message.content
            texts.append(content if isinstance(content, str) else " ".join(getattr(p, "text", "") for p in content))
    return texts


def test_create_answers_with_a_response_named_after_its_letta_run(sdk, agent, letta_backend) -> None:
    response = sdk.responses.create(model=agent.name, input="THINK:hello responses")
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "You said: hello responses"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].summary[0].text == "Thinking about: hello responses"
    assert response.usage.total_tokens > 0 and response.usage.input_tokens > 0
    assert conversation_of(letta_backend, response.id) is not None  # the id names a real Letta run


def test_an_image_as_a_data_url_reaches_the_agent(sdk, agent, letta_backend) -> None:
    response = sdk.responses.create(model=agent.name, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "what is this"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PIXEL}"}]}])
    assert response.output_text == "You said: what is this"
    sent = letta_backend.model_requests()[-1]["messages"]
    assert "image" in json.dumps(sent[-1])  # the image went to the model as an image part


def test_stream_passes_the_sdk_lifecycle_checks(sdk, agent) -> None:
    with sdk.responses.stream(model=agent.name, input="THINK:stream me") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.delta",
                 "response.output_text.done", "response.content_part.done", "response.output_item.done",
                 "response.reasoning_summary_text.delta"):
        assert kind in types
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(events)))
    assert final.output_text == "You said: stream me" and final.usage.total_tokens > 0
    assert events[0].response.id == final.id


@pytest.mark.parametrize("stream", [False, True])
def test_a_function_tool_round_trip(sdk, agent, stream: bool) -> None:
    tools = [WEATHER, {"type": "web_search"}]  # the hosted tool is ignored, not refused
    ask = {"model": agent.name, "input": 'CALL get_weather {"city": "Paris"}', "tools": tools}
    if stream:
        with sdk.responses.stream(**ask) as events:
            first = events.get_final_response()
    else:
        first = sdk.responses.create(**ask)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
    answer = sdk.responses.create(model=agent.name, previous_response_id=first.id, tools=tools, input=[
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}])
    assert "sunny, 21 C" in answer.output_text and answer.output_text.startswith("Tool get_weather returned")


def test_previous_response_id_chains_one_conversation_sending_only_new_input(sdk, agent, letta_backend) -> None:
    marker = f"kiwi-{uuid.uuid4().hex[:6]}"
    first = sdk.responses.create(model=agent.name, input=f"my fruit is {marker}")
    second = sdk.responses.create(model=agent.name, input="and a second turn", previous_response_id=first.id)
    with sdk.responses.stream(model=agent.name, input=f"RECALL?{marker}", previous_response_id=second.id) as stream:
        third = stream.get_final_response()
    assert third.output_text == f"RECALL:{marker}=yes"
    conversations = {conversation_of(letta_backend, r.id) for r in (first, second, third)}
    assert len(conversations) == 1
    (conversation_id,) = conversations
    assert user_messages(letta_backend, conversation_id) == [f"my fruit is {marker}", "and a second turn",
                                                             f"RECALL?{marker}"]
    # a chain continues from a streamed response too
    fourth = sdk.responses.create(model=agent.name, input=f"RECALL?{marker}", previous_response_id=third.id)
    assert fourth.output_text == f"RECALL:{marker}=yes" and conversation_of(letta_backend, fourth.id) == conversation_id


def test_a_named_conversation_keeps_its_items(sdk, agent) -> None:
    conversation = sdk.conversations.create(metadata={"topic": "plums"})
    sdk.responses.create(model=agent.name, input="remember plum-42", conversation=conversation.id)
    second = sdk.responses.create(model=agent.name, input="RECALL?plum-42", conversation={"id": conversation.id})
    assert second.output_text == "RECALL:plum-42=yes" and second.conversation.id == conversation.id
    items = sdk.conversations.items.list(conversation.id, order="asc").data
    assert [(i.type, i.role) for i in items] == [("message", "user"), ("message", "assistant")] * 2
    assert sdk.conversations.retrieve(conversation.id).metadata == {"topic": "plums"}
    sdk.conversations.delete(conversation.id)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(conversation.id)


def test_get_input_items_and_delete(sdk, agent) -> None:
    with sdk.responses.stream(model=agent.name, input="THINK:keep this") as stream:
        streamed = stream.get_final_response()
    stored = sdk.responses.retrieve(streamed.id)
    assert stored.output_text == "You said: keep this" and stored.status == "completed"
    assert [item.id for item in stored.output] == [item.id for item in streamed.output]
    inputs = sdk.responses.input_items.list(streamed.id).data
    assert [(i.type, i.content[0].text) for i in inputs] == [("message", "THINK:keep this")]
    sdk.responses.delete(streamed.id)
    with pytest.raises(openai.NotFoundError) as gone:
        sdk.responses.retrieve(streamed.id)
    assert gone.value.body["code"] == "not_found"


def test_store_false_with_the_whole_history_is_one_conversation_without_repeats(sdk, agent, letta_backend) -> None:
    marker = f"cherry-{uuid.uuid4().hex[:6]}"
    history: list[dict] = [{"role": "developer", "content": "Answer briefly."},
                           {"role": "user", "content": f"first {marker}"}]
    first = sdk.responses.create(model=agent.name, input=history, store=False)
    history += [{"type": "message", "role": "assistant", "content": [{"type": "output_text",
                                                                       "text": first.output_text}]},
                {"role": "user", "content": f"RECALL?{marker}"}]
    second = sdk.responses.create(model=agent.name, input=history, store=False)
    assert second.output_text == f"RECALL:{marker}=yes"
    conversation_id = conversation_of(letta_backend, second.id)
    assert conversation_of(letta_backend, first.id) == conversation_id
    assert user_messages(letta_backend, conversation_id) == [f"first {marker}", f"RECALL?{marker}"]


def test_a_failure_mid_stream_ends_with_response_failed_only(letta_backend: Backend, server_factory, agent) -> None:
    # the answer starts, then the turn runs out of time (one character every 300 ms, a 2 s turn timeout)
    impatient = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_TURN_TIMEOUT": "2"})
    wait_for_model(impatient.url, agent.name)
    client = openai.OpenAI(base_url=impatient.v1, api_key="unused", max_retries=0, timeout=60)
    with client.responses.stream(model=agent.name, input="DRIP:300:a slow answer that will not end in time") as stream:
        types = [event.type for event in stream]
    assert types[0] == "response.created" and "response.output_text.delta" in types
    assert types[-1] == "response.failed" and "response.completed" not in types


def test_a_failure_before_the_answer_begins_is_an_http_error(sdk, agent) -> None:
    # the provider fails before any content: the status reaches the client as an OpenAI error object
    with pytest.raises(openai.InternalServerError) as failed, sdk.responses.stream(model=agent.name,
                                                                                  input="FAIL:500") as stream:
        list(stream)
    assert failed.value.status_code == 502 and failed.value.body["code"] == "llm_api_error"


def test_errors_are_openai_error_objects(server: Server, sdk, agent) -> None:
    with pytest.raises(openai.NotFoundError) as missing_model:
        sdk.responses.create(model="no-such-agent", input="hi")
    assert missing_model.value.body["code"] == "model_not_found"
    # unknown ids are 404s, the answer another key's ids get too (tests/integration/test_tenant_isolation.py)
    with pytest.raises(openai.NotFoundError) as unknown_previous:
        sdk.responses.create(model=agent.name, input="hi", previous_response_id=f"resp_{uuid.uuid4().hex}")
    assert unknown_previous.value.body["param"] == "previous_response_id"
    assert unknown_previous.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError) as reference:
        sdk.responses.create(model=agent.name, input=[{"type": "item_reference", "id": "msg_unknown"}])
    assert reference.value.body["code"] == "invalid_item_reference"
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(f"resp_{uuid.uuid4().hex}")
    big = httpx.post(f"{server.v1}/responses", content=b'{"model": "x", "input": "' + b"a" * 9_000_000 + b'"}',
                     headers={"content-type": "application/json"}, timeout=60)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"


def test_models_and_docs_show_the_route(server: Server, agent) -> None:
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert "/v1/responses" in schema["paths"] and "/v1/conversations" in schema["paths"]
    assert "post" in schema["paths"]["/v1/responses"]
    listed = httpx.get(f"{server.v1}/models", timeout=30).json()["data"]
    entry = next(m for m in listed if m["id"] == agent.name)
    assert "/v1/responses" in entry["supported_endpoints"]


def test_plain_hayhooks_run_serves_the_basic_form(letta_backend: Backend, server_factory, agent) -> None:
    plain = server_factory(letta_backend.base_url, command="hayhooks", ready_path="/status")
    from tests.conftest import wait_for_model

    wait_for_model(plain.url, agent.name)
    sdk = openai.OpenAI(base_url=f"{plain.url}/v1", api_key="unused", max_retries=0, timeout=60)
    response = sdk.responses.create(model=agent.name, input="THINK:plain hayhooks")
    assert response.output_text == "You said: plain hayhooks" and response.usage.total_tokens > 0
    assert run_id_of(response.id) is not None  # the non-stream answer is ours whole
    with sdk.responses.stream(model=agent.name, input="streamed plainly") as stream:
        final = stream.get_final_response()
    assert final.output_text == "You said: streamed plainly"
    with pytest.raises(openai.BadRequestError):  # nothing is stored on this route: say so
        sdk.responses.create(model=agent.name, input="again", previous_response_id=response.id)
