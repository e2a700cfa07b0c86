"""
Who may reach what, decided in one place: `may_reach(tenant, target)`.

Every route that reads, continues, references or deletes something asks it, and so do the API-key policies' grants:
an agent (the key's agent globs and tags), an operator route (the sessions view, metrics, Hayhooks' status routes),
a Letta conversation (and so every stored response, its items, `previous_response_id`, `item_reference` and
`conversation` with a Letta id) and a Conversations API record (`conv_...`). Without API keys (no tenant) everything
is reachable, as before keys existed.

A Letta conversation's owner is read from its summary, which the proxy writes when it makes the conversation: every
summary kind carries a session scope that only the tenant that made it computes (`turn_plan.session_digest` mixes the
tenant's id into it; a keyed session's summary also carries its key, a record-bound conversation its record id). So
the owner lives in Letta beside the session scope, any process agrees, and nothing is trusted that a client sent.
What carries no such scope (the agent's default thread, a conversation made outside the proxy, one made before its
summary had a scope, a throwaway) belongs to nobody under keys: no key reaches it through these routes.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from letta_hayhooks.components.session_resolver import (
    BRANCH_PREFIX,
    CHAT_PREFIX,
    SUMMARY_PREFIX,
    parse_session_summary,
)
from letta_hayhooks.letta_access.spare_conversations import SPARE_PREFIX
from letta_hayhooks.lru import LRU
from letta_hayhooks.tenants import AgentLike, Tenant
from letta_hayhooks.turn_plan import TRANSCRIPT_SESSION, session_digest

# Where the API key middleware leaves the request's tenant in the ASGI scope (`tenant_of` reads it).
TENANT_STATE = "letta_hayhooks_tenant"
# The summary of a Letta conversation bound to a Conversations API record: `<mark> conv_<hex> <scope>`.
RECORD_MARK = "letta-hayhooks conversation"


def tenant_of(scope: MutableMapping[str, Any]) -> Tenant | None:
    """The tenant (API key) of a request; None when no API keys are configured."""
    return (scope.get("state") or {}).get(TENANT_STATE)


# ---- what a route is about to reach
@dataclass(frozen=True)
class Agent:
    """A served agent: the key's agent globs and tags decide."""

    info: AgentLike | None  # None: nothing is served under that name


@dataclass(frozen=True)
class OperatorRoute:
    """A route that shows every tenant's data: `sessions` (the sessions view), `metrics`, `status` (Hayhooks' status
    routes, which name every deployed pipeline)."""

    name: str


@dataclass(frozen=True)
class LettaConversation:
    """A Letta conversation (what a stored response lives in), with the agent it belongs to and its summary."""

    agent: AgentLike | None
    agent_id: str
    summary: str | None


@dataclass(frozen=True)
class ConversationRecord:
    """A Conversations API record (`conv_...`): the tenant id its block's metadata names."""

    owner: str | None


Target = Agent | OperatorRoute | LettaConversation | ConversationRecord


def may_reach(tenant: Tenant | None, target: Target) -> bool:  # noqa: PLR0911 - one answer per kind of target
    """Whether the request's tenant may reach `target` (every route asks here; see the module docstring)."""
    if isinstance(target, OperatorRoute):
        if tenant is None:
            return True
        grants = {"sessions": tenant.may_list_sessions, "metrics": tenant.may_read_metrics,
                  "status": tenant.admin or tenant.every_agent}
        return grants.get(target.name, False)
    if isinstance(target, Agent):
        return target.info is not None and (tenant is None or tenant.allows(target.info))
    if tenant is None:
        return True
    if isinstance(target, ConversationRecord):
        return target.owner == tenant.id
    # a Letta conversation: the key must still use its agent, and the summary's scope must be the key's own
    if target.agent is None or not tenant.allows(target.agent):
        return False
    return summary_scope_matches(target.summary or "", target.agent_id, tenant.id)


def summary_scope_matches(summary: str, agent_id: str, tenant_id: str | None) -> bool:
    """Whether a conversation summary the proxy wrote carries the session scope `tenant_id` computes for it."""
    if summary.startswith(CHAT_PREFIX):
        scope = summary[len(CHAT_PREFIX):].split(" ", 1)[0]
        return scope == session_digest(agent_id, TRANSCRIPT_SESSION, tenant_id)
    for prefix in (SUMMARY_PREFIX, BRANCH_PREFIX):
        if summary.startswith(prefix):
            scope, key, _, _ = parse_session_summary(summary, prefix)
            return bool(key) and scope == session_digest(agent_id, key, tenant_id)
    if summary.startswith(RECORD_MARK + " "):
        parts = summary[len(RECORD_MARK) + 1:].split()
        return len(parts) == 2 and parts[1] == record_scope(agent_id, parts[0], tenant_id)
    return False


def record_scope(agent_id: str, record_id: str, tenant_id: str | None) -> str:
    """The scope a record-bound Letta conversation's summary carries (see `RECORD_MARK`)."""
    return session_digest(agent_id, f"\x00record\x00{record_id}", tenant_id)


def record_summary(agent_id: str, record_id: str, tenant: Tenant | None) -> str:
    """The summary of the agent's Letta conversation for a Conversations API record."""
    return f"{RECORD_MARK} {record_id} {record_scope(agent_id, record_id, tenant.id if tenant else None)}"


def naming_pending(summary: str | None) -> bool:
    """A spare conversation handed to a turn whose summary is still being written (it follows Letta's first event)."""
    return (summary or "").startswith(SPARE_PREFIX)


class ReachedConversations:
    """
    This process's memory of Letta conversations a tenant was found (or made them) to own, so a chain of
    `previous_response_id` turns reads the conversation's summary once, not once a turn. Owners never change: a
    conversation's scope is written once (a branched session keeps its scope and key).
    """

    def __init__(self) -> None:
        self._owned: LRU = LRU()

    def known(self, conversation_id: str, tenant: Tenant | None) -> bool:
        return tenant is not None and self._owned.get((conversation_id, tenant.id)) is not None

    def remember(self, conversation_id: str | None, tenant: Tenant | None) -> None:
        if tenant is not None and conversation_id and conversation_id != "default":
            self._owned.remember((conversation_id, tenant.id), True)
