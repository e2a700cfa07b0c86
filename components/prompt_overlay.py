"""
The client's system prompt as a read-only Letta memory block scoped to one session.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from haystack import component, logging

from letta_hayhooks import telemetry
from letta_hayhooks.errors import describe_exception
from letta_hayhooks.letta_access.component_base import LettaComponent
from letta_hayhooks.letta_access.conversations import agent_param
from letta_hayhooks.lru import LRU

logger = logging.getLogger(__name__)

OVERLAY_TAG = "letta-hayhooks-overlay"
# Letta caps block labels at 50 characters: prefix (14) + 32-hex session digest.
LABEL_PREFIX = "client_prompt_"
_DESCRIPTION = (
    "The system prompt sent by the user's chat application for this conversation. Follow it together with your "
    "persona and memory. It is read-only."
)
# Touch a block's last-use stamp at most this often, so reuse keeps it away from garbage collection cheaply.
_TOUCH_SECONDS = 3600.0


def normalize_prompt(text: str) -> str:
    """Remove NULs and normalise newlines (Letta stores and renders LF-only text)."""
    return text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")


def prompt_hash(text: str) -> str:
    """The digest that decides whether the stored block must be rewritten."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def overlay_label(scope: str) -> str:
    """The block label for a session scope (unique per agent and session)."""
    return f"{LABEL_PREFIX}{scope}"


def render_block(label: str, value: str) -> str:
    """Render the overlay the way Letta renders a read-only memory block in the system prompt."""
    return (
        f"<{label}>\n<description>\n{_DESCRIPTION}\n</description>\n<metadata>\n- read_only=true\n"
        f"- chars_current={len(value)}\n- chars_limit={max(len(value), 1)}\n</metadata>\n<value>\n{value}\n</value>\n"
        f"</{label}>\n"
    )


def compose_system(compiled: str, label: str, value: str) -> str:
    """The agent's compiled prompt with the overlay block added to its memory blocks."""
    block = render_block(label, value)
    marker = "</memory_blocks>"
    at = compiled.rfind(marker)
    if at < 0:
        return f"{compiled}\n\n<memory_blocks>\n{block}</memory_blocks>"
    return f"{compiled[:at]}{block}\n{compiled[at:]}"


class CompiledPrompts:
    """
    The agents' compiled system prompts, reused for `max_age` seconds (bounded).

    Shared by an agent's overlay and whoever runs its turns: a turn in which the agent ran its own tools (memory
    edits) calls `invalidate`, so the next prompt shows the new memory.
    """

    def __init__(self, max_age: float = 30.0) -> None:
        self.max_age = max_age
        self._prompts: LRU = LRU()

    def get(self, agent_id: str, conversation_id: str) -> str | None:
        """A compiled prompt younger than `max_age`, or None."""
        cached = self._prompts.get((agent_id, conversation_id))
        if cached is not None and time.monotonic() - cached[0] < self.max_age:
            return cached[1]
        return None

    def put(self, agent_id: str, conversation_id: str, prompt: str) -> None:
        """Remember a freshly compiled prompt."""
        self._prompts.remember((agent_id, conversation_id), (time.monotonic(), prompt))

    def invalidate(self, agent_id: str) -> None:
        """Forget the agent's compiled prompts (its memory changed)."""
        for key in [k for k in self._prompts if k[0] == agent_id]:
            self._prompts.pop(key, None)


@dataclass
class _StoredBlock:
    block_id: str | None
    digest: str | None
    touched: float = 0.0


@component
class PromptOverlay(LettaComponent):
    """
    Brings the client's system prompt to the agent for one session's turns only.

    Takes the `agent_id`, `conversation_id`, `session_scope` (and whether it was made for this turn, `fresh_scope`)
    and the client's `system_prompt` (None when it sent none); gives `override_system`: the agent's own compiled
    prompt (persona and memory blocks intact) with the client prompt added as a read-only memory block, or None.

    The prompt is stored in Letta as a read-only block labelled `client_prompt_<scope>` that is never
    attached to the agent, so other sessions and the agent's own blocks are never touched. The block is found
    again by label after a restart, rewritten only when the prompt's hash changes, sized to its content, and
    deleted when the client stops sending a prompt. If a block operation fails, the turn still carries the
    prompt (in the request's system prompt only) and the failure is logged. If the agent's prompt cannot be
    compiled, the turn goes through without the overlay.

    ### Usage example
    ```python
    overlay = PromptOverlay(base_url="http://localhost:8283")
    out = await overlay.run_async(agent_id="agent-...", conversation_id="conv-...", session_scope="abc",
                                  system_prompt="You are terse.")
    out["override_system"]
    ```
    """

    init_parameters = ("enabled", "prompt_cache_seconds")

    def __init__(
        self,
        *,
        enabled: bool = True,
        prompt_cache_seconds: float = 30.0,
        compiled_prompts: CompiledPrompts | None = None,
        **connection: Any,
    ) -> None:
        """
        Create the overlay.

        :param connection: Where Letta is (`base_url`, `api_key`, `project`, `timeout`, `connect_timeout`), as
            in `LettaComponent`.
        :param enabled: When False, client system prompts are ignored.
        :param prompt_cache_seconds: How long the agent's compiled prompt is reused (0 recompiles every turn). A
            turn in which the agent runs one of its own tools drops the cache, so its memory edits show at once.
        :param compiled_prompts: The cache of compiled prompts, shared with whoever invalidates it (not serialised).
        """
        LettaComponent.__init__(self, **connection)  # Haystack rebuilds the class: no bare super()
        self.enabled = enabled
        self.prompt_cache_seconds = prompt_cache_seconds
        # bounded like the session resolver's caches: a forgotten entry is looked up in Letta again
        self._blocks: LRU = LRU()
        self.compiled_prompts = compiled_prompts or CompiledPrompts(prompt_cache_seconds)
        self._locks: LRU = LRU()

    @component.output_types(override_system=str | None)
    async def run_async(
        self,
        agent_id: str,
        conversation_id: str,
        session_scope: str,
        system_prompt: str | None = None,
        ephemeral: bool = False,
        fresh_scope: bool = False,
    ) -> dict[str, Any]:
        """
        Store the session's prompt block and compose the request's system prompt.

        :param agent_id: The Letta agent.
        :param conversation_id: The session's conversation (`"default"` for the agent's own thread).
        :param session_scope: The agent-scoped session digest.
        :param system_prompt: The client's system prompt, or None.
        :param ephemeral: A throwaway conversation: the prompt is applied but not stored.
        :param fresh_scope: The scope was made for this turn (a new chat or branch): no block can be stored under it
            yet, so none is looked up.
        :returns: `{"override_system": str | None}`.
        """
        label = overlay_label(session_scope)
        if fresh_scope and label not in self._blocks:
            self._blocks.remember(label, _StoredBlock(block_id=None, digest=None))
        if not self.enabled or not system_prompt or not system_prompt.strip():
            if not ephemeral:
                await self._drop(label, agent_id)
            return {"override_system": None}
        value = normalize_prompt(system_prompt)
        if not ephemeral:
            await self._store(label, value, agent_id, session_scope)
        compiled = await self._compiled_prompt(agent_id, conversation_id)
        if compiled is None:
            return {"override_system": None}
        return {"override_system": compose_system(compiled, label, value)}

    async def _store(self, label: str, value: str, agent_id: str, scope: str) -> None:
        digest = prompt_hash(value)
        lock = self._locks.get(label) or self._locks.remember(label, asyncio.Lock())
        async with lock:
            stored = self._blocks.get(label)
            try:
                if stored is None:
                    stored = await self._find(label)
                if stored.digest == digest:
                    if time.time() - stored.touched > _TOUCH_SECONDS and stored.block_id:
                        await self._write(stored, label, value, digest, agent_id, scope, value_changed=False)
                else:
                    await self._write(stored, label, value, digest, agent_id, scope, value_changed=True)
                self._blocks.remember(label, stored)
            except Exception as exc:  # noqa: BLE001 - documented fallback: the prompt still reaches this turn
                self._blocks.pop(label, None)
                logger.warning("Could not store the system prompt block {label}: {error}", label=label,
                               error=describe_exception(exc))

    async def _find(self, label: str) -> _StoredBlock:
        client = self.client
        page = await client.blocks.list(label=label, limit=5)
        items = getattr(page, "items", page)
        if not items:
            return _StoredBlock(block_id=None, digest=None)
        block = items[0]
        meta = (block.metadata or {}).get("letta_hayhooks") or {}
        for extra in items[1:]:  # never leave duplicates behind
            await client.blocks.delete(extra.id)
        return _StoredBlock(block_id=block.id, digest=meta.get("sha256"), touched=float(meta.get("last_used", 0)))

    async def _write(
        self, stored: _StoredBlock, label: str, value: str, digest: str, agent_id: str, scope: str, *,
        value_changed: bool,
    ) -> None:
        client = self.client
        now = time.time()
        metadata = {"letta_hayhooks": {"agent_id": agent_id, "session_scope": scope, "sha256": digest,
                                       "last_used": now}}
        telemetry.count_overlay_write(agent_id, "created" if stored.block_id is None else
                                      "updated" if value_changed else "touched")
        if stored.block_id is None:
            block = await client.blocks.create(
                label=label, value=value, limit=max(len(value), 1), read_only=True, description=_DESCRIPTION,
                metadata=metadata, tags=[OVERLAY_TAG],
            )
            stored.block_id = block.id
        elif value_changed:
            await client.blocks.update(stored.block_id, value=value, limit=max(len(value), 1), read_only=True,
                                       metadata=metadata)
        else:
            await client.blocks.update(stored.block_id, metadata=metadata)
        stored.digest = digest
        stored.touched = now

    async def _drop(self, label: str, agent_id: str = "") -> None:
        stored = self._blocks.get(label)
        if stored is not None and stored.block_id is None:
            return  # known to have no block
        try:
            if stored is None:
                stored = await self._find(label)
            if stored.block_id is not None:
                await self.client.blocks.delete(stored.block_id)
                telemetry.count_overlay_write(agent_id, "deleted")
                logger.info("Removed the system prompt block {label}", label=label)
            self._blocks.remember(label, _StoredBlock(block_id=None, digest=None))
        except Exception as exc:  # noqa: BLE001
            logger.warning("Could not remove the system prompt block {label}: {error}", label=label,
                           error=describe_exception(exc))

    async def _compiled_prompt(self, agent_id: str, conversation_id: str) -> str | None:
        cached = self.compiled_prompts.get(agent_id, conversation_id)
        if cached is not None:
            return cached
        client = self.client
        try:
            compiled = await client.conversations.recompile(
                conversation_id, dry_run=True, agent_id=agent_param(agent_id, conversation_id)
            )
        except Exception as exc:  # noqa: BLE001 - the turn goes on without the overlay
            logger.warning("Could not compile the prompt of agent {agent_id}: {error}", agent_id=agent_id,
                           error=describe_exception(exc))
            return None
        if not isinstance(compiled, str) or not compiled:
            return None
        self.compiled_prompts.put(agent_id, conversation_id, compiled)
        return compiled
