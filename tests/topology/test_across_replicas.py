"""
One chat spread over every proxy/Letta pair of the topology (Postgres, Redis, two Letta servers, two proxies).

Proves: a session's turns, sent to the two proxies in turn, land in one Letta conversation in order, each once,
and the agent remembers across them; the client's system prompt follows the session whichever replica gets it;
a client tool call made through one replica is answered through the other; an agent made through one Letta server
is served by both proxies.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import openai
import pytest

from letta_hayhooks.components.session_resolver import SUMMARY_PREFIX
from tests.support import harness
from letta_hayhooks.turn_plan import session_digest
from tests.topology.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.topology]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def sdk(url: str, session: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60,
                         default_headers={"X-Session-Id": session})


def session_conversations(stack: Stack, agent_id: str, key: str, letta_index: int = 1) -> list:
    """The session's conversations, read through Letta server `letta_index` (the other one than made the agent)."""
    scope = session_digest(agent_id, key)
    client = stack.clients()[letta_index]
    return [c for c in client.conversations.list(agent_id=agent_id, limit=1000)
            if (c.summary or "").startswith(f"{SUMMARY_PREFIX}{scope}")]


def user_messages(stack: Stack, conversation_id: str, letta_index: int = 0, expected: list[str] | None = None,
                  wait: float = 10.0) -> list[str]:
    """
    The conversation's user messages through Letta server `letta_index`; with `expected`, read again for up to
    `wait` seconds until they match (the proxy ends a stream at Letta's [DONE], before Letta has stored the run).
    """
    deadline = time.monotonic() + wait
    while True:
        page = stack.clients()[letta_index].conversations.messages.list(conversation_id, order="asc", limit=200)
        found = [m.content for m in page.items if m.message_type == "user_message"]
        if expected is None or found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def answer(client: openai.OpenAI, model: str, messages: list[dict], *, stream: bool, **kwargs) -> str:
    if stream:
        chunks = client.chat.completions.create(model=model, messages=messages, stream=True, **kwargs)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return client.chat.completions.create(model=model, messages=messages, **kwargs).choices[0].message.content


def test_a_session_alternates_replicas(stack: Stack, agent) -> None:
    key = f"alt-{uuid.uuid4().hex}"
    fact = f"QUINCE-{uuid.uuid4().hex[:6]}"
    texts = [f"remember {fact}", "second turn", f"RECALL?{fact}", "fourth turn", f"RECALL?{fact}", "sixth turn"]
    transcript: list[dict] = []
    for i, text in enumerate(texts):
        proxy = stack.proxies[i % len(stack.proxies)]
        transcript.append({"role": "user", "content": text})
        got = answer(sdk(proxy.url, key), agent.name, transcript, stream=i % 3 != 2)
        assert got == (f"RECALL:{fact}=yes" if text.startswith("RECALL?") else f"You said: {text}"), (i, got)
        transcript.append({"role": "assistant", "content": got})
    (conversation,) = session_conversations(stack, agent.id, key)
    # every turn once, in order, whichever Letta server stored it
    assert user_messages(stack, conversation.id, 0, texts) == texts
    assert user_messages(stack, conversation.id, 1, texts) == texts


def test_the_system_prompt_follows_the_session(stack: Stack, agent) -> None:
    key = f"prompt-{uuid.uuid4().hex}"
    first, second = f"Be brief. ALPHA-{uuid.uuid4().hex[:6]}", f"Be kind. BETA-{uuid.uuid4().hex[:6]}"
    p1, p2 = (sdk(proxy.url, key) for proxy in stack.proxies)
    history = [{"role": "user", "content": f"SYSTEM?{first[-11:]}"}]
    assert answer(p1, agent.name, [{"role": "system", "content": first}, *history], stream=True) \
        == f"SYSTEM_HAS:{first[-11:]}=yes"
    history += [{"role": "assistant", "content": f"SYSTEM_HAS:{first[-11:]}=yes"},
                {"role": "user", "content": f"SYSTEM?{second[-10:]}"}]
    # the other replica, a new prompt: it replaces the first one for this session
    assert answer(p2, agent.name, [{"role": "system", "content": second}, *history], stream=False) \
        == f"SYSTEM_HAS:{second[-10:]}=yes"
    history += [{"role": "assistant", "content": f"SYSTEM_HAS:{second[-10:]}=yes"},
                {"role": "user", "content": f"SYSTEM?{first[-11:]}"}]
    assert answer(p1, agent.name, [{"role": "system", "content": second}, *history], stream=True) \
        == f"SYSTEM_HAS:{first[-11:]}=no"
    # another session of the same agent never sees it
    other = sdk(stack.proxies[1].url, f"prompt-other-{uuid.uuid4().hex}")
    assert answer(other, agent.name, [{"role": "user", "content": f"SYSTEM?{second[-10:]}"}], stream=False) \
        == f"SYSTEM_HAS:{second[-10:]}=no"


def test_a_tool_call_is_answered_through_the_other_replica(stack: Stack, agent) -> None:
    key = f"tools-{uuid.uuid4().hex}"
    p1, p2 = (sdk(proxy.url, key) for proxy in stack.proxies)
    messages = [{"role": "user", "content": 'CALL get_weather {"city": "Paris"}'}]
    chunks = list(p1.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER], stream=True))
    calls = [tc for c in chunks if c.choices and c.choices[0].delta.tool_calls for tc in c.choices[0].delta.tool_calls]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    call_id = calls[0].id
    assert calls[0].function.name == "get_weather"
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21C"}]
    final = p2.chat.completions.create(model=agent.name, messages=messages, tools=[WEATHER])
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content.startswith("Tool get_weather returned:")
    assert "Sunny, 21C" in final.choices[0].message.content
    messages += [{"role": "assistant", "content": final.choices[0].message.content},
                 {"role": "user", "content": "thanks"}]
    assert answer(p1, agent.name, messages, stream=True, tools=[WEATHER]) == "You said: thanks"
    (conversation,) = session_conversations(stack, agent.id, key)
    expected = ['CALL get_weather {"city": "Paris"}', "thanks"]
    assert user_messages(stack, conversation.id, 1, expected) == expected
    # the same result sent again (through either replica) after the chat moved on is not run twice in the session's
    # conversation: its history left the session's, so it is answered in a branch seeded with that history
    again = httpx.post(f"{stack.proxies[0].v1}/chat/completions", headers={"X-Session-Id": key}, timeout=60,
                       json={"model": agent.name, "messages": messages[:3], "tools": [WEATHER]})
    assert again.status_code == 200, again.text
    assert user_messages(stack, conversation.id, 1, expected) == expected
    (branch,) = session_conversations(stack, agent.id, key)
    assert branch.id != conversation.id


def test_an_agent_made_on_one_letta_is_served_by_both(stack: Stack) -> None:
    made = stack.clients()[1].agents.create(
        name=f"topology-l2-{uuid.uuid4().hex[:6]}", model="openai-proxy/stub-model",
        embedding="openai/text-embedding-3-small", context_window_limit=128000,
        memory_blocks=[{"label": "persona", "value": "p"}, {"label": "human", "value": "h"}])
    for proxy in stack.proxies:
        harness.wait_for_models(proxy.url, [made.name], timeout=20)
        key = f"l2-{uuid.uuid4().hex}"
        assert answer(sdk(proxy.url, key), made.name, [{"role": "user", "content": "hello"}], stream=True) \
            == "You said: hello"
