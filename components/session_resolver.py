"""
Maps a client chat to its own Letta conversation and decides which messages Letta has not seen yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import OrderedDict
from typing import Any

from haystack import component, default_from_dict, default_to_dict, logging
from haystack.utils import Secret, deserialize_secrets_inplace
from letta_client import omit

from letta_hayhooks.errors import from_letta_exception, invalid_request
from letta_hayhooks.letta_access.clients import LettaConnection, async_client
from letta_hayhooks.openai_request import content_digest, message_text, to_letta_content

logger = logging.getLogger(__name__)

# The summary marks a conversation as ours and carries the session digest, so any proxy process finds it again.
SUMMARY_PREFIX = "letta-hayhooks session "
EPHEMERAL_SUMMARY = "letta-hayhooks ephemeral"
MAX_SESSION_KEY_CHARS = 256
# How much recent history is read to recognise a turn Letta has already seen (a retry or a regenerate).
_HISTORY_WINDOW = 30
_CACHE_SIZE = 10_000


def session_digest(agent_id: str, session_key: str) -> str:
    """The agent-scoped, fixed-length id of a session key."""
    return hashlib.sha256(f"{agent_id}\x00{session_key}".encode()).hexdigest()[:32]


def check_session_key(key: str | None) -> str | None:
    """
    Validate a client-supplied session key.

    :raises OpenAIError: 400 for a key over 256 characters or with control characters.
    """
    if key is None:
        return None
    key = key.strip()
    if not key:
        return None
    if len(key) > MAX_SESSION_KEY_CHARS:
        msg = f"The session key is longer than {MAX_SESSION_KEY_CHARS} characters."
        raise invalid_request(msg, param="session", code="invalid_session_key")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        msg = "The session key contains control characters."
        raise invalid_request(msg, param="session", code="invalid_session_key")
    return key


def turn_otid(scope: str, messages: list[dict[str, Any]], position: int) -> str:
    """
    A deterministic otid for the user message at `position` of the transcript.

    It depends on the session scope, how many user messages came before, the message itself and the assistant
    message before it: a retried or regenerated request gets the same otid, a new turn a different one.
    """
    users_before = sum(1 for m in messages[:position] if m.get("role") == "user")
    previous_assistant = next(
        (content_digest(m.get("content") or m.get("tool_calls") or "") for m in reversed(messages[:position])
         if m.get("role") == "assistant"),
        "",
    )
    seed = f"{scope}\x00{users_before}\x00{content_digest(messages[position].get('content'))}\x00{previous_assistant}"
    return str(uuid.UUID(bytes=hashlib.sha256(seed.encode()).digest()[:16]))


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def chronological(items: list[Any], *, assume_ascending: bool) -> list[Any]:
    """Messages in time order, whichever order the server returned them in."""
    if len(items) < 2:
        return list(items)
    first, last = _get(items[0], "date"), _get(items[-1], "date")
    if first is not None and last is not None and first != last:
        return list(items) if first < last else list(reversed(items))
    return list(items) if assume_ascending else list(reversed(items))


class _LRU(OrderedDict):
    def remember(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _CACHE_SIZE:
            self.popitem(last=False)


@component
class SessionResolver:
    """
    Maps a client chat to a Letta conversation and picks the messages Letta has not seen.

    Takes the `agent_id`, the OpenAI `messages` transcript, the positions of its new user messages, an optional
    `session_key` (already taken from headers or the `user` field), an optional `idempotency_key` and the
    no-key `policy` (`agent` or `ephemeral`). Gives:

    - `conversation_id`: the session's own conversation (created on first use and found again by its summary, so
      any proxy process reuses it), `"default"` for the agent's own thread, or a throwaway conversation;
    - `messages`: Letta user messages to send, each with a deterministic `otid`;
    - `replay`: when Letta already has this turn (a retry or regenerate), its stored answer instead;
    - `ephemeral`: whether the conversation must be deleted after the turn;
    - `session_scope`: the agent-scoped session digest used by the prompt overlay.

    ### Usage example
    ```python
    resolver = SessionResolver(base_url="http://localhost:8283")
    out = await resolver.run_async(agent_id="agent-...", messages=[{"role": "user", "content": "hi"}],
                                   new_positions=[0], session_key="chat-1")
    out["conversation_id"]  # "conv-..."
    ```
    """

    def __init__(
        self,
        base_url: str = "http://localhost:8283",
        api_key: Secret = Secret.from_env_var("LETTA_API_KEY", strict=False),
        *,
        project: str | None = None,
        timeout: float = 300.0,
        connect_timeout: float = 5.0,
        policy: str = "agent",
    ) -> None:
        """
        Create the resolver.

        :param base_url: The Letta server.
        :param api_key: Letta API key (optional for a self-hosted server).
        :param project: Letta Cloud project, if any.
        :param timeout: Read timeout for Letta calls, in seconds.
        :param connect_timeout: Connect timeout, in seconds.
        :param policy: What a request without a session key uses: `agent` (the agent's default thread) or
            `ephemeral` (a throwaway conversation that replays the transcript).
        """
        if policy not in ("agent", "ephemeral"):
            msg = f"policy must be 'agent' or 'ephemeral', not {policy!r}"
            raise ValueError(msg)
        self.base_url = base_url
        self.api_key = api_key
        self.project = project
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.policy = policy
        self._conversations: _LRU = _LRU()
        self._last_otid: _LRU = _LRU()
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def connection(self) -> LettaConnection:
        """The Letta connection this resolver uses."""
        return LettaConnection(self.base_url, self.api_key.resolve_value(), self.project, self.timeout,
                               self.connect_timeout)

    def to_dict(self) -> dict[str, Any]:
        """Serialize this component."""
        return default_to_dict(
            self,
            base_url=self.base_url,
            api_key=self.api_key,
            project=self.project,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            policy=self.policy,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionResolver:
        """Deserialize this component."""
        deserialize_secrets_inplace(data["init_parameters"], keys=["api_key"])
        return default_from_dict(cls, data)

    @component.output_types(
        conversation_id=str,
        messages=list[dict[str, Any]],
        replay=list[dict[str, Any]] | None,
        ephemeral=bool,
        session_scope=str,
    )
    def run(
        self,
        agent_id: str,
        messages: list[dict[str, Any]],
        new_positions: list[int],
        session_key: str | None = None,
        idempotency_key: str | None = None,
        force_ephemeral: bool = False,
    ) -> dict[str, Any]:
        """
        Blocking twin of `run_async`.

        :param agent_id: The Letta agent.
        :param messages: The OpenAI transcript as the client sent it.
        :param new_positions: Indexes of the user messages Letta has not seen (the trailing ones).
        :param session_key: The client's chat key, if any.
        :param idempotency_key: The request's `Idempotency-Key`, if any.
        :param force_ephemeral: Use a throwaway conversation even under the `agent` policy.
        :returns: `conversation_id`, `messages`, `replay`, `ephemeral`, `session_scope`.
        """
        return asyncio.run(
            self.run_async(agent_id, messages, new_positions, session_key, idempotency_key, force_ephemeral)
        )

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
        messages: list[dict[str, Any]],
        new_positions: list[int],
        session_key: str | None = None,
        idempotency_key: str | None = None,
        force_ephemeral: bool = False,
    ) -> dict[str, Any]:
        """
        Resolve the conversation and the messages to send.

        :param agent_id: The Letta agent.
        :param messages: The OpenAI transcript as the client sent it.
        :param new_positions: Indexes of the user messages Letta has not seen (the trailing ones).
        :param session_key: The client's chat key, if any.
        :param idempotency_key: The request's `Idempotency-Key`, if any.
        :param force_ephemeral: Use a throwaway conversation even under the `agent` policy.
        :returns: `conversation_id`, `messages`, `replay`, `ephemeral`, `session_scope`.
        :raises OpenAIError: 400 for a bad session key; 5xx when Letta fails.
        """
        key = check_session_key(session_key)
        try:
            if key is None and (self.policy == "ephemeral" or force_ephemeral):
                return await self._ephemeral(agent_id, messages, new_positions)
            scope = session_digest(agent_id, key) if key is not None else session_digest(agent_id, "\x00default")
            conversation_id = await self._conversation_for(agent_id, scope, key) if key is not None else "default"
            has_history = any(m.get("role") == "assistant" for m in messages)
            if key is None and not has_history:
                # a one-shot request to the agent's own thread: only an Idempotency-Key makes it a retry
                seed = idempotency_key or uuid.uuid4().hex
                otids = [str(uuid.UUID(bytes=hashlib.sha256(f"{scope}\x00{seed}\x00{p}".encode()).digest()[:16]))
                         for p in new_positions]
                check = idempotency_key is not None
            else:
                otids = [turn_otid(scope, messages, p) for p in new_positions]
                check = True
            letta_messages = [
                {"role": "user", "content": to_letta_content(messages[p]), "otid": otid}
                for p, otid in zip(new_positions, otids, strict=True)
            ]
            replay: list[dict[str, Any]] | None = None
            if check and otids and not self._known_new(scope, messages, new_positions):
                letta_messages, replay = await self._deduplicate(agent_id, conversation_id, letta_messages)
            if otids:
                self._last_otid.remember(scope, otids[-1])
            return {
                "conversation_id": conversation_id,
                "messages": letta_messages,
                "replay": replay,
                "ephemeral": False,
                "session_scope": scope,
            }
        except Exception as exc:
            raise from_letta_exception(exc) from exc

    def _known_new(self, scope: str, messages: list[dict[str, Any]], new_positions: list[int]) -> bool:
        """True when this process sent the turn before these ones, so they cannot be a repeat."""
        last = self._last_otid.get(scope)
        if last is None or not new_positions:
            return False
        previous_users = [i for i in range(new_positions[0]) if messages[i].get("role") == "user"]
        return bool(previous_users) and turn_otid(scope, messages, previous_users[-1]) == last

    async def _conversation_for(self, agent_id: str, scope: str, key: str) -> str:
        cached = self._conversations.get(scope)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            cached = self._conversations.get(scope)
            if cached is not None:
                return cached
            client = async_client(self.connection)
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
        client = async_client(self.connection)
        page = await client.conversations.list(agent_id=agent_id, summary_search=scope, limit=50)
        items = page if isinstance(page, list) else getattr(page, "items", page)
        matches = [c for c in items if (c.summary or "").startswith(f"{SUMMARY_PREFIX}{scope}")]
        if not matches:
            return None
        matches.sort(key=lambda c: (c.created_at or 0, c.id))
        return matches[0].id

    def forget(self, agent_id: str, session_key: str) -> None:
        """Drop cached state of a session (after its conversation vanished in Letta)."""
        scope = session_digest(agent_id, session_key)
        self._conversations.pop(scope, None)
        self._last_otid.pop(scope, None)

    async def _deduplicate(
        self, agent_id: str, conversation_id: str, letta_messages: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """Drop messages Letta already has; if the newest one is there, answer with what followed it."""
        client = async_client(self.connection)
        page = await client.conversations.messages.list(
            conversation_id,
            agent_id=agent_id if conversation_id == "default" else omit,
            order="desc",
            limit=_HISTORY_WINDOW,
        )
        history = chronological([m.model_dump(mode="json") for m in page.items],
                                assume_ascending=conversation_id == "default")
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

    async def _ephemeral(self, agent_id: str, messages: list[dict[str, Any]], new_positions: list[int]) -> dict:
        """A throwaway conversation that receives the client's whole transcript."""
        client = async_client(self.connection)
        conversation = await client.conversations.create(agent_id=agent_id, summary=EPHEMERAL_SUMMARY)
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
        del new_positions
        return {
            "conversation_id": conversation.id,
            "messages": replayed,
            "replay": None,
            "ephemeral": True,
            "session_scope": f"ephemeral-{conversation.id}",
        }

