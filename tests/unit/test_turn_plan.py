"""The turn plan: session keys and sources, scopes, lanes, idempotency slots and deterministic otids (no Letta)."""

from __future__ import annotations

import time

import pytest
from haystack import Pipeline

from letta_hayhooks.components import SessionResolver
from letta_hayhooks.errors import OpenAIError
from letta_hayhooks.letta_access.conversations import chronological
from letta_hayhooks.openai_request import validate_chat_request
from letta_hayhooks.tenants import KeyPolicy, Tenant
from letta_hayhooks.turn_plan import DEFAULT_SESSION, check_session_key, plan_turn, session_digest, turn_otids


def turn_otid(scope: str, messages: list[dict], position: int) -> str:
    return turn_otids(scope, messages, [position])[0]


def plan(messages: list[dict], headers: dict | None = None, *, stream: bool = False, policy: str = "agent",
         tenant: Tenant | None = None, **body):
    request = validate_chat_request("m", messages, {"stream": stream, **body}, max_system_bytes=1 << 20)
    return plan_turn("agent-1", request, headers, policy=policy, request_id="req-1", tenant=tenant)


def test_session_digest_is_scoped_to_the_agent() -> None:
    assert session_digest("agent-1", "chat") != session_digest("agent-2", "chat")
    assert session_digest("agent-1", "chat") == session_digest("agent-1", "chat")
    assert len(session_digest("agent-1", "x" * 256)) == 32


@pytest.mark.parametrize("key", ["k" * 257, "bad\x00key", "tab\tkey", "del\x7fkey"])
def test_bad_session_keys(key: str) -> None:
    with pytest.raises(OpenAIError) as error:
        check_session_key(key)
    assert error.value.status == 400 and error.value.code == "invalid_session_key"


def test_blank_key_is_no_key() -> None:
    assert check_session_key("  ") is None and check_session_key(None) is None
    assert check_session_key(" chat-1 ") == "chat-1"


def test_otid_is_stable_for_a_retry_and_new_for_a_new_turn() -> None:
    first = [{"role": "user", "content": "hello"}]
    second = [*first, {"role": "assistant", "content": "You said: hello"}, {"role": "user", "content": "hello"}]
    assert turn_otid("s", first, 0) == turn_otid("s", list(first), 0)
    assert turn_otid("s", first, 0) != turn_otid("s", second, 2)  # same words, a later turn
    assert turn_otid("s", first, 0) != turn_otid("other", first, 0)
    regenerated = [*second[:2], {"role": "user", "content": "hello"}]
    assert turn_otid("s", second, 2) == turn_otid("s", regenerated, 2)


def test_otids_depend_on_the_assistant_turn_before_them() -> None:
    one = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "b"}]
    other = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": "b"}]
    calls = [{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
             {"role": "user", "content": "b"}]
    assert len({turn_otid("s", one, 2), turn_otid("s", other, 2), turn_otid("s", calls, 2)}) == 3
    # several positions at once give what one position at a time gives
    three = [*one, {"role": "user", "content": "c"}]
    assert turn_otids("s", three, [2, 3]) == [turn_otid("s", three, 2), turn_otid("s", three, 3)]


def test_otids_of_many_new_messages_take_linear_time() -> None:
    # 20,000 new user messages used to take ~67 s (each otid re-scanned the transcript before it)
    messages = [{"role": "user", "content": f"w{i}"} for i in range(20_000)]
    started = time.process_time()
    otids = turn_otids("s", messages, list(range(len(messages))))
    assert len(set(otids)) == len(messages)
    assert time.process_time() - started < 5.0  # generous: the quadratic version needs minutes


def test_chronological_order_whatever_the_server_returns() -> None:
    asc = [{"date": "2026-01-01T00:00:01"}, {"date": "2026-01-01T00:00:02"}]
    assert chronological(asc, assume_ascending=False) == asc
    assert chronological(list(reversed(asc)), assume_ascending=True) == asc
    same = [{"date": "x", "n": 1}, {"date": "x", "n": 2}]
    assert chronological(same, assume_ascending=False) == list(reversed(same))


def test_session_key_sources_in_order() -> None:
    chat = [{"role": "user", "content": "hi"}]
    assert plan(chat, {"x-session-id": "h"}, user="u").session_source == "header"
    assert plan(chat, {"x-letta-chat-key": "h2"}).session_key == "h2"
    assert plan(chat, {"x-openwebui-chat-id": "ow"}, stream=True, user="u").session_source == "openwebui"
    assert plan(chat, user="u").session_key == "u"
    none = plan(chat)
    assert (none.session_key, none.session_source) == (None, "none")
    assert none.scope == session_digest("agent-1", DEFAULT_SESSION) and none.lane == none.scope


def test_open_webui_background_tasks_and_the_ephemeral_policy_are_throwaway() -> None:
    chat = [{"role": "user", "content": "### Task: title"}]
    task = plan(chat, {"x-openwebui-chat-id": "ow"}, stream=False)
    assert task.throwaway and task.session_key is None and task.lane == "throwaway-req-1"
    assert plan(chat, policy="ephemeral").throwaway
    assert not plan(chat, {"x-session-id": "k"}, policy="ephemeral").throwaway


def test_idempotency_slot_is_scoped_to_agent_and_session() -> None:
    chat = [{"role": "user", "content": "hi"}]
    a = plan(chat, {"idempotency-key": "i1", "x-session-id": "a"})
    b = plan(chat, {"idempotency-key": "i1", "x-session-id": "b"})
    assert a.idempotency_key == "i1" and a.idempotency_slot != b.idempotency_slot
    assert plan(chat).idempotency_slot is None


KEYS = KeyPolicy.load(["key-a", "key-b"])
TENANT_A, TENANT_B = KEYS.tenant_for("key-a"), KEYS.tenant_for("key-b")


def test_the_same_session_key_with_two_api_keys_is_two_sessions() -> None:
    chat = [{"role": "user", "content": "hi"}]
    headers = {"x-session-id": "chat-1", "idempotency-key": "i1"}
    a, b = plan(chat, headers, tenant=TENANT_A), plan(chat, headers, tenant=TENANT_B)
    assert a.scope == session_digest("agent-1", "chat-1", TENANT_A.id)
    assert len({a.scope, b.scope, plan(chat, headers).scope}) == 3
    assert a.lane != b.lane and a.otids != b.otids and a.idempotency_slot != b.idempotency_slot
    assert a.session_key == b.session_key == "chat-1"


def test_without_api_keys_the_scope_is_what_it_always_was() -> None:
    import hashlib

    chat = [{"role": "user", "content": "hi"}]
    expected = hashlib.sha256(b"agent-1\x00chat-1").hexdigest()[:32]  # sessions made before tenants existed
    assert plan(chat, {"x-session-id": "chat-1"}).scope == session_digest("agent-1", "chat-1") == expected


def test_the_default_thread_is_one_lane_but_each_tenant_keeps_its_own_scope() -> None:
    chat = [{"role": "user", "content": "hi"}]
    idem = {"idempotency-key": "i1"}
    a, b, open_ = plan(chat, idem, tenant=TENANT_A), plan(chat, idem, tenant=TENANT_B), plan(chat, idem)
    assert a.lane == b.lane == open_.lane == session_digest("agent-1", DEFAULT_SESSION)  # one Letta conversation
    # its system-prompt block, otids and idempotency slot are the tenant's: B can't replay A's answer or drop A's block
    assert len({a.scope, b.scope, open_.scope}) == 3
    assert a.otids != b.otids and a.idempotency_slot != b.idempotency_slot


@pytest.mark.parametrize("headers", [{"x-session-id": "key-b"}, {"x-letta-chat-key": "key-a"}])
def test_an_api_key_is_refused_as_a_session_key(headers: dict) -> None:
    with pytest.raises(OpenAIError) as error:
        plan([{"role": "user", "content": "hi"}], headers, tenant=TENANT_A)
    assert error.value.status == 400 and error.value.code == "invalid_session_key"
    assert "key-a" not in error.value.message and "key-b" not in error.value.message
    with pytest.raises(OpenAIError):
        plan([{"role": "user", "content": "hi"}], user="key-a", tenant=TENANT_B)


def test_first_keyless_message_is_a_retry_only_with_an_idempotency_key() -> None:
    chat = [{"role": "user", "content": "hi"}]
    assert plan(chat).otids != plan(chat).otids and not plan(chat).check_duplicates
    keyed = plan(chat, {"idempotency-key": "i1"})
    assert keyed.otids == plan(chat, {"idempotency-key": "i1"}).otids and keyed.check_duplicates


def test_previous_otid_names_the_turn_before_the_new_one() -> None:
    first = [{"role": "user", "content": "one"}]
    second = [*first, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "two"}]
    third = [*second, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "three"}]
    headers = {"x-session-id": "k"}
    assert plan(third, headers).previous_otid == plan(second, headers).otids[-1]
    assert plan(first, headers).previous_otid is None


def test_a_new_message_only_client_gets_a_new_turn_unless_it_says_it_retries() -> None:
    # "yes" twice in a row is two turns; only an Idempotency-Key or an SDK retry makes it the same one
    chat = [{"role": "user", "content": "yes"}]
    headers = {"x-session-id": "k"}
    assert plan(chat, headers).otids != plan(chat, headers).otids and not plan(chat, headers).check_duplicates
    retried = {**headers, "x-stainless-retry-count": "1"}
    assert plan(chat, retried).otids == plan(chat, retried).otids and plan(chat, retried).check_duplicates
    assert not plan(chat, {**headers, "x-stainless-retry-count": "0"}).retry


def test_the_plan_is_shared_not_copied() -> None:
    import copy

    p = plan([{"role": "user", "content": "hi"}])
    assert copy.deepcopy(p) is p


def test_resolver_serialises_its_connection() -> None:
    pipeline = Pipeline()
    pipeline.add_component("session", SessionResolver(base_url="http://letta:8283", timeout=7.0))
    loaded = Pipeline.loads(pipeline.dumps()).get_component("session")
    assert (loaded.base_url, loaded.timeout) == ("http://letta:8283", 7.0)
