"""
Operator views and housekeeping that read Letta directly: proxy sessions of an agent, stale overlay blocks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from letta_client import AsyncLetta, Letta

from letta_hayhooks.components.prompt_overlay import OVERLAY_TAG, overlay_label
from letta_hayhooks.components.session_resolver import SUMMARY_PREFIX
from letta_hayhooks.letta_access.paging import all_items, page_items
from letta_hayhooks.tenants import Tenant
from letta_hayhooks.turn_plan import session_digest


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


async def list_sessions(client: AsyncLetta, agent_id: str, tenants: Sequence[Tenant] = ()) -> list[dict[str, Any]]:
    """The proxy sessions of an agent: key, owning API key (by name), conversation id, overlay hash, last use."""
    sessions = []
    page = await client.conversations.list(agent_id=agent_id, summary_search=SUMMARY_PREFIX.strip(), limit=1000)
    for conversation in page_items(page):
        summary = conversation.summary or ""
        if not summary.startswith(SUMMARY_PREFIX):
            continue
        scope, _, key = summary[len(SUMMARY_PREFIX):].partition(" ")
        overlay = None
        block_items = page_items(await client.blocks.list(label=overlay_label(scope), limit=1))
        if block_items:
            overlay = _meta(block_items[0]).get("sha256")
        last = conversation.last_message_at or conversation.updated_at or conversation.created_at
        sessions.append({
            "session_key": key,
            "session_scope": scope,
            "tenant": _owner(agent_id, scope, key, tenants),
            "conversation_id": conversation.id,
            "overlay_sha256": overlay,
            "last_used": last.isoformat() if last else None,
        })
    return sessions
