"""
Maps a client chat to its own Letta conversation and decides which messages Letta has not seen yet.
"""

from __future__ import annotations

import asyncio
from typing import Any

from haystack import component, logging

from letta_hayhooks.errors import from_letta_exception
from letta_hayhooks.letta_access.component_base import LettaComponent
from letta_hayhooks.letta_access.conversations import DEFAULT_CONVERSATION, recent_messages
from letta_hayhooks.letta_access.paging import page_items
from letta_hayhooks.lru import LRU
from letta_hayhooks.openai_request import message_text, to_letta_content
from letta_hayhooks.turn_plan import TurnPlan

logger = logging.getLogger(__name__)

# The summary marks a conversation as ours and carries the session digest, so any proxy process finds it again.
SUMMARY_PREFIX = "letta-hayhooks session "
EPHEMERAL_SUMMARY = "letta-hayhooks ephemeral"
# How much recent history is read to recognise a turn Letta has already seen (a retry or a regenerate).
_HISTORY_WINDOW = 30
@component
class SessionResolver(LettaComponent):
    """
    Maps a client chat to a Letta conversation and picks the messages Letta has not seen.

    Takes the `agent_id`, the turn's `plan` (session key and scope, otids of the new user messages, whether the
    conversation is a throwaway) and the OpenAI `messages` transcript with the `new_positions` of its new user
    messages. Gives:

    - `conversation_id`: the session's own conversation (created on first use and found again by its summary, so
      any proxy process reuses it), `"default"` for the agent's own thread, or a throwaway conversation;
    - `messages`: Letta user messages to send, each with its `otid`;
    - `replay`: when Letta already has this turn (a retry or regenerate), its stored answer instead;
    - `ephemeral`: whether the conversation must be deleted after the turn;
    - `session_scope`: the agent-scoped session digest used by the prompt overlay.

    ### Usage example
    ```python
    resolver = SessionResolver(base_url="http://localhost:8283")
    out = await resolver.run_async(agent_id="agent-...", plan=plan, messages=[{"role": "user", "content": "hi"}],
                                   new_positions=[0])
    out["conversation_id"]  # "conv-..."
    ```
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """
        Create the resolver; the arguments are the Letta connection's (see `LettaComponent`).
        """
        LettaComponent.__init__(self, *args, **kwargs)  # Haystack rebuilds the class: no bare super()
        self._conversations: LRU = LRU()
        self._last_otid: LRU = LRU()
        self._locks: dict[str, asyncio.Lock] = {}  # only while a session's conversation is being found

    @component.output_types(
        conversation_id=str,
        messages=list[dict[str, Any]],
        replay=list[dict[str, Any]] | None,
        ephemeral=bool,
        session_scope=str,
    )
    async def run_async(
        self,
        agent_id: str,
        plan: TurnPlan,
        messages: list[dict[str, Any]],
        new_positions: list[int],
    ) -> dict[str, Any]:
        """
        Resolve the conversation and the messages to send.

        :param agent_id: The Letta agent.
        :param plan: The turn's identity (`letta_hayhooks.turn_plan.plan_turn`).
        :param messages: The OpenAI transcript as the client sent it.
        :param new_positions: Indexes of the user messages Letta has not seen (the trailing ones).
        :returns: `conversation_id`, `messages`, `replay`, `ephemeral`, `session_scope`.
        :raises OpenAIError: 5xx when Letta fails.
        """
        try:
            if plan.throwaway:
                return await self._throwaway(agent_id, messages)
            key = plan.session_key
            conversation_id = (await self._conversation_for(agent_id, plan.scope, key) if key is not None
                               else DEFAULT_CONVERSATION)
            letta_messages = [
                {"role": "user", "content": to_letta_content(messages[p]), "otid": otid}
                for p, otid in zip(new_positions, plan.otids, strict=True)
            ]
            replay: list[dict[str, Any]] | None = None
            known_new = plan.previous_otid is not None and self._last_otid.get(plan.scope) == plan.previous_otid
            if plan.check_duplicates and plan.otids and not known_new:
                letta_messages, replay = await self._deduplicate(agent_id, conversation_id, letta_messages)
            if plan.otids:
                self._last_otid.remember(plan.scope, plan.otids[-1])
            return {
                "conversation_id": conversation_id,
                "messages": letta_messages,
                "replay": replay,
                "ephemeral": False,
                "session_scope": plan.scope,
            }
        except Exception as exc:
            raise from_letta_exception(exc) from exc

    async def _conversation_for(self, agent_id: str, scope: str, key: str) -> str:
        cached = self._conversations.get(scope)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            cached = self._conversations.get(scope)
            if cached is not None:
                return cached
            client = self.client
            found = await self._find(agent_id, scope)
            if found is None:
                created = await client.conversations.create(agent_id=agent_id, summary=f"{SUMMARY_PREFIX}{scope} {key}")
                # another proxy process may have created one at the same moment: all converge on the oldest
                found = await self._find(agent_id, scope) or created.id
                if found != created.id:
                    await client.conversations.delete(created.id)
                logger.info("Session {scope} of agent {agent_id} -> new conversation {conversation_id}",
                            scope=scope, agent_id=agent_id, conversation_id=found)
            self._conversations.remember(scope, found)
        self._locks.pop(scope, None)
        return found

    async def _find(self, agent_id: str, scope: str) -> str | None:
        page = await self.client.conversations.list(agent_id=agent_id, summary_search=scope, limit=50)
        matches = [c for c in page_items(page) if (c.summary or "").startswith(f"{SUMMARY_PREFIX}{scope}")]
        if not matches:
            return None
        matches.sort(key=lambda c: (c.created_at or 0, c.id))
        return matches[0].id

    async def _deduplicate(
        self, agent_id: str, conversation_id: str, letta_messages: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """Drop messages Letta already has; if the newest one is there, answer with what followed it."""
        history = await recent_messages(self.client, agent_id, conversation_id, _HISTORY_WINDOW)
        seen = {m.get("otid") for m in history if m.get("message_type") == "user_message"}
        if letta_messages[-1]["otid"] not in seen:
            return [m for m in letta_messages if m["otid"] not in seen], None
        start = max(i for i, m in enumerate(history)
                    if m.get("message_type") == "user_message" and m.get("otid") == letta_messages[-1]["otid"])
        answer: list[dict[str, Any]] = []
        for message in history[start + 1 :]:
            if message.get("message_type") in ("user_message", "approval_response_message"):
                break
            if message.get("message_type") in ("assistant_message", "reasoning_message", "approval_request_message"):
                answer.append(message)
        logger.info("Turn {otid} is already in conversation {conversation_id}: replaying its answer",
                    otid=letta_messages[-1]["otid"], conversation_id=conversation_id)
        return [], answer

    async def _throwaway(self, agent_id: str, messages: list[dict[str, Any]]) -> dict:
        """A throwaway conversation that receives the client's whole transcript."""
        conversation = await self.client.conversations.create(agent_id=agent_id, summary=EPHEMERAL_SUMMARY)
        replayed: list[dict[str, Any]] = []
        for message in messages:
            role = message.get("role")
            if role == "user":
                replayed.append({"role": "user", "content": to_letta_content(message)})
            elif role == "assistant" and message_text(message.get("content")):
                replayed.append({"role": "assistant", "content": message_text(message.get("content"))})
            elif role == "tool":
                # a throwaway conversation never made these calls: the results go in as text
                replayed.append({"role": "user", "content": f"[tool result {message.get('tool_call_id')}]: "
                                                            f"{message_text(message.get('content'))}"})
        return {
            "conversation_id": conversation.id,
            "messages": replayed,
            "replay": None,
            "ephemeral": True,
            "session_scope": f"ephemeral-{conversation.id}",
        }

