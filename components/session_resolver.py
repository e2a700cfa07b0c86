"""
Maps a client chat to its own Letta conversation and decides which messages Letta has not seen yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from haystack import component, logging

from letta_hayhooks.chat_identity import TURN_PROGRESS, ChatHeads, reached
from letta_hayhooks.errors import from_letta_exception
from letta_hayhooks.letta_access.component_base import LettaComponent
from letta_hayhooks.letta_access.conversations import DEFAULT_CONVERSATION, recent_messages
from letta_hayhooks.letta_access.paging import page_items
from letta_hayhooks.letta_access.spare_conversations import SpareConversations
from letta_hayhooks.lru import LRU
from letta_hayhooks.openai_request import message_text, to_letta_content
from letta_hayhooks.turn_plan import TurnPlan

logger = logging.getLogger(__name__)

# The summary marks a conversation as ours and carries the session digest, so any proxy process finds it again.
SUMMARY_PREFIX = "letta-hayhooks session "
# A keyless chat: the summary carries the digest of the turn that led to the head and the head itself, which is how
# the next request of the chat finds it (`summary_search`), in any proxy process.
CHAT_PREFIX = "letta-hayhooks chat "
# A session conversation left behind when the session branched (a regenerate, an edit).
BRANCH_PREFIX = "letta-hayhooks branch "
EPHEMERAL_SUMMARY = "letta-hayhooks ephemeral"
# How much recent history is read to recognise a turn Letta has already seen (a retry or a regenerate).
_HISTORY_WINDOW = 30
# A head not recorded yet (the conversation's first answer is on its way).
PENDING = "pending"
# How long a head written by another process may take to reach Letta (its write follows the answer): one wait, or
# up to 40 for a turn of tool results.
_HEAD_SETTLE_SECONDS = 0.05
_TOOL_TURN_SETTLE_ATTEMPTS = 40


def _settle_attempts(messages: list[dict[str, Any]], first_new: int) -> int:
    tool_turn = first_new < len(messages) and messages[first_new].get("role") == "tool"
    return _TOOL_TURN_SETTLE_ATTEMPTS if tool_turn else 1


def chat_summary(scope: str, prev: str, head: str) -> str:
    """The summary of a keyless chat's conversation."""
    return f"{CHAT_PREFIX}{scope} prev={prev} head={head}"


def chat_scope(conversation_id: str) -> str:
    """The session scope of a keyless chat (its system-prompt block is its own): a digest of its conversation."""
    return hashlib.sha256(f"chat\x00{conversation_id}".encode()).hexdigest()[:32]


# Twin checks still running (kept referenced until they finish).
_CHECKS: set[asyncio.Task] = set()

# Separates a session's key from its heads in the summary (Letta 0.16 keeps no conversation description).
_HEADS_MARK = " \u2016 "


def session_summary(scope: str, key: str, prev: str | None = None, head: str | None = None,
                    prefix: str = SUMMARY_PREFIX) -> str:
    """The summary of a keyed session's conversation: its scope and key, then its heads once recorded."""
    heads = f"{_HEADS_MARK}prev={prev} head={head}" if head is not None else ""
    return f"{prefix}{scope} {key}{heads}"


def parse_session_summary(summary: str, prefix: str = SUMMARY_PREFIX) -> tuple[str, str, str | None, str | None]:
    """`(scope, key, prev, head)` from a summary written by `session_summary`."""
    scope, _, rest = summary[len(prefix):].partition(" ")
    key, _, heads = rest.partition(_HEADS_MARK)
    prev, head = parse_heads(heads)
    return scope, key, prev, head


def parse_heads(text: str | None) -> tuple[str | None, str | None]:
    """`(prev, head)` from the `prev=... head=...` fields of a summary."""
    fields = dict(part.split("=", 1) for part in (text or "").split() if "=" in part)
    return fields.get("prev"), fields.get("head")


@dataclass(frozen=True)
class ChatRecord:
    """What the chat recorder needs to move a conversation's head once the answer is known."""

    kind: str  # "chat" (keyless, head in the summary) or "session" (head in the description)
    conversation_id: str
    scope: str
    session_key: str | None
    prev: str  # the digest of the transcript that led to this answer
    old_head: str | None
    first: bool = False  # the conversation was made for this turn (a new chat's, a branch's)

    def __deepcopy__(self, memo: dict) -> ChatRecord:
        return self


def _last_use(conversation: Any) -> str:
    return str(getattr(conversation, "last_message_at", None) or getattr(conversation, "updated_at", None)
               or conversation.created_at or "")


def by_last_use(conversations: list[Any]) -> list[Any]:
    """
    Conversations the least recently used first (Letta stamps `last_message_at` when a turn arrives).

    Of conversations at one head, the first is the one that reached it first, the choice every process makes (this
    process's cache keeps them in that order too); a twin with a turn under way, or one whose head write after its
    last turn failed (its summary then names a head it has moved past), comes last.
    """
    return sorted(conversations, key=lambda c: (_last_use(c), c.id))


def _conversation_otid(conversation_id: str, otid: str) -> str:
    """A turn's otid inside one conversation: a branch never shares otids with the conversation it left."""
    return str(uuid.UUID(bytes=hashlib.sha256(f"{conversation_id}\x00{otid}".encode()).digest()[:16]))


def seed_messages(messages: list[dict[str, Any]], end: int) -> list[dict[str, Any]]:
    """
    The transcript before position `end` as Letta input messages (a new conversation's context), plus the tool
    results of the new turn after it: a seeded conversation never made those calls, so they go in as text too.
    """
    tail = [m for m in messages[end:] if m.get("role") == "tool"]
    seeded: list[dict[str, Any]] = []
    for message in [*messages[:end], *tail]:
        role = message.get("role")
        if role == "user":
            seeded.append({"role": "user", "content": to_letta_content(message)})
        elif role == "assistant":
            text = message_text(message.get("content"))
            calls = message.get("tool_calls") or []
            if calls:  # calls made in another conversation: their names and arguments go in as text
                names = ", ".join(str((c.get("function") or {}).get("name")) for c in calls if isinstance(c, dict))
                text = f"{text}\n[called tools: {names}]".strip()
            if text:
                seeded.append({"role": "assistant", "content": text})
        elif role == "tool":
            # this conversation never made these calls: the results go in as text
            seeded.append({"role": "user", "content": f"[tool result {message.get('tool_call_id')}]: "
                                                      f"{message_text(message.get('content'))}"})
    return seeded


@component
class SessionResolver(LettaComponent):
    """
    Maps a client chat to a Letta conversation and picks the messages Letta has not seen.

    Takes the `agent_id`, the turn's `plan` (session key and scope, the transcript's digests, otids of the new user
    messages, whether the conversation is a throwaway) and the OpenAI `messages` transcript with the
    `new_positions` of its new user messages. Gives:

    - `conversation_id`: the chat's conversation. Keyless chats (the `transcript` policy) are found by their head,
      the digest of the history up to the last answer: a request continues the conversation whose head equals the
      history it sent, and otherwise starts a branch (a new conversation seeded with that history). A keyed session
      has its own conversation (found again by its summary, so any proxy process reuses it) and branches the same
      way. `"default"` is the agent's own thread, and throwaway conversations serve one request;
    - `messages`: the Letta messages to send: a branch's seed, then the new user messages, each with its `otid`;
    - `replay`: when Letta already has this turn (a retry), its stored answer instead;
    - `ephemeral`: whether the conversation must be deleted after the turn;
    - `seeded`: whether the conversation was given the transcript as text (tool results then go in as text too);
    - `session_scope`: the agent-scoped session digest used by the prompt overlay;
    - `record`: what the chat recorder needs to move the conversation's head after the answer (or None);
    - `fate`: new, continued, branched, replayed or throwaway (for logs and metrics);
    - `fresh_scope`: whether `session_scope` was made for this turn (a new chat's or a branch's own conversation), so
      nothing is stored under it yet.

    ### Usage example
    ```python
    resolver = SessionResolver(base_url="http://localhost:8283")
    out = await resolver.run_async(agent_id="agent-...", plan=plan, messages=[{"role": "user", "content": "hi"}],
                                   new_positions=[0])
    out["conversation_id"]  # "conv-..."
    ```
    """

    def __init__(self, *, heads: ChatHeads | None = None, spares: SpareConversations | None = None,
                 **connection: Any) -> None:
        """
        Create the resolver.

        :param heads: This process's cache of chat heads, shared with the chat recorder (not serialised).
        :param spares: The agent's spare conversation, made ahead for new chats and branches (not serialised; its
            owner refills it after each turn).
        :param connection: Where Letta is (`base_url`, `api_key`, `project`, `timeout`, `connect_timeout`), as in
            `LettaComponent`.
        """
        LettaComponent.__init__(self, **connection)  # Haystack rebuilds the class: no bare super()
        self.heads = heads or ChatHeads()
        self.spares = spares or SpareConversations()
        self._last_otid: LRU = LRU()
        self._locks: dict[str, asyncio.Lock] = {}  # only while a session's conversation is being found

    @component.output_types(
        conversation_id=str,
        messages=list[dict[str, Any]],
        replay=list[dict[str, Any]] | None,
        ephemeral=bool,
        seeded=bool,
        session_scope=str,
        record=ChatRecord | None,
        fate=str,
        fresh_scope=bool,
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
        :returns: `conversation_id`, `messages`, `replay`, `ephemeral`, `seeded`, `session_scope`, `record`, `fate`,
            `fresh_scope`.
        :raises OpenAIError: 5xx when Letta fails.
        """
        try:
            if plan.conversation_id is not None:
                return await self._named(agent_id, plan, messages, new_positions)
            if plan.throwaway:
                return await self._throwaway(agent_id, messages)
            if plan.transcript_chat:
                return await self._transcript_chat(agent_id, plan, messages, new_positions)
            if plan.session_key is not None:
                return await self._session(agent_id, plan, messages, new_positions)
            return await self._default_thread(agent_id, plan, messages, new_positions)
        except Exception as exc:
            raise from_letta_exception(exc) from exc

    # ---- a conversation the client named (Responses: `previous_response_id`, `conversation`)
    async def _named(
        self, agent_id: str, plan: TurnPlan, messages: list[dict[str, Any]], new_positions: list[int]
    ) -> dict[str, Any]:
        conversation_id = plan.conversation_id
        assert conversation_id is not None
        # a conversation made for this turn gets the client's earlier items as its context
        seed = seed_messages(messages, plan.first_new) if plan.seed_history else []
        letta_messages = self._new_messages(messages, new_positions, plan.otids, conversation_id)
        replay = None
        if plan.check_duplicates and letta_messages:
            # an SDK retry of a new-item-only request: its text tells it apart
            by_text = plan.idempotency_key is None
            letta_messages, replay = await self._deduplicate(agent_id, conversation_id, letta_messages,
                                                             by_text=by_text)
        return self._out(conversation_id, [*seed, *letta_messages], chat_scope(conversation_id), replay=replay,
                         seeded=bool(seed), fate="replayed" if replay is not None else plan.fate or "continued",
                         fresh_scope=bool(seed))

    # ---- the agent's default thread (policy `agent`)
    async def _default_thread(
        self, agent_id: str, plan: TurnPlan, messages: list[dict[str, Any]], new_positions: list[int]
    ) -> dict[str, Any]:
        letta_messages = self._new_messages(messages, new_positions, plan.otids)
        replay = None
        known_new = plan.previous_otid is not None and self._last_otid.get(plan.scope) == plan.previous_otid
        if plan.check_duplicates and plan.otids and not known_new:
            letta_messages, replay = await self._deduplicate(agent_id, DEFAULT_CONVERSATION, letta_messages)
        if plan.otids:
            self._last_otid.remember(plan.scope, plan.otids[-1])
        return self._out(DEFAULT_CONVERSATION, letta_messages, plan.scope, replay=replay,
                         fate="replayed" if replay is not None else "continued")

    # ---- keyless chats (policy `transcript`)
    async def _transcript_chat(
        self, agent_id: str, plan: TurnPlan, messages: list[dict[str, Any]], new_positions: list[int]
    ) -> dict[str, Any]:
        digests = plan.digests
        assert digests is not None
        if plan.retry:
            # the first attempt may have been answered already (in any process): its conversation names this turn
            await self.heads.settled(plan.scope)
            answered = await self._find_chat(agent_id, plan.scope, "prev", digests.turn)
            if answered is not None:
                replayed = await self._replay_if_answered(agent_id, answered, plan, messages, new_positions)
                if replayed is not None:
                    return replayed
        conversation_id = None
        if digests.has_history:
            conversation_id = self.heads.conversation(plan.scope, digests.history)
            if conversation_id is not None and self.heads.at_first_head(conversation_id):
                # where twin chats start: another process may have made one at this head (off the turn's path)
                self._check_twins(agent_id, plan.scope, digests.history, conversation_id)
            # a head this process's chat moved past: the client regenerated or edited (no other head to wait for)
            left_behind = conversation_id is None and self.heads.left_behind(plan.scope, digests.history)
            if conversation_id is None and not left_behind:
                await self.heads.settled(plan.scope)  # Letta's heads must include this process's own last writes
                conversation_id = await self._find_chat(agent_id, plan.scope, "head", digests.history)
            # the process that served the last answer may still be writing its head: look again before starting a
            # branch (paid only on the way to a branch). Tool results answer calls made a moment ago, by a client
            # that answers at once: a branch is almost never meant there, so wait longer for that head.
            waits = 0 if conversation_id is not None or left_behind else _settle_attempts(messages, plan.first_new)
            for _ in range(waits):
                await asyncio.sleep(_HEAD_SETTLE_SECONDS)
                conversation_id = await self._find_chat(agent_id, plan.scope, "head", digests.history)
                if conversation_id is not None:
                    break
        if conversation_id is not None:
            fate, seed = "continued", []
            letta_messages = self._new_messages(messages, new_positions, plan.otids, conversation_id)
            if self.heads.unsettled(conversation_id):
                # a turn sent here was never recorded (failed, cancelled): Letta may hold its message already
                letta_messages, replay = await self._deduplicate(agent_id, conversation_id, letta_messages)
                if replay is not None:
                    return self._out(conversation_id, [], chat_scope(conversation_id), replay=replay,
                                     fate="replayed")
        else:
            fate = "branched" if digests.has_history else "new"
            conversation_id = await self._new_conversation(agent_id, chat_summary(plan.scope, digests.turn, PENDING),
                                                           plan.scope)
            seed = seed_messages(messages, plan.first_new)
            letta_messages = self._new_messages(messages, new_positions, plan.otids, conversation_id)
            logger.info("Chat of agent {agent_id} -> {fate} conversation {conversation_id}", agent_id=agent_id,
                        fate=fate, conversation_id=conversation_id)
        self.heads.sending(conversation_id)
        record = ChatRecord("chat", conversation_id, plan.scope, None, digests.turn,
                            digests.history if digests.has_history else None, first=fate != "continued")
        return self._out(conversation_id, [*seed, *letta_messages], chat_scope(conversation_id), seeded=bool(seed),
                         record=record, fate=fate, fresh_scope=fate != "continued")

    async def _find_chat(self, agent_id: str, scope: str, field: str, value: str) -> str | None:
        """
        The conversation of the chat scope whose summary has `field=value`: at a head (`head`), the one that reached
        it first (twin chats each take one); the one that answered a turn (`prev`), the last used.
        """
        matches = await self._chats_with(agent_id, scope, field, value)
        if not matches:
            return None
        return matches[0].id if field == "head" else matches[-1].id

    async def _chats_with(self, agent_id: str, scope: str, field: str, value: str) -> list[Any]:
        """The conversations of the chat scope whose summary has `field=value`, the least recently used first."""
        needle = f"{field}={value}"
        page = await self.client.conversations.list(agent_id=agent_id, summary_search=needle, limit=20)
        return by_last_use([c for c in page_items(page) if (c.summary or "").startswith(f"{CHAT_PREFIX}{scope} ")
                            and needle in (c.summary or "").split()])

    def _check_twins(self, agent_id: str, scope: str, head: str, taken: str) -> None:
        """
        Look in Letta, once the turn is sent, for conversations at `head` besides those this process knows: twins
        made by another process, which the head's continuations here must find once `taken` has moved on.
        """
        async def check(sent: asyncio.Event | None) -> None:
            try:
                await reached(sent)
                found = await self._chats_with(agent_id, scope, "head", head)
                self.heads.twins_checked(scope, head, [c.id for c in found], taken)
            except Exception as exc:  # noqa: BLE001 - without it, a twin of another process may be branched from
                logger.warning("Could not look for twins of conversation {conversation_id}: {error}",
                               conversation_id=taken, error=type(exc).__name__)

        progress = TURN_PROGRESS.get()
        task = asyncio.get_running_loop().create_task(check(progress and progress.sent))
        _CHECKS.add(task)
        task.add_done_callback(_CHECKS.discard)
        self.heads.checking_twins(scope, head, task)

    async def _replay_if_answered(
        self, agent_id: str, conversation_id: str, plan: TurnPlan, messages: list[dict[str, Any]],
        new_positions: list[int],
    ) -> dict[str, Any] | None:
        letta_messages = self._new_messages(messages, new_positions, plan.otids, conversation_id)
        if not letta_messages:
            return None
        _, replay = await self._deduplicate(agent_id, conversation_id, letta_messages)
        if replay is None:
            return None
        return self._out(conversation_id, [], chat_scope(conversation_id), replay=replay, fate="replayed")

    # ---- keyed sessions
    async def _session(
        self, agent_id: str, plan: TurnPlan, messages: list[dict[str, Any]], new_positions: list[int]
    ) -> dict[str, Any]:
        key = plan.session_key
        assert key is not None
        digests = plan.digests
        conversation_id, head, created = await self._conversation_for(agent_id, plan.scope, key)
        history = digests.history if digests is not None and digests.has_history else None
        seed: list[dict[str, Any]] = []
        fate = "new" if created else "continued"
        if history is not None and not created and head not in (None, PENDING, history) and not plan.retry:
            # another process may have moved the session since this one cached its head: ask Letta before branching
            await self.heads.settled(plan.scope)
            head = await self._session_head(conversation_id, plan.scope, history, messages, plan.first_new)
        if history is not None and (created or (head not in (None, PENDING, history) and not plan.retry)):
            if not created:
                # the client's history left the session's (a regenerate, an edit): the session moves to a new
                # conversation seeded with what the client shows; the old one stays, archived, as the agent's recall
                conversation_id = await self._branch_session(agent_id, plan.scope, key, conversation_id)
                fate = "branched"
            seed = seed_messages(messages, plan.first_new)
        otids = plan.otids if not seed else tuple(_conversation_otid(conversation_id, o) for o in plan.otids)
        letta_messages = self._new_messages(messages, new_positions, otids)
        replay = None
        known_new = plan.previous_otid is not None and self._last_otid.get(plan.scope) == plan.previous_otid
        if not seed and plan.check_duplicates and otids and not known_new:
            # an SDK retry of a new-message-only request has a fresh otid: its text tells it apart
            by_text = plan.retry and plan.idempotency_key is None and history is None
            letta_messages, replay = await self._deduplicate(agent_id, conversation_id, letta_messages,
                                                             by_text=by_text)
        if otids:
            self._last_otid.remember(plan.scope, otids[-1])
        record = None
        if digests is not None:
            record = ChatRecord("session", conversation_id, plan.scope, key, digests.turn, head)
        return self._out(conversation_id, [*seed, *letta_messages], plan.scope, replay=replay, seeded=bool(seed),
                         record=record, fate="replayed" if replay is not None else fate)

    async def _conversation_for(self, agent_id: str, scope: str, key: str) -> tuple[str, str | None, bool]:
        """The session's conversation, its recorded head, and whether it was created just now."""
        cached = self.heads.session(scope)
        if cached is not None:
            return cached[0], cached[1], False
        lock = self._locks.setdefault(scope, asyncio.Lock())
        async with lock:
            cached = self.heads.session(scope)
            if cached is not None:
                return cached[0], cached[1], False
            found = await self._find(agent_id, scope)
            created = False
            if found is None:
                client = self.client
                made = await client.conversations.create(agent_id=agent_id, summary=session_summary(scope, key))
                # another proxy process may have created one at the same moment: all converge on the oldest
                found = await self._find(agent_id, scope) or (made.id, None)
                created = found[0] == made.id
                if not created:
                    await client.conversations.delete(made.id)
                logger.info("Session {scope} of agent {agent_id} -> new conversation {conversation_id}",
                            scope=scope, agent_id=agent_id, conversation_id=found[0])
            self.heads.session_moved(scope, *found)
        self._locks.pop(scope, None)
        return found[0], found[1], created

    async def _find(self, agent_id: str, scope: str) -> tuple[str, str | None] | None:
        page = await self.client.conversations.list(agent_id=agent_id, summary_search=scope, limit=50)
        matches = [c for c in page_items(page) if (c.summary or "").startswith(f"{SUMMARY_PREFIX}{scope} ")]
        if not matches:
            return None
        matches.sort(key=lambda c: (c.created_at or 0, c.id))
        return matches[0].id, parse_session_summary(matches[0].summary)[3]

    async def _session_head(
        self, conversation_id: str, scope: str, history: str, messages: list[dict[str, Any]], first_new: int
    ) -> str | None:
        """The session's head as Letta has it now (waiting once for a head that may still be being written)."""
        head = None
        for attempt in range(1 + _settle_attempts(messages, first_new)):
            if attempt:
                await asyncio.sleep(_HEAD_SETTLE_SECONDS)
            conversation = await self.client.conversations.retrieve(conversation_id)
            head = parse_session_summary(conversation.summary or "")[3]
            if head == history:
                break
        self.heads.session_moved(scope, conversation_id, head)
        return head

    async def _branch_session(self, agent_id: str, scope: str, key: str, old: str) -> str:
        client = self.client
        made = await client.conversations.create(agent_id=agent_id, summary=session_summary(scope, key))
        # renamed, the old conversation is no longer the session's (its summary no longer starts with the session's)
        await client.conversations.update(old, summary=session_summary(scope, key, prefix=BRANCH_PREFIX), archived=True)
        self.heads.session_moved(scope, made.id, None)
        logger.info("Session {scope} of agent {agent_id} branched: {old} -> {conversation_id}", scope=scope,
                    agent_id=agent_id, old=old, conversation_id=made.id)
        return made.id

    # ---- shared steps
    @staticmethod
    def _new_messages(
        messages: list[dict[str, Any]], new_positions: list[int], otids: tuple[str, ...],
        conversation_id: str | None = None,
    ) -> list[dict[str, Any]]:
        if conversation_id is not None:
            otids = tuple(_conversation_otid(conversation_id, otid) for otid in otids)
        return [{"role": "user", "content": to_letta_content(messages[p]), "otid": otid}
                for p, otid in zip(new_positions, otids, strict=True)]

    @staticmethod
    def _out(
        conversation_id: str, messages: list[dict[str, Any]], scope: str, *, replay: list[dict[str, Any]] | None = None,
        ephemeral: bool = False, seeded: bool = False, record: ChatRecord | None = None, fate: str = "continued",
        fresh_scope: bool = False,
    ) -> dict[str, Any]:
        return {"conversation_id": conversation_id, "messages": messages, "replay": replay, "ephemeral": ephemeral,
                "seeded": seeded, "session_scope": scope, "record": record if replay is None else None, "fate": fate,
                "fresh_scope": fresh_scope}

    async def _deduplicate(
        self, agent_id: str, conversation_id: str, letta_messages: list[dict[str, Any]], *, by_text: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """
        Drop messages Letta already has; if the newest one is there, answer with what followed it.

        Messages are matched by otid, or with `by_text` by their text against the conversation's last user message.
        """
        if not letta_messages:
            return letta_messages, None
        history = await recent_messages(self.client, agent_id, conversation_id, _HISTORY_WINDOW)
        users = [i for i, m in enumerate(history) if m.get("message_type") == "user_message"]
        if by_text:
            last = history[users[-1]] if users else {}
            if not users or message_text(last.get("content")) != message_text(letta_messages[-1]["content"]):
                return letta_messages, None
            start = users[-1]
        else:
            seen = {history[i].get("otid") for i in users}
            if letta_messages[-1]["otid"] not in seen:
                return [m for m in letta_messages if m.get("otid") not in seen], None
            start = max(i for i in users if history[i].get("otid") == letta_messages[-1]["otid"])
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
        conversation_id = await self._new_conversation(agent_id, None)
        return self._out(conversation_id, seed_messages(messages, len(messages)), f"ephemeral-{conversation_id}",
                         ephemeral=True, seeded=True, fate="throwaway", fresh_scope=True)

    async def _new_conversation(self, agent_id: str, summary: str | None, scope: str | None = None) -> str:
        """
        A new conversation with `summary` (None: a throwaway, deleted after its turn, named no further).

        The agent's spare when there is one: its summary is then written in the background, once Letta has the turn
        (the head written after the answer waits for it; so do this process's lookups of the scope).
        """
        spare = await self.spares.take(self.client, agent_id)
        if spare is None:
            made = await self.client.conversations.create(agent_id=agent_id, summary=summary or EPHEMERAL_SUMMARY)
            return made.id
        if summary is not None:
            progress = TURN_PROGRESS.get()
            task = asyncio.get_running_loop().create_task(self._name(spare, summary, progress and progress.sent))
            self.heads.naming(spare, task)
            if scope is not None:
                self.heads.writing(scope, task)
        return spare

    async def _name(self, conversation_id: str, summary: str, sent: asyncio.Event | None) -> None:
        try:
            await reached(sent)  # the turn's own request goes to Letta first
            await self.client.conversations.update(conversation_id, summary=summary)
        except Exception as exc:  # noqa: BLE001 - the head written after the answer names it again
            logger.warning("Could not name conversation {conversation_id}: {error}", conversation_id=conversation_id,
                           error=type(exc).__name__)

    async def close(self) -> None:
        """Delete the spare conversation, then release the client."""
        await self.spares.close()
        await LettaComponent.close(self)
