"""
The wire types of the Responses and Conversations APIs: every object and stream event `letta-hayhooks serve` sends,
read with raw httpx and validated against the openai SDK's own pydantic types (the locked openai), keys included.

The SDK's models accept unknown keys (`extra="allow"`), so validation alone would let a misspelt or invented field
through: `checked` also walks each JSON object beside the model it matched and fails on any key the model does not
declare, except the few in `DOCUMENTED_EXTRAS`. Error bodies are checked for OpenAI's error envelope.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import pydantic
import pytest
from haystack.dataclasses import StreamingChunk
from openai.types.conversations import Conversation, ConversationDeletedResource, ConversationItem, ConversationItemList
from openai.types.responses import Response, ResponseItemList, ResponseStreamEvent
from openai.types.shared import ErrorObject

from letta_hayhooks.openai_responses import ResponseEncoder, parse_request
from tests.conftest import Backend, Server, wait_for_model

pytestmark = pytest.mark.integration

# Keys the real OpenAI API sends though the SDK's type lacks them: (model class, key) -> why it is allowed.
DOCUMENTED_EXTRAS: dict[tuple[str, str], str] = {
    # OpenAI's response objects carry `store` (recorded API responses, e.g. microsoft/agent-framework's
    # OpenAIDefaultResponse.json and coder's aibridge fixtures: `"store": true` beside `truncation`), but
    # openai.types.responses.Response declares no `store` field.
    ("Response", "store"): "OpenAI's response objects echo the request's `store`",
    # Not `name` on response.function_call_arguments.done: OpenAI never sent it there (openai/openai-openapi#545),
    # and the SDK dropped it from the type (openai-python#3801); the function_call item carries the name.
}
# A 1x1 PNG.
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360f8cf0000000301"
    "0100c9fe92ef0000000049454e44ae426082")).decode()
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class ResponseDeleted(_Strict):
    """`DELETE /v1/responses/{id}`: the openai SDK returns None and has no type; the API reference's example is
    `{"id": "resp_...", "object": "response", "deleted": true}` (openai/openai-openapi#490, which asks for a type,
    reports `response.deleted` from the live API: the SDK ignores the body either way)."""

    id: str
    object: Literal["response"]
    deleted: Literal[True]


class ErrorBody(_Strict):
    """OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorObject


def _unknown_keys(value: Any, raw: Any, path: str) -> Iterator[str]:
    """The keys of `raw` that the pydantic model `value` was validated from does not declare, at every depth."""
    if isinstance(value, pydantic.BaseModel) and isinstance(raw, dict):
        fields = type(value).model_fields
        owner = type(value).__name__
        declared = {field.alias or name for name, field in fields.items()}
        yield from (f"{path}.{key} ({owner})" for key in raw
                    if key not in declared and (owner, key) not in DOCUMENTED_EXTRAS)
        for name, field in fields.items():
            key = field.alias or name
            if key in raw:
                yield from _unknown_keys(getattr(value, name), raw[key], f"{path}.{key}")
    elif isinstance(value, list) and isinstance(raw, list):
        for i, (item, raw_item) in enumerate(zip(value, raw, strict=False)):
            yield from _unknown_keys(item, raw_item, f"{path}[{i}]")
    elif isinstance(value, dict) and isinstance(raw, dict):
        for key, item in value.items():
            if key in raw:
                yield from _unknown_keys(item, raw[key], f"{path}.{key}")


def checked(kind: Any, body: Any) -> Any:
    """`body` validated as the SDK type `kind`, with no key the matched models do not declare."""
    value = pydantic.TypeAdapter(kind).validate_python(body)
    unknown = sorted(_unknown_keys(value, body, "$"))
    assert not unknown, f"keys the openai types do not declare: {unknown} in {json.dumps(body)[:2000]}"
    return value


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: httpx.Response, status: int) -> ErrorObject:
    assert response.status_code == status, response.text
    return checked(ErrorBody, response.json()).error


def stream(client: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a streamed response, each checked as a `ResponseStreamEvent` (its `event:` line its type)."""
    events: list[dict[str, Any]] = []
    with client.stream("POST", "/v1/responses", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                assert event["type"] == name, line
                checked(ResponseStreamEvent, event)
                events.append(event)
                name = None
            else:
                assert not line, f"unexpected line {line!r}"
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    return events


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = ok(client.post("/v1/responses", json=body))
    checked(Response, response)
    return response


def test_a_plain_answer_created_streamed_stored_and_deleted(client, agent) -> None:
    made = create(client, {"model": agent.name, "input": "hello wire", "metadata": {"k": "v"}})
    assert made["status"] == "completed" and made["output"][-1]["content"][0]["text"] == "You said: hello wire"
    events = stream(client, {"model": agent.name, "input": "hello stream", "store": True})
    assert types_of(events)[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.delta",
                 "response.output_text.done", "response.content_part.done", "response.output_item.done"):
        assert kind in types_of(events)
    response_id = events[-1]["response"]["id"]
    stored = ok(client.get(f"/v1/responses/{response_id}"))
    checked(Response, stored)
    assert [item["id"] for item in stored["output"]] == [item["id"] for item in events[-1]["response"]["output"]]
    deleted = ok(client.delete(f"/v1/responses/{response_id}"))
    checked(ResponseDeleted, deleted)
    assert deleted["id"] == response_id
    assert error_of(client.get(f"/v1/responses/{response_id}"), 404).code == "not_found"


def test_a_reasoning_answer(client, agent) -> None:
    made = create(client, {"model": agent.name, "input": "THINK:reason on the wire"})
    assert [item["type"] for item in made["output"]] == ["reasoning", "message"]
    events = stream(client, {"model": agent.name, "input": "THINK:reason in a stream"})
    for kind in ("response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                 "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
                 "response.output_text.delta"):
        assert kind in types_of(events)
    checked(Response, ok(client.get(f"/v1/responses/{events[-1]['response']['id']}")))


def test_a_client_tool_call_and_its_result(client, agent) -> None:
    ask = {"model": agent.name, "input": 'CALL get_weather {"city": "Oslo"}', "tools": [WEATHER]}
    events = stream(client, ask)
    for kind in ("response.function_call_arguments.delta", "response.function_call_arguments.done"):
        assert kind in types_of(events)
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert [item["type"] for item in added] == ["function_call"]
    first = events[-1]["response"]
    (call,) = [item for item in first["output"] if item["type"] == "function_call"]
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    checked(Response, ok(client.get(f"/v1/responses/{first['id']}")))
    created = create(client, {"model": agent.name, "input": 'CALL get_weather {"city": "Rome"}', "tools": [WEATHER]})
    assert [item["type"] for item in created["output"]] == ["function_call"]
    answer = create(client, {"model": agent.name, "previous_response_id": first["id"], "tools": [WEATHER],
                             "input": [{"type": "function_call_output", "call_id": call["call_id"],
                                        "output": "cold, 2 C"}]})
    assert "cold, 2 C" in answer["output"][-1]["content"][0]["text"]
    items = ok(client.get(f"/v1/responses/{answer['id']}/input_items"))
    checked(ResponseItemList, items)
    assert [item["type"] for item in items["data"]] == ["function_call_output"]


def test_input_items_pages_and_the_empty_page(client, agent) -> None:
    made = create(client, {"model": agent.name, "input": [
        {"role": "user", "content": "a first message"},
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                     {"type": "input_image", "image_url": f"data:image/png;base64,{PIXEL}"}]}]})
    every = ok(client.get(f"/v1/responses/{made['id']}/input_items", params={"order": "asc"}))
    checked(ResponseItemList, every)
    assert len(every["data"]) >= 1 and every["first_id"] == every["data"][0]["id"]
    last = every["data"][-1]["id"]
    empty = ok(client.get(f"/v1/responses/{made['id']}/input_items", params={"order": "asc", "after": last}))
    checked(ResponseItemList, empty)  # first_id / last_id are strings even when there is nothing
    assert empty["data"] == [] and empty["has_more"] is False
    # an empty cursor is no cursor (what a client echoing an empty page's last_id sends)
    again = ok(client.get(f"/v1/responses/{made['id']}/input_items", params={"order": "asc", "after": ""}))
    assert [item["id"] for item in again["data"]] == [item["id"] for item in every["data"]]


def test_a_failed_stream(letta_backend: Backend, server_factory, agent) -> None:
    # the answer starts, then the turn runs out of time (one character every 300 ms, a 2 s turn timeout)
    impatient = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_TURN_TIMEOUT": "2"})
    wait_for_model(impatient.url, agent.name)
    with httpx.Client(base_url=impatient.url, timeout=60) as http:
        events = stream(http, {"model": agent.name, "input": "DRIP:300:too slow to finish"})
        assert types_of(events)[-1] == "response.failed" and "response.output_text.delta" in types_of(events)
        assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["code"]
        # the run it names, read back while Letta may still be running or stopping it
        checked(Response, ok(http.get(f"/v1/responses/{events[-1]['response']['id']}")))


def test_conversations_and_their_items(client, agent) -> None:
    conversation = ok(client.post("/v1/conversations", json={"metadata": {"topic": "wire"}, "items": [
        {"role": "user", "content": "an opening line"},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "input_image", "image_url": f"data:image/png;base64,{PIXEL}"}]}]}))
    checked(Conversation, conversation)
    conv = conversation["id"]
    checked(Conversation, ok(client.get(f"/v1/conversations/{conv}")))
    updated = ok(client.post(f"/v1/conversations/{conv}", json={"metadata": {"topic": "types"}}))
    checked(Conversation, updated)
    assert updated["metadata"] == {"topic": "types"}

    added = ok(client.post(f"/v1/conversations/{conv}/items", json={"items": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "noted"}]},
        {"type": "function_call", "call_id": "call_wire_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_wire_1", "output": "fine"}]}))
    checked(ConversationItemList, added)
    # responses in the conversation add their input and output: reasoning, a message, a function call
    create(client, {"model": agent.name, "input": "THINK:in the conversation", "conversation": conv})
    create(client, {"model": agent.name, "input": 'CALL get_weather {"city": "Lima"}', "tools": [WEATHER],
                    "conversation": {"id": conv}})
    stream(client, {"model": agent.name, "input": "streamed in the conversation", "conversation": conv})

    listed = ok(client.get(f"/v1/conversations/{conv}/items", params={"order": "asc", "limit": 100}))
    checked(ConversationItemList, listed)
    kinds = {item["type"] for item in listed["data"]}
    assert {"message", "reasoning", "function_call", "function_call_output"} <= kinds
    for item in listed["data"]:
        checked(ConversationItem, ok(client.get(f"/v1/conversations/{conv}/items/{item['id']}")))
    page = ok(client.get(f"/v1/conversations/{conv}/items", params={"limit": 1}))
    checked(ConversationItemList, page)
    assert page["has_more"] is True and page["first_id"] == page["last_id"] == page["data"][0]["id"]
    after = ok(client.get(f"/v1/conversations/{conv}/items", params={"limit": 1, "after": page["last_id"]}))
    checked(ConversationItemList, after)
    assert after["data"][0]["id"] != page["data"][0]["id"]

    checked(Conversation, ok(client.delete(f"/v1/conversations/{conv}/items/{listed['data'][0]['id']}")))
    error_of(client.get(f"/v1/conversations/{conv}/items/{listed['data'][0]['id']}"), 404)
    deleted = ok(client.delete(f"/v1/conversations/{conv}"))
    checked(ConversationDeletedResource, deleted)
    assert deleted["deleted"] is True
    assert error_of(client.get(f"/v1/conversations/{conv}"), 404).code == "not_found"


def test_an_empty_conversation_lists_an_empty_page(client) -> None:
    conv = ok(client.post("/v1/conversations", json={}))["id"]
    empty = ok(client.get(f"/v1/conversations/{conv}/items"))
    checked(ConversationItemList, empty)  # the SDK types first_id / last_id as str: "" when there is nothing
    assert empty["data"] == [] and empty["has_more"] is False
    checked(ConversationItemList, ok(client.get(f"/v1/conversations/{conv}/items", params={"after": ""})))
    nothing = ok(client.post(f"/v1/conversations/{conv}/items", json={"items": []}))
    checked(ConversationItemList, nothing)
    checked(ConversationDeletedResource, ok(client.delete(f"/v1/conversations/{conv}")))


def test_errors_are_openai_error_envelopes(client, agent) -> None:
    assert error_of(client.post("/v1/responses", json={"model": "no-such-agent", "input": "hi"}),
                    404).code == "model_not_found"
    assert error_of(client.post("/v1/responses", json={"model": agent.name, "input": 5}), 400).param == "input"
    error_of(client.get(f"/v1/responses/resp_{uuid.uuid4().hex}"), 404)
    error_of(client.get(f"/v1/responses/resp_{uuid.uuid4().hex}/input_items"), 404)
    error_of(client.delete(f"/v1/responses/resp_{uuid.uuid4().hex}"), 404)
    error_of(client.get(f"/v1/conversations/conv_{uuid.uuid4().hex}/items"), 404)
    # the provider fails before the answer begins: an HTTP error, not a stream
    failed = client.post("/v1/responses", json={"model": agent.name, "input": "FAIL:500", "stream": True})
    assert error_of(failed, 502).code == "llm_api_error"


def test_a_stored_failed_response(client, agent, letta_backend: Backend) -> None:
    error_of(client.post("/v1/responses", json={"model": agent.name, "input": "FAIL:500"}), 502)
    # the error names no response: the failed run is found in Letta, and read back as a response
    runs = letta_backend.client.runs.list(agent_id=agent.id, statuses=["failed"], order="desc", limit=1)
    (run,) = getattr(runs, "items", runs)
    stored = ok(client.get(f"/v1/responses/resp_{uuid.UUID(run.id.removeprefix('run-')).hex}"))
    checked(Response, stored)
    assert stored["status"] == "failed" and stored["error"]["code"] == "server_error"


def test_an_answer_cut_off_at_a_limit_encodes_as_response_incomplete() -> None:
    # Letta's max_tokens_exceeded / max_steps stop reasons, which the scripted model cannot provoke: the encoder
    encoder = ResponseEncoder(f"resp_{uuid.uuid4().hex}", "model", parse_request({"model": "m", "input": "x"}).echo)
    events = [*encoder.start(), *encoder.feed(StreamingChunk(content="cut")),
              *encoder.complete("length", {"prompt_tokens": 3, "completion_tokens": 1})]
    for event in events:
        checked(ResponseStreamEvent, event)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
