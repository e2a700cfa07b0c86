"""
The OpenAI Agents SDK (openai-agents) against the real server, in its default set-up: the default client pointed at
the server with `set_default_openai_client`, the Responses model (`OpenAIResponsesModel`), tracing off.

Proves: Runner.run and Runner.run_streamed (text deltas as they come), a function_tool the SDK runs itself (the
agent's call, the tool's result sent back, the agent's answer with it; non-stream and stream), the
OpenAIConversationsSession (POST /v1/conversations, its items listed, added and deleted, the conversation deleted),
and the Responses API's own state: previous_response_id and conversation_id.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from agents import (
    Agent,
    OpenAIConversationsSession,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models import _openai_shared
from agents.models.multi_provider import MultiProvider
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent

from tests.conftest import Server

pytestmark = pytest.mark.integration

TOOL_RUNS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    TOOL_RUNS.append(city)
    return f"Sunny in {city}, 21C"


@pytest.fixture
def client(server: Server) -> Iterator[AsyncOpenAI]:
    """The SDK's default client and API pointed at the server, for one test (its event loop); restored after."""
    before_client = _openai_shared.get_default_openai_client()
    before_api = _openai_shared.get_use_responses_by_default()
    client = AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)
    set_tracing_disabled(True)
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api("responses")
    yield client
    _openai_shared.set_default_openai_client(before_client)
    _openai_shared.set_use_responses_by_default(before_api)


@pytest.fixture
def sdk_agent(client: AsyncOpenAI, agent) -> Agent:
    """An Agents SDK agent whose model is the Letta agent (no model object given: the SDK's default provider)."""
    return Agent(name="assistant", model=agent.name, instructions="You are a helpful assistant.", tools=[get_weather])


def test_the_default_model_is_the_responses_model(sdk_agent: Agent) -> None:
    model = MultiProvider().get_model(sdk_agent.model)
    assert isinstance(model, OpenAIResponsesModel)
    assert model._client is _openai_shared.get_default_openai_client()


async def test_run(sdk_agent: Agent) -> None:
    result = await Runner.run(sdk_agent, "hello from the agents sdk")
    assert result.final_output == "You said: hello from the agents sdk"
    assert result.last_response_id.startswith("resp_")
    (response,) = result.raw_responses
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


async def test_run_streamed(sdk_agent: Agent) -> None:
    streamed = Runner.run_streamed(sdk_agent, "stream this please")
    deltas = [event.data.delta async for event in streamed.stream_events()
              if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent)]
    assert streamed.final_output == "You said: stream this please"
    assert "".join(deltas) == streamed.final_output
    assert len(deltas) > 1  # streamed, not one block at the end


async def test_function_tool(sdk_agent: Agent) -> None:
    TOOL_RUNS.clear()
    result = await Runner.run(sdk_agent, 'CALL get_weather {"city": "Paris"}')
    assert TOOL_RUNS == ["Paris"]
    assert [item.type for item in result.new_items] == ["tool_call_item", "tool_call_output_item",
                                                        "message_output_item"]
    assert result.new_items[0].raw_item.name == "get_weather"
    assert result.new_items[1].output == "Sunny in Paris, 21C"
    # the agent's answer to the tool's result (Letta hands the model the result wrapped in its status JSON)
    assert result.final_output.startswith("Tool get_weather returned:")
    assert "Sunny in Paris, 21C" in result.final_output


async def test_function_tool_streamed(sdk_agent: Agent) -> None:
    TOOL_RUNS.clear()
    streamed = Runner.run_streamed(sdk_agent, 'CALL get_weather {"city": "Oslo"}')
    kinds = [event.item.type async for event in streamed.stream_events() if event.type == "run_item_stream_event"]
    assert TOOL_RUNS == ["Oslo"]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert streamed.final_output.startswith("Tool get_weather returned:")
    assert "Sunny in Oslo, 21C" in streamed.final_output


async def test_openai_conversations_session(sdk_agent: Agent, client: AsyncOpenAI) -> None:
    session = OpenAIConversationsSession()  # the default client: the server
    first = await Runner.run(sdk_agent, "remember SESSION-MARK", session=session)
    assert first.final_output == "You said: remember SESSION-MARK"
    assert session.session_id.startswith("conv_")

    # the second turn sends the session's items as its history: the agent's context holds the first turn
    second = await Runner.run(sdk_agent, "RECALL?SESSION-MARK", session=session)
    assert second.final_output == "RECALL:SESSION-MARK=yes"

    items = await session.get_items()
    assert [(item["type"], item["role"]) for item in items] == [("message", "user"), ("message", "assistant")] * 2
    texts = [part["text"] for item in items for part in item["content"]]
    assert texts == ["remember SESSION-MARK", "You said: remember SESSION-MARK", "RECALL?SESSION-MARK",
                     "RECALL:SESSION-MARK=yes"]
    assert len(await session.get_items(limit=1)) == 1

    popped = await session.pop_item()
    assert popped["content"][0]["text"] == "RECALL:SESSION-MARK=yes"
    assert len(await session.get_items()) == 3

    conversation_id = session.session_id
    await session.clear_session()
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conversation_id)


async def test_previous_response_id(sdk_agent: Agent) -> None:
    first = await Runner.run(sdk_agent, "remember CHAIN-MARK")
    second = await Runner.run(sdk_agent, "RECALL?CHAIN-MARK", previous_response_id=first.last_response_id)
    assert second.final_output == "RECALL:CHAIN-MARK=yes"
    # a fresh chain does not see it
    fresh = await Runner.run(sdk_agent, "RECALL?CHAIN-MARK")
    assert fresh.final_output == "RECALL:CHAIN-MARK=no"


async def test_conversation_id(sdk_agent: Agent, client: AsyncOpenAI) -> None:
    conversation = await client.conversations.create()
    first = await Runner.run(sdk_agent, "remember CONV-MARK", conversation_id=conversation.id)
    assert first.final_output == "You said: remember CONV-MARK"
    second = await Runner.run(sdk_agent, "RECALL?CONV-MARK", conversation_id=conversation.id)
    assert second.final_output == "RECALL:CONV-MARK=yes"
    texts = [part.text async for item in client.conversations.items.list(conversation.id, order="asc")
             for part in item.content]
    assert texts == ["remember CONV-MARK", "You said: remember CONV-MARK", "RECALL?CONV-MARK",
                     "RECALL:CONV-MARK=yes"]
