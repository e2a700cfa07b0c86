"""
Sessions and system prompts against the real Letta server.

Proves: one Letta conversation per session key, with no leaks between sessions; only the new turn is forwarded
(transcripts, retries, regenerates and Idempotency-Keys add no duplicates); the client's system prompt reaches
only its own session as a read-only block, at 60K characters too, and is replaced and removed with the client's
prompt; sessions survive a restart and a second server process; concurrent first requests make one conversation.
"""

from __future__ import annotations

import concurrent.futures
import uuid

import httpx
import openai
import pytest

from letta_hayhooks.components.prompt_overlay import overlay_label
from letta_hayhooks.components.session_resolver import SUMMARY_PREFIX
from letta_hayhooks.letta_access.spare_conversations import SPARE_PREFIX
from letta_hayhooks.turn_plan import session_digest
from tests.conftest import Backend, Server, wait_for_model

pytestmark = pytest.mark.integration


def sdk(server: Server, session: str | None = None, **headers: str) -> openai.OpenAI:
    extra = {"X-Session-Id": session} if session else {}
    extra.update(headers)
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60, default_headers=extra)


def ask(client: openai.OpenAI, model: str, messages: list[dict], **kwargs) -> str:
    reply = client.chat.completions.create(model=model, messages=messages, **kwargs)
    return reply.choices[0].message.content


def our_conversations(backend: Backend, agent_id: str, key: str) -> list:
    scope = session_digest(agent_id, key)
    return [c for c in backend.client.conversations.list(agent_id=agent_id, limit=1000)
            if (c.summary or "").startswith(f"{SUMMARY_PREFIX}{scope}")]


def model_saw(backend: Backend, text: str) -> int:
    """How many of the scripted model's recent requests ended with the user message `text`."""
    return sum(1 for request in backend.model_requests()
               if [m for m in request.get("messages", []) if m.get("role") == "user"][-1:]
               and [m for m in request["messages"] if m.get("role") == "user"][-1].get("content") == text)


def user_messages(backend: Backend, conversation_id: str) -> list[str]:
    page = backend.client.conversations.messages.list(conversation_id, order="asc", limit=200)
    return [m.content for m in page.items if m.message_type == "user_message"]


def test_two_sessions_are_two_conversations_without_leaks(letta_backend: Backend, server: Server, agent) -> None:
    key1, key2 = f"s1-{uuid.uuid4().hex}", f"s2-{uuid.uuid4().hex}"
    fact = f"MANGO-{uuid.uuid4().hex[:8]}"
    assert ask(sdk(server, key1), agent.name, [{"role": "user", "content": f"the secret is {fact}"}]) \
        == f"You said: the secret is {fact}"
    assert ask(sdk(server, key2), agent.name, [{"role": "user", "content": f"RECALL?{fact}"}]) == f"RECALL:{fact}=no"
    transcript = [
        {"role": "user", "content": f"the secret is {fact}"},
        {"role": "assistant", "content": f"You said: the secret is {fact}"},
        {"role": "user", "content": f"RECALL?{fact}"},
    ]
    assert ask(sdk(server, key1), agent.name, transcript) == f"RECALL:{fact}=yes"
    first, second = our_conversations(letta_backend, agent.id, key1), our_conversations(letta_backend, agent.id, key2)
    assert len(first) == 1 and len(second) == 1
    assert first[0].id != second[0].id
    assert not any(fact in text for text in user_messages(letta_backend, second[0].id)[:-1])

    view = httpx.get(f"{server.v1}/letta/sessions", params={"model": agent.name}, timeout=30).json()
    rows = {row["conversation_id"]: row for row in view["data"]}
    assert rows[first[0].id]["session_key"] == key1
    assert rows[second[0].id]["session_key"] == key2


def test_only_the_new_turn_is_forwarded(letta_backend: Backend, server: Server, agent) -> None:
    key = f"turns-{uuid.uuid4().hex}"
    client = sdk(server, key)
    transcript: list[dict] = []
    for text in ("one", "two", "three"):
        transcript.append({"role": "user", "content": text})
        answer = ask(client, agent.name, transcript)
        assert answer == f"You said: {text}"
        transcript.append({"role": "assistant", "content": answer})
    (conversation,) = our_conversations(letta_backend, agent.id, key)
    assert user_messages(letta_backend, conversation.id) == ["one", "two", "three"]

    # a regenerate (the transcript again without its last answer) is answered anew, in a branch of the session whose
    # context is what the client shows: the turn once, not twice
    asked_before = model_saw(letta_backend, "three")
    assert ask(client, agent.name, transcript[:-1]) == "You said: three"
    assert model_saw(letta_backend, "three") == asked_before + 1  # generated again, not replayed
    (branch,) = our_conversations(letta_backend, agent.id, key)
    assert branch.id != conversation.id
    assert user_messages(letta_backend, branch.id) == ["one", "two", "three"]
    assert user_messages(letta_backend, conversation.id) == ["one", "two", "three"]  # kept, archived
    # the chat goes on from the branch; a retry with an Idempotency-Key adds nothing
    transcript.append({"role": "user", "content": "four"})
    retry = {"Idempotency-Key": f"idem-{uuid.uuid4().hex}"}
    assert ask(client, agent.name, transcript, extra_headers=retry) == "You said: four"
    assert ask(client, agent.name, transcript, extra_headers=retry) == "You said: four"
    assert user_messages(letta_backend, branch.id) == ["one", "two", "three", "four"]
    assert [c.id for c in our_conversations(letta_backend, agent.id, key)] == [branch.id]

    # a streamed regenerate is answered anew as well, in the next branch
    asked_before = model_saw(letta_backend, "four")
    stream = client.chat.completions.create(model=agent.name, messages=transcript, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "You said: four"
    assert model_saw(letta_backend, "four") == asked_before + 1
    (latest,) = our_conversations(letta_backend, agent.id, key)
    assert latest.id != branch.id and user_messages(letta_backend, latest.id) == ["one", "two", "three", "four"]


def test_otids_are_deterministic_and_reach_letta(letta_backend: Backend, server: Server, agent) -> None:
    key = f"otid-{uuid.uuid4().hex}"
    ask(sdk(server, key), agent.name, [{"role": "user", "content": "otid please"}])
    (conversation,) = our_conversations(letta_backend, agent.id, key)
    page = letta_backend.client.conversations.messages.list(conversation.id, order="asc", limit=50)
    sent = [m for m in page.items if m.message_type == "user_message"]
    from letta_hayhooks.turn_plan import turn_otids

    # a new-message-only request gets an otid of its own (unless it says it retries); the next turn's is derived
    # from the transcript
    assert len(sent) == 1 and sent[0].otid
    transcript = [{"role": "user", "content": "otid please"}, {"role": "assistant", "content": "You said: otid please"},
                  {"role": "user", "content": "and again"}]
    ask(sdk(server, key), agent.name, transcript)
    page = letta_backend.client.conversations.messages.list(conversation.id, order="asc", limit=50)
    sent = [m for m in page.items if m.message_type == "user_message"]
    expected = turn_otids(session_digest(agent.id, key), transcript, [2])[0]
    assert sent[-1].otid == expected


def test_each_session_sees_only_its_own_system_prompt(letta_backend: Backend, server: Server, agent) -> None:
    needle1, needle2 = f"NEEDLE1-{uuid.uuid4().hex[:6]}", f"NEEDLE2-{uuid.uuid4().hex[:6]}"
    key1, key2 = f"p1-{uuid.uuid4().hex}", f"p2-{uuid.uuid4().hex}"

    def probe(key: str, prompt: str, needle: str) -> str:
        return ask(sdk(server, key), agent.name, [{"role": "system", "content": prompt},
                                                  {"role": "user", "content": f"SYSTEM?{needle}"}])

    jobs = [(key1, f"You are helper one. {needle1}", needle1), (key2, f"You are helper two. {needle2}", needle2),
            (key1, f"You are helper one. {needle1}", needle2), (key2, f"You are helper two. {needle2}", needle1)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda job: probe(*job), jobs))
    assert results == [f"SYSTEM_HAS:{needle1}=yes", f"SYSTEM_HAS:{needle2}=yes",
                       f"SYSTEM_HAS:{needle2}=no", f"SYSTEM_HAS:{needle1}=no"]
    # the agent's own persona stays in the prompt next to the overlay
    assert probe(key1, f"You are helper one. {needle1}", "PERSONA-MARK") == "SYSTEM_HAS:PERSONA-MARK=yes"
    # the agent itself was not changed: no block attached, nothing in its default thread
    blocks = {b.label for b in letta_backend.client.agents.blocks.list(agent.id)}
    assert blocks == {"persona", "human"}
    block = letta_backend.client.blocks.list(label=overlay_label(session_digest(agent.id, key1))).items
    assert len(block) == 1 and block[0].read_only is True
    assert block[0].value == f"You are helper one. {needle1}"
    assert block[0].limit == len(block[0].value)


def test_large_prompt_change_and_removal(letta_backend: Backend, server: Server, agent) -> None:
    key = f"big-{uuid.uuid4().hex}"
    client = sdk(server, key)
    tail = f"TAIL-{uuid.uuid4().hex[:6]}"
    big = ("Coding rules: keep functions small.\r\n" * 1800)[:60_000] + "\x00" + tail
    assert len(big) >= 60_000
    assert ask(client, agent.name, [{"role": "system", "content": big},
                                    {"role": "user", "content": f"SYSTEM?{tail}"}]) == f"SYSTEM_HAS:{tail}=yes"
    label = overlay_label(session_digest(agent.id, key))
    (stored,) = letta_backend.client.blocks.list(label=label).items
    assert "\x00" not in stored.value and "\r" not in stored.value
    assert stored.limit == len(stored.value)

    history = [{"role": "user", "content": f"SYSTEM?{tail}"},
               {"role": "assistant", "content": f"SYSTEM_HAS:{tail}=yes"}]
    new = f"Be brief. NEW-{uuid.uuid4().hex[:6]}"
    history.append({"role": "user", "content": f"SYSTEM?{tail}"})
    assert ask(client, agent.name, [{"role": "system", "content": new}, *history]) == f"SYSTEM_HAS:{tail}=no"
    (changed,) = letta_backend.client.blocks.list(label=label).items
    assert changed.id == stored.id and changed.value == new and changed.limit == len(new)

    history += [{"role": "assistant", "content": f"SYSTEM_HAS:{tail}=no"},
                {"role": "user", "content": f"SYSTEM?{new[-10:]}"}]
    assert ask(client, agent.name, history) == f"SYSTEM_HAS:{new[-10:]}=no"
    assert letta_backend.client.blocks.list(label=label).items == []


def test_session_survives_restart_and_second_process(letta_backend: Backend, server: Server, server_factory,
                                                     agent) -> None:
    key = f"restart-{uuid.uuid4().hex}"
    fact = f"KIWI-{uuid.uuid4().hex[:6]}"
    prompt = f"System prompt {uuid.uuid4().hex}"
    ask(sdk(server, key), agent.name, [{"role": "system", "content": prompt},
                                       {"role": "user", "content": f"remember {fact}"}])
    label = overlay_label(session_digest(agent.id, key))
    (block_before,) = letta_backend.client.blocks.list(label=label).items

    other = server_factory(letta_backend.base_url)
    wait_for_model(other.url, agent.name)
    transcript = [{"role": "system", "content": prompt}, {"role": "user", "content": f"remember {fact}"},
                  {"role": "assistant", "content": f"You said: remember {fact}"},
                  {"role": "user", "content": f"RECALL?{fact}"}]
    assert ask(sdk(other, key), agent.name, transcript) == f"RECALL:{fact}=yes"
    other.stop()
    assert len(our_conversations(letta_backend, agent.id, key)) == 1
    (block_after,) = letta_backend.client.blocks.list(label=label).items
    assert block_after.id == block_before.id  # found again and reused, not duplicated


FIRST = "SLOW:1500:first!"


def test_concurrent_first_requests_make_one_conversation(letta_backend: Backend, server: Server, server_factory,
                                                         agent) -> None:
    second = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_SESSION_QUEUE_DEPTH": "32"})
    wait_for_model(second.url, agent.name)

    def first_requests(targets: list[Server], key: str) -> list[int]:
        def one(target: Server) -> int:
            # the first turn takes 1.5 s, so every duplicate arrives while it runs (one arriving after its answer was
            # delivered would be a new turn: the same message sent again)
            response = httpx.post(f"{target.v1}/chat/completions", headers={"X-Session-Id": key}, timeout=120,
                                  json={"model": agent.name, "messages": [{"role": "user", "content": FIRST}]})
            return response.status_code

        with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
            return list(pool.map(one, targets))

    # one process: the requests queue on the session (beyond the queue depth: 429), one turn reaches Letta
    key = f"race-{uuid.uuid4().hex}"
    statuses = first_requests([second] * 20, key)
    assert statuses == [200] * 20
    (conversation,) = our_conversations(letta_backend, agent.id, key)
    assert user_messages(letta_backend, conversation.id) == [FIRST]

    # two processes at once: they converge on one conversation (the same turn may reach Letta once per process,
    # since a self-hosted Letta without Redis does not deduplicate otids itself)
    key = f"race2-{uuid.uuid4().hex}"
    statuses = first_requests([server, second] * 10, key)
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) >= 10
    (conversation,) = our_conversations(letta_backend, agent.id, key)
    assert user_messages(letta_backend, conversation.id) in ([FIRST], [FIRST, FIRST])


def test_open_webui_chat_id_only_for_streams(letta_backend: Backend, server: Server, agent) -> None:
    chat = f"owui-{uuid.uuid4().hex}"
    client = sdk(server, None, **{"X-OpenWebUI-Chat-Id": chat})
    stream = client.chat.completions.create(model=agent.name, stream=True,
                                            messages=[{"role": "user", "content": "chat turn"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "You said: chat turn"
    assert ask(client, agent.name, [{"role": "user", "content": "Generate a title"}]) == "You said: Generate a title"
    (conversation,) = our_conversations(letta_backend, agent.id, chat)
    assert user_messages(letta_backend, conversation.id) == ["chat turn"]  # the background task went elsewhere
    default = letta_backend.client.conversations.messages.list("default", agent_id=agent.id, limit=100)
    assert "Generate a title" not in [m.content for m in default.items if m.message_type == "user_message"]


def test_ephemeral_policy_replays_and_deletes(letta_backend: Backend, server_factory) -> None:
    ephemeral = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_SESSION_POLICY": "ephemeral"})
    agent = letta_backend.create_agent("ephemeral")
    wait_for_model(ephemeral.url, agent.name)
    transcript = [{"role": "user", "content": "my name is PAPAYA"},
                  {"role": "assistant", "content": "Nice to meet you."},
                  {"role": "user", "content": "RECALL?PAPAYA"}]
    assert ask(sdk(ephemeral), agent.name, transcript) == "RECALL:PAPAYA=yes"
    leftovers = letta_backend.client.conversations.list(agent_id=agent.id, limit=100)
    # the throwaway is gone; what may remain is the agent's one spare, made ahead for the next request
    assert [c for c in leftovers if not (c.summary or "").startswith(SPARE_PREFIX)] == []
    assert len(list(leftovers)) <= 1
    default = letta_backend.client.conversations.messages.list("default", agent_id=agent.id, limit=100)
    assert [m for m in default.items if m.message_type == "user_message"] == []


@pytest.mark.parametrize(
    ("headers", "body_extra", "status"),
    [
        ({"X-Session-Id": "k" * 257}, {}, 400),
        ({}, {"user": "bad\x01key"}, 400),
        ({}, {"user": "x" * 300}, 400),
    ],
)
def test_bad_session_keys(server: Server, agent, headers: dict, body_extra: dict, status: int) -> None:
    response = httpx.post(f"{server.v1}/chat/completions", headers=headers, timeout=30,
                          json={"model": agent.name, "messages": [{"role": "user", "content": "x"}], **body_extra})
    assert response.status_code == status
    assert response.json()["error"]["code"] == "invalid_session_key"


def test_system_prompt_over_the_limit_is_413(server: Server, agent) -> None:
    huge = "x" * (1_048_576 + 1)
    response = httpx.post(f"{server.v1}/chat/completions", timeout=60, json={
        "model": agent.name, "messages": [{"role": "system", "content": huge}, {"role": "user", "content": "hi"}]})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_stale_prompt_blocks_are_garbage_collected(letta_backend: Backend, server: Server, agent) -> None:
    from letta_hayhooks.letta_access.clients import LettaConnection
    from letta_hayhooks.server.maintenance import delete_stale_overlays

    key = f"gc-{uuid.uuid4().hex}"
    ask(sdk(server, key), agent.name, [{"role": "system", "content": "collect me"},
                                       {"role": "user", "content": "hello"}])
    label = overlay_label(session_digest(agent.id, key))
    assert len(letta_backend.client.blocks.list(label=label).items) == 1
    client = LettaConnection(letta_backend.base_url).sync_client()
    assert delete_stale_overlays(client, max_age_seconds=3600) == 0  # just used: kept
    assert delete_stale_overlays(client, max_age_seconds=-1) >= 1
    assert letta_backend.client.blocks.list(label=label).items == []
    assert {b.label for b in letta_backend.client.agents.blocks.list(agent.id)} == {"persona", "human"}


def test_overlay_switch_off_ignores_system_prompts(letta_backend: Backend, server_factory, agent) -> None:
    plain = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_OVERLAY": "false"})
    wait_for_model(plain.url, agent.name)
    key = f"off-{uuid.uuid4().hex}"
    needle = f"IGNORED-{uuid.uuid4().hex[:6]}"
    answer = ask(sdk(plain, key), agent.name, [{"role": "system", "content": needle},
                                               {"role": "user", "content": f"SYSTEM?{needle}"}])
    assert answer == f"SYSTEM_HAS:{needle}=no"
    assert letta_backend.client.blocks.list(label=overlay_label(session_digest(agent.id, key))).items == []
