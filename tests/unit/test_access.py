"""server/access.py: one decision for every route; a foreign tenant is refused exactly where a missing object is."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from letta_hayhooks.components.session_resolver import chat_summary, session_summary
from letta_hayhooks.letta_access.spare_conversations import SPARE_PREFIX
from letta_hayhooks.server.access import (
    Agent,
    ConversationRecord,
    LettaConversation,
    OperatorRoute,
    ReachedConversations,
    may_reach,
    naming_pending,
    record_summary,
)
from letta_hayhooks.tenants import KeyPolicy, Tenant
from letta_hayhooks.turn_plan import TRANSCRIPT_SESSION, session_digest

AGENT_ID = "agent-00000000-0000-4000-8000-000000000001"


@dataclass(frozen=True)
class Info:
    name: str = "support-bot"
    id: str = AGENT_ID
    tags: tuple[str, ...] = ("public",)


POLICY = KeyPolicy.load(["key-a", "key-b"])
A, B = (POLICY.tenant_for(k) for k in ("key-a", "key-b"))
NARROW = Tenant(id="n" * 16, name="narrow", agents=("other-*",))
ADMIN = Tenant(id="d" * 16, name="ops", admin=True)
METRICS = Tenant(id="m" * 16, name="metrics", metrics=True)
SESSIONS = Tenant(id="s" * 16, name="sessions", sessions_route=True)


def summaries_made_by(tenant: Tenant | None) -> dict[str, str]:
    """What the proxy writes as a conversation's summary for each way a tenant's chat lands in Letta."""
    tid = tenant.id if tenant else None
    transcript = session_digest(AGENT_ID, TRANSCRIPT_SESSION, tid)
    keyed = session_digest(AGENT_ID, "my-chat", tid)
    return {
        "keyless chat": chat_summary(transcript, "t1", "h1"),
        "keyless chat, head pending": chat_summary(transcript, "t1", "pending"),
        "keyed session": session_summary(keyed, "my-chat"),
        "keyed session with heads": session_summary(keyed, "my-chat", "p", "h"),
        "archived branch": session_summary(keyed, "my-chat", prefix="letta-hayhooks branch "),
        "record-bound": record_summary(AGENT_ID, "conv_abc", tenant),
    }


@pytest.mark.parametrize("kind", list(summaries_made_by(A)))
def test_a_conversation_is_its_makers_only(kind: str) -> None:
    summary = summaries_made_by(A)[kind]
    assert may_reach(A, LettaConversation(Info(), AGENT_ID, summary))
    assert not may_reach(B, LettaConversation(Info(), AGENT_ID, summary))
    assert may_reach(None, LettaConversation(Info(), AGENT_ID, summary))  # no keys: as before keys existed
    # made before keys were configured: nobody's under keys
    keyless = summaries_made_by(None)[kind]
    assert not may_reach(A, LettaConversation(Info(), AGENT_ID, keyless))


@pytest.mark.parametrize("kind", list(summaries_made_by(A)))
def test_a_forged_summary_for_another_agent_is_nobodys(kind: str) -> None:
    summary = summaries_made_by(A)[kind]
    other = "agent-00000000-0000-4000-8000-000000000002"
    assert not may_reach(A, LettaConversation(Info(id=other), other, summary))


@pytest.mark.parametrize("summary", [
    None, "", "letta-hayhooks ephemeral", SPARE_PREFIX + "proc-1", "letta-hayhooks conversation conv_abc",
    "a conversation made in Letta's own UI", "letta-hayhooks session", "letta-hayhooks session abc ",
])
def test_what_carries_no_scope_is_nobodys_under_keys(summary: str | None) -> None:
    # the default thread (no summary), throwaways, unnamed spares, records bound before scopes, foreign ones
    assert not may_reach(A, LettaConversation(Info(), AGENT_ID, summary))
    assert may_reach(None, LettaConversation(Info(), AGENT_ID, summary))


def test_a_key_that_may_not_use_the_agent_reaches_none_of_its_conversations() -> None:
    summary = summaries_made_by(NARROW)["keyless chat"]
    assert not may_reach(NARROW, LettaConversation(Info(), AGENT_ID, summary))
    assert not may_reach(A, LettaConversation(None, AGENT_ID, summaries_made_by(A)["keyless chat"]))  # unserved


def test_records_belong_to_the_tenant_their_block_names() -> None:
    assert may_reach(A, ConversationRecord(A.id)) and not may_reach(B, ConversationRecord(A.id))
    assert not may_reach(A, ConversationRecord(None))  # made without keys
    assert may_reach(None, ConversationRecord(A.id))


def test_agent_policies() -> None:
    assert may_reach(A, Agent(Info())) and may_reach(None, Agent(Info()))
    assert not may_reach(NARROW, Agent(Info()))
    assert may_reach(NARROW, Agent(Info(name="other-bot")))
    assert may_reach(Tenant(id="t" * 16, name="t", agents=("tag:public",)), Agent(Info()))
    assert not may_reach(A, Agent(None)) and not may_reach(None, Agent(None))  # nothing served under that name


@pytest.mark.parametrize(("tenant", "granted"), [
    (None, {"sessions", "metrics", "status", "other"}),  # no keys: every route is open
    (A, {"status"}),  # a plain key may use every agent, so the status routes show it nothing new
    (NARROW, set()),
    (ADMIN, {"sessions", "metrics", "status"}),
    (METRICS, {"metrics", "status"}),
    (SESSIONS, {"sessions", "status"}),
])
def test_operator_routes(tenant: Tenant | None, granted: set[str]) -> None:
    assert {name for name in ("sessions", "metrics", "status", "other") if may_reach(tenant, OperatorRoute(name))} \
        == granted


def test_admin_keys_reach_no_other_tenants_conversation() -> None:
    assert not may_reach(ADMIN, LettaConversation(Info(), AGENT_ID, summaries_made_by(A)["keyed session"]))


def test_the_process_memory_of_owners_is_per_tenant() -> None:
    reached = ReachedConversations()
    reached.remember("conv-1", A)
    reached.remember("default", A)
    reached.remember("conv-2", None)
    assert reached.known("conv-1", A) and not reached.known("conv-1", B)
    assert not reached.known("default", A) and not reached.known("conv-2", None)


def test_a_spare_just_handed_out_is_pending() -> None:
    assert naming_pending(SPARE_PREFIX + "p") and not naming_pending(summaries_made_by(A)["keyless chat"])
    assert not naming_pending(None)
