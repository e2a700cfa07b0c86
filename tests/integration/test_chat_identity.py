"""
Chat identity from the transcript, against the real Letta server: every keyless chat is its own conversation, a
regenerate or an edit is answered in a branch whose context is what the client shows, retries stay exactly-once,
Open WebUI's background tasks leave nothing behind, and replicas agree.
"""

from __future__ import annotations

import concurrent.futures
import uuid

import httpx
import openai
import pytest

from letta_hayhooks.components.session_resolver import CHAT_PREFIX
from letta_hayhooks.letta_access.spare_conversations import SPARE_PREFIX
from tests.conftest import Backend, Server, wait_for_model

pytestmark = pytest.mark.integration


def client(server: Server, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60, default_headers=headers)


def ask(server: Server, model: str, messages: list[dict], **headers: str) -> str:
    return client(server, **headers).chat.completions.create(model=model, messages=messages).choices[0].message.content


def chat_conversations(backend: Backend, agent_id: str) -> list:
    return [c for c in backend.client.conversations.list(agent_id=agent_id, limit=1000)
            if (c.summary or "").startswith(CHAT_PREFIX)]


def user_texts(backend: Backend, conversation_id: str, agent_id: str | None = None) -> list[str]:
    page = backend.client.conversations.messages.list(conversation_id, order="asc", limit=500,
                                                      **({"agent_id": agent_id} if agent_id else {}))
    return [m.content for m in page.items if m.message_type == "user_message"]


def conversation_holding(backend: Backend, agent_id: str, text: str) -> list:
    return [c for c in chat_conversations(backend, agent_id) if text in user_texts(backend, c.id)]


def model_saw(backend: Backend, needle: str) -> int:
    """How many of the scripted model's recent requests ended with a user message containing `needle`."""
    count = 0
    for request in backend.model_requests():
        users = [m for m in request.get("messages", []) if m.get("role") == "user"]
        if users and needle in str(users[-1].get("content")):
            count += 1
    return count


@pytest.fixture(scope="module")
def agent(letta_backend: Backend, server: Server):
    created = letta_backend.create_agent("identity")
    wait_for_model(server.url, created.name)
    return created


def test_two_keyless_chats_are_two_conversations(letta_backend: Backend, server: Server, agent) -> None:
    fact = f"SEOUL-{uuid.uuid4().hex[:6]}"
    told = [{"role": "user", "content": f"I visited {fact}"}]
    answer = ask(server, agent.name, told)
    # another chat of the same client, started fresh: it never heard of the fact
    assert ask(server, agent.name, [{"role": "user", "content": f"RECALL?{fact}"}]) == f"RECALL:{fact}=no"
    # the first chat goes on in its own conversation, which did
    followed = [*told, {"role": "assistant", "content": answer}, {"role": "user", "content": f"RECALL?{fact}"}]
    assert ask(server, agent.name, followed) == f"RECALL:{fact}=yes"
    assert len(conversation_holding(letta_backend, agent.id, f"I visited {fact}")) == 1


def test_chats_with_the_same_start_keep_their_own_context_after_they_diverge(
    letta_backend: Backend, server: Server, agent
) -> None:
    hello = f"hello {uuid.uuid4().hex[:6]}"
    first = [{"role": "user", "content": hello}]
    answer = ask(server, agent.name, first)
    assert ask(server, agent.name, first) == answer  # a second chat starting alike
    opened = [*first, {"role": "assistant", "content": answer}]
    fact_a, fact_b = f"APPLE-{uuid.uuid4().hex[:6]}", f"BANANA-{uuid.uuid4().hex[:6]}"
    chat_a = [*opened, {"role": "user", "content": f"fact {fact_a}"}]
    chat_b = [*opened, {"role": "user", "content": f"fact {fact_b}"}]
    chat_a.append({"role": "assistant", "content": ask(server, agent.name, chat_a)})
    chat_b.append({"role": "assistant", "content": ask(server, agent.name, chat_b)})
    assert ask(server, agent.name, [*chat_a, {"role": "user", "content": f"RECALL?{fact_b}"}]) == \
        f"RECALL:{fact_b}=no"
    assert ask(server, agent.name, [*chat_b, {"role": "user", "content": f"RECALL?{fact_a}"}]) == \
        f"RECALL:{fact_a}=no"
    assert ask(server, agent.name, [*chat_b, {"role": "user", "content": f"RECALL?{fact_b}"}]) == \
        f"RECALL:{fact_b}=yes"


def test_a_ten_turn_keyless_chat_is_ten_turns_in_its_own_conversation(
    letta_backend: Backend, server: Server, agent
) -> None:
    default_before = user_texts(letta_backend, "default", agent.id)
    mark = uuid.uuid4().hex[:6]
    transcript: list[dict] = []
    for turn in range(10):
        transcript.append({"role": "user", "content": f"turn {turn} of {mark}"})
        transcript.append({"role": "assistant", "content": ask(server, agent.name, transcript)})
    (conversation,) = conversation_holding(letta_backend, agent.id, f"turn 0 of {mark}")
    assert user_texts(letta_backend, conversation.id) == [f"turn {turn} of {mark}" for turn in range(10)]
    assert user_texts(letta_backend, "default", agent.id) == default_before  # the agent's own thread untouched


def test_regenerate_is_a_fresh_answer_in_a_branch(letta_backend: Backend, server: Server, agent) -> None:
    mark = uuid.uuid4().hex[:6]
    transcript = [{"role": "user", "content": f"one {mark}"}]
    transcript.append({"role": "assistant", "content": ask(server, agent.name, transcript)})
    transcript.append({"role": "user", "content": f"two {mark}"})
    assert ask(server, agent.name, transcript) == f"You said: two {mark}"
    assert model_saw(letta_backend, f"two {mark}") == 1
    # regenerate: the same transcript again, without the answer the client dropped
    assert ask(server, agent.name, transcript) == f"You said: two {mark}"
    assert model_saw(letta_backend, f"two {mark}") == 2  # generated again, not replayed
    branches = conversation_holding(letta_backend, agent.id, f"two {mark}")
    assert len(branches) == 2
    for conversation in branches:  # each context holds the turn once
        assert user_texts(letta_backend, conversation.id) == [f"one {mark}", f"two {mark}"]


def test_an_edited_message_is_answered_from_the_edited_history(letta_backend: Backend, server: Server, agent) -> None:
    mark = uuid.uuid4().hex[:6]
    original, edited = f"ORIGINAL-{mark}", f"EDITED-{mark}"
    texts = [f"first {mark}", f"second {original}", f"third {mark}", f"fourth {mark}"]
    transcript: list[dict] = []
    for text in texts:
        transcript.append({"role": "user", "content": text})
        transcript.append({"role": "assistant", "content": ask(server, agent.name, transcript)})
    # the user edits the 2nd message and sends: the client drops everything after it
    edit = [*transcript[:2], {"role": "user", "content": f"second {edited}"}]
    assert ask(server, agent.name, edit) == f"You said: second {edited}"
    last = letta_backend.model_requests()[-1]
    context = " ".join(str(m.get("content")) for m in last["messages"] if m.get("role") != "system")
    assert edited in context and original not in context
    follow = [*edit, {"role": "assistant", "content": f"You said: second {edited}"},
              {"role": "user", "content": f"RECALL?{original}"}]
    assert ask(server, agent.name, follow) == f"RECALL:{original}=no"


def test_a_changed_system_prompt_reaches_the_regenerated_answer(server: Server, agent) -> None:
    needle = f"PIRATE-{uuid.uuid4().hex[:6]}"
    before = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
              {"role": "assistant", "content": "You said: hi"}, {"role": "user", "content": f"SYSTEM?{needle}"}]
    assert ask(server, agent.name, before) == f"SYSTEM_HAS:{needle}=no"
    after = [{"role": "system", "content": f"Talk like a {needle}."}, *before[1:]]
    assert ask(server, agent.name, after) == f"SYSTEM_HAS:{needle}=yes"


@pytest.mark.parametrize("signal", ["idempotency-key", "sdk-retry"])
def test_a_retry_is_the_same_turn(letta_backend: Backend, server: Server, agent, signal: str) -> None:
    mark = uuid.uuid4().hex[:6]
    transcript = [{"role": "user", "content": f"start {mark}"}]
    transcript.append({"role": "assistant", "content": ask(server, agent.name, transcript)})
    transcript.append({"role": "user", "content": f"retried {mark}"})
    # the openai SDK numbers its own attempts in x-stainless-retry-count (it overrides a header given to it): the
    # second attempt is sent the way the SDK sends its first automatic retry
    first_headers = ({"Idempotency-Key": f"k-{mark}"} if signal == "idempotency-key"
                     else {"x-stainless-retry-count": "0"})
    retry_headers = first_headers if signal == "idempotency-key" else {"x-stainless-retry-count": "1"}

    def send(headers: dict) -> str:
        response = httpx.post(f"{server.v1}/chat/completions", headers=headers, timeout=60,
                              json={"model": agent.name, "messages": transcript})
        return response.json()["choices"][0]["message"]["content"]

    first, again = send(first_headers), send(retry_headers)
    assert first == again == f"You said: retried {mark}"
    assert model_saw(letta_backend, f"retried {mark}") == 1
    (conversation,) = conversation_holding(letta_backend, agent.id, f"start {mark}")
    assert user_texts(letta_backend, conversation.id) == [f"start {mark}", f"retried {mark}"]


def test_identical_requests_in_flight_are_one_turn(letta_backend: Backend, server: Server, agent) -> None:
    mark = uuid.uuid4().hex[:6]
    transcript = [{"role": "user", "content": f"SLOW:1500:together {mark}"}]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: ask(server, agent.name, transcript), range(2)))
    assert answers == [f"You said: together {mark}"] * 2
    assert model_saw(letta_backend, f"together {mark}") == 1
    assert len(conversation_holding(letta_backend, agent.id, f"SLOW:1500:together {mark}")) == 1


def open_webui_task(kind: str, chat: list[dict]) -> dict:
    history = "\n".join(f"{m['role'].upper()}: {m['content']}" for m in chat if m["role"] != "system")
    prompts = {"title": "Generate a concise, 3-5 word title with an emoji summarizing the chat history.",
               "tags": "Generate 1-3 broad tags categorizing the main themes of the chat history.",
               "follow_ups": "Suggest 3-5 relevant follow-up questions or prompts the user might ask next."}
    return {"role": "user", "content": f"### Task:\n{prompts[kind]}\n### Chat History:\n<chat_history>\n{history}\n"
                                       "</chat_history>"}


def test_open_webui_with_its_default_settings(letta_backend: Backend, server: Server, agent) -> None:
    # forwarding off: no chat id header; chats stream, background tasks do not
    before = letta_backend.client.conversations.list(agent_id=agent.id, limit=1000)
    conversations_before = {c.id for c in before}
    spares_before = {c.id for c in before if (c.summary or "").startswith(SPARE_PREFIX)}
    default_before = user_texts(letta_backend, "default", agent.id)
    mark = uuid.uuid4().hex[:6]
    chat = [{"role": "system", "content": "You are helpful."}]
    for turn in range(3):
        chat.append({"role": "user", "content": f"owui {turn} {mark}"})
        stream = client(server).chat.completions.create(model=agent.name, messages=chat, stream=True)
        chat.append({"role": "assistant", "content": "".join(c.choices[0].delta.content or ""
                                                              for c in stream if c.choices)})
        if turn == 0:
            for kind in ("title", "tags", "follow_ups"):
                task = client(server).chat.completions.create(model=agent.name,
                                                              messages=[open_webui_task(kind, chat)])
                assert task.choices[0].message.content
    after = letta_backend.client.conversations.list(agent_id=agent.id, limit=1000)
    spares = [c for c in after if (c.summary or "").startswith(SPARE_PREFIX)]
    assert len(spares) <= 1  # the agent's one spare conversation, made ahead for the next new chat or task
    assert all(user_texts(letta_backend, c.id) == [] for c in spares)
    # what this chat made, or took from the spares made before: the chat's conversation only (every task
    # conversation was deleted after its answer)
    used = [c for c in after if c not in spares and (c.id not in conversations_before or c.id in spares_before)]
    assert len(used) == 1
    assert user_texts(letta_backend, used[0].id) == [f"owui {turn} {mark}" for turn in range(3)]
    assert user_texts(letta_backend, "default", agent.id) == default_before


def test_two_server_processes_alternating_turns_of_one_chat(letta_backend: Backend, server: Server, server_factory,
                                                            agent) -> None:
    other = server_factory(letta_backend.base_url)
    wait_for_model(other.url, agent.name)
    mark = uuid.uuid4().hex[:6]
    transcript: list[dict] = []
    for turn in range(4):
        transcript.append({"role": "user", "content": f"replica {turn} {mark}"})
        target = (server, other)[turn % 2]
        transcript.append({"role": "assistant", "content": ask(target, agent.name, transcript)})
    (conversation,) = conversation_holding(letta_backend, agent.id, f"replica 0 {mark}")
    assert user_texts(letta_backend, conversation.id) == [f"replica {turn} {mark}" for turn in range(4)]
    # an SDK retry that reaches the other process finds the answered turn in Letta and replays it
    transcript.append({"role": "user", "content": f"retry across {mark}"})
    answers = [httpx.post(f"{target.v1}/chat/completions", json={"model": agent.name, "messages": transcript},
                          headers={"x-stainless-retry-count": str(attempt)}, timeout=60).json()
               for attempt, target in enumerate((server, other))]
    assert {a["choices"][0]["message"]["content"] for a in answers} == {f"You said: retry across {mark}"}
    assert user_texts(letta_backend, conversation.id)[-1:] == [f"retry across {mark}"]
    assert len(user_texts(letta_backend, conversation.id)) == 5


def test_the_sessions_view_shows_chats_and_branches(letta_backend: Backend, server: Server, agent) -> None:
    mark = uuid.uuid4().hex[:6]
    transcript = [{"role": "user", "content": f"view {mark}"}]
    ask(server, agent.name, transcript)
    ask(server, agent.name, transcript)  # a new chat with the same start
    rows = httpx.get(f"{server.v1}/letta/sessions", params={"model": agent.name}, timeout=30).json()["data"]
    chats = [row for row in rows if row.get("kind") == "chat"]
    held = {c.id for c in conversation_holding(letta_backend, agent.id, f"view {mark}")}
    assert held <= {row["conversation_id"] for row in chats}
    assert all(row["head"] for row in chats if row["conversation_id"] in held)



@pytest.mark.parametrize("replicas", [1, 2])
def test_twin_chats_are_two_conversations_and_leave_nothing_behind(letta_backend: Backend, server: Server,
                                                                   server_factory, agent, replicas: int) -> None:
    # two keyless chats that start alike and get the same answer are byte-identical until they diverge (Open WebUI
    # with its defaults, the openai SDK); with two replicas chat B starts on the other one and continues on the first,
    # after chat A's conversation moved past the head both started at
    other = server
    if replicas == 2:
        other = server_factory(letta_backend.base_url)
        wait_for_model(other.url, agent.name)
    mark = uuid.uuid4().hex[:6]
    start = [{"role": "user", "content": f"twin start {mark}"}]
    first_a, first_b = ask(server, agent.name, start), ask(other, agent.name, start)
    assert first_a == first_b
    chats = {"A": [*start, {"role": "assistant", "content": first_a}],
             "B": [*start, {"role": "assistant", "content": first_b}]}

    def say(name: str, text: str) -> str:
        chats[name].append({"role": "user", "content": text})
        chats[name].append({"role": "assistant", "content": ask(server, agent.name, chats[name])})
        return chats[name][-1]["content"]

    for name in chats:
        say(name, f"{name} two {mark}")
    for name, other in (("A", "B"), ("B", "A")):  # each chat's context is its own
        assert say(name, f"RECALL?{name} two {mark}") == f"RECALL:{name} two {mark}=yes"
        assert say(name, f"RECALL?{other} two {mark}") == f"RECALL:{other} two {mark}=no"
    held = conversation_holding(letta_backend, agent.id, f"twin start {mark}")
    # one conversation per chat, holding the chat's turns: none left behind with the first turn alone
    assert sorted(user_texts(letta_backend, c.id) for c in held) == [
        [f"twin start {mark}", f"{name} two {mark}", f"RECALL?{name} two {mark}", f"RECALL?{other} two {mark}"]
        for name, other in (("A", "B"), ("B", "A"))]
