"""
Operator views and housekeeping that read Letta directly: proxy sessions of an agent, stale overlay blocks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from letta_client import AsyncLetta, Letta

from letta_hayhooks.components.prompt_overlay import OVERLAY_TAG, overlay_label
from letta_hayhooks.components.session_resolver import (
    BRANCH_PREFIX,
    CHAT_PREFIX,
    SUMMARY_PREFIX,
    parse_heads,
    parse_session_summary,
)
from letta_hayhooks.letta_access.paging import all_items, page_items
from letta_hayhooks.tenants import Tenant
from letta_hayhooks.turn_plan import TRANSCRIPT_SESSION, session_digest


def _meta(block: Any) -> dict[str, Any]:
    return (getattr(block, "metadata", None) or {}).get("letta_hayhooks") or {}


def delete_stale_overlays(client: Letta, max_age_seconds: float) -> int:
    """Delete system-prompt blocks not used for `max_age_seconds`; returns how many were deleted."""
    now = time.time()
    deleted = 0
    for block in all_items(client.blocks.list, tags=[OVERLAY_TAG]):
        last_used = float(_meta(block).get("last_used") or 0)
        if last_used == 0 and getattr(block, "updated_at", None) is not None:
            last_used = block.updated_at.timestamp()
        if now - last_used > max_age_seconds:
            client.blocks.delete(block.id)
            deleted += 1
    return deleted


def _owner(agent_id: str, scope: str, key: str, tenants: Sequence[Tenant]) -> str | None:
    """The name of the key whose session this is; None for a session made without API keys (or by a removed key)."""
    for tenant in tenants:
        # Letta holds only the scope, a digest: the owner is the tenant whose digest of the key gives it
        if session_digest(agent_id, key, tenant.id) == scope:
            return tenant.name
    return None


def delete_stale_branches(client: Letta, max_age_seconds: float) -> int:
    """
    Delete the archived conversations that keyed sessions left behind when they branched, idle `max_age_seconds`.

    Only those: a session's current conversation and every keyless chat's conversation stay (any of them may be a
    chat someone comes back to).
    """
    now = time.time()
    deleted = 0
    for conversation in all_items(client.conversations.list, summary_search=BRANCH_PREFIX.strip(),
                                  archive_status="archived"):
        if not (conversation.summary or "").startswith(BRANCH_PREFIX):
            continue
        last = conversation.last_message_at or conversation.updated_at or conversation.created_at
        if last is not None and now - last.timestamp() > max_age_seconds:
            client.conversations.delete(conversation.id)
            deleted += 1
    return deleted


def _row(agent_id: str, conversation: Any, tenants: Sequence[Tenant]) -> dict[str, Any] | None:
    """What the sessions view shows of one of our conversations; None for anything else."""
    summary = conversation.summary or ""
    last = conversation.last_message_at or conversation.updated_at or conversation.created_at
    row: dict[str, Any] = {"conversation_id": conversation.id, "last_used": last.isoformat() if last else None}
    if summary.startswith(CHAT_PREFIX):
        scope = summary[len(CHAT_PREFIX):].split(" ", 1)[0]
        prev, head = parse_heads(summary)
        return {**row, "kind": "chat", "session_key": None, "session_scope": scope, "head": head, "prev": prev,
                "tenant": _owner(agent_id, scope, TRANSCRIPT_SESSION, tenants)}
    for prefix, kind in ((SUMMARY_PREFIX, "session"), (BRANCH_PREFIX, "branch")):
        if summary.startswith(prefix):
            scope, key, prev, head = parse_session_summary(summary, prefix)
            return {**row, "kind": kind, "session_key": key, "session_scope": scope, "head": head, "prev": prev,
                    "tenant": _owner(agent_id, scope, key, tenants)}
    return None


async def list_sessions(client: AsyncLetta, agent_id: str, tenants: Sequence[Tenant] = ()) -> list[dict[str, Any]]:
    """
    The proxy's conversations of an agent: keyed sessions (key, owning API key by name, overlay hash), their archived
    branches, and keyless chats (their heads), with the conversation id and last use.
    """
    sessions = []
    page = await client.conversations.list(agent_id=agent_id, summary_search="letta-hayhooks", limit=1000,
                                           archive_status="all")
    for conversation in page_items(page):
        row = _row(agent_id, conversation, tenants)
        if row is None:
            continue
        if row["kind"] == "session":
            block_items = page_items(await client.blocks.list(label=overlay_label(row["session_scope"]), limit=1))
            row["overlay_sha256"] = _meta(block_items[0]).get("sha256") if block_items else None
        sessions.append(row)
    return sessions
