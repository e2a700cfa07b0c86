"""
Which chat a transcript belongs to: digests of a chat's history, the same whichever client sends it.

A chat's *head* is the digest of its history up to the last answer the client received. A request continues the chat
whose head equals the digest of the history it sent before its new turn; any other history (a regenerate, an edited
message) belongs to a new branch. Digests chain message by message (`step`), so every prefix of a transcript is
digested in one pass.

What is digested is what every client keeps of a message: the role, the text (an assistant's reasoning, which clients
show or drop in different ways, is left out) or the tool calls and tool results by id. System and developer messages
are not part of the chain: the system prompt reaches the agent through the prompt overlay on every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from letta_hayhooks.lru import LRU


@dataclass
class TurnProgress:
    """
    Milestones of one turn that its background Letta writes wait for, so they never hold the turn up: starting an HTTP
    request costs about a millisecond of the event loop, which the turn's own request and its answer's last bytes
    should not queue behind.
    """

    sent: asyncio.Event = field(default_factory=asyncio.Event)  # Letta has the turn (its answer began)
    delivered: asyncio.Event = field(default_factory=asyncio.Event)  # the client has the whole answer

    def finish(self) -> None:
        """The turn is over, however it ended: nothing waits any longer."""
        self.sent.set()
        self.delivered.set()


# The running turn's progress, set by whoever runs the turn; the pipeline's tasks inherit it.
TURN_PROGRESS: ContextVar[TurnProgress | None] = ContextVar("letta_hayhooks_turn_progress", default=None)
# How long a background write waits for a milestone at most (a turn that never reaches it still gets written).
_PROGRESS_WAIT_SECONDS = 5.0


async def reached(milestone: asyncio.Event | None) -> None:
    """Wait (a bounded time) for a milestone of a turn's progress; at once without one."""
    if milestone is not None and not milestone.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(milestone.wait(), _PROGRESS_WAIT_SECONDS)


# The head of a chat with no history yet.
EMPTY = hashlib.sha256(b"letta-hayhooks chat").hexdigest()[:32]
# Reasoning that clients put back into an assistant's text: `<think>` tags (this server's think_tags mode), Open
# WebUI's collapsible `<details type="reasoning">` blocks.
_REASONING = re.compile(r"<think>.*?</think>|<details\b[^>]*type=\"reasoning\"[^>]*>.*?</details>", re.S | re.I)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, Mapping):
            if part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, Mapping) else image
                parts.append(f"[image {hashlib.sha256(str(url).encode()).hexdigest()[:16]}]")
    return "\n".join(parts)


def _normal(text: str) -> str:
    # the same as collapsing every run of `\s` to one space and stripping (both use str.isspace), at a third the cost
    return " ".join(text.split())


def message_key(message: Mapping[str, Any]) -> str | None:
    """What a message contributes to the chain; None for messages outside it (system, developer)."""
    role = message.get("role")
    if role == "user":
        return "u\x00" + _normal(_text(message.get("content")))
    if role == "assistant":
        calls = message.get("tool_calls")
        call_ids = ",".join(str(c.get("id")) for c in calls if isinstance(c, Mapping)) if calls else ""
        text = _text(message.get("content"))
        text = _normal(_REASONING.sub("", text) if "<" in text else text)
        return f"a\x00{text}\x00{call_ids}"
    if role == "tool":
        return f"t\x00{message.get('tool_call_id')}\x00{_normal(_text(message.get('content')))}"
    return None


def step(previous: str, message: Mapping[str, Any]) -> str:
    """The digest of a history after one more message."""
    key = message_key(message)
    if key is None:
        return previous
    return hashlib.sha256(f"{previous}\x00{key}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def digest(messages: Sequence[Mapping[str, Any]], start: str = EMPTY) -> str:
    """The digest of a history."""
    current = start
    for message in messages:
        current = step(current, message)
    return current


@dataclass(frozen=True)
class TranscriptDigests:
    """The digests of one request's transcript."""

    history: str  # of the messages before the new turn (the head the request continues)
    turn: str  # of the whole transcript, new turn included (the head once the answer is known, less the answer)
    has_history: bool  # whether an assistant message came before the new turn


def transcript_digests(messages: Sequence[Mapping[str, Any]], first_new: int) -> TranscriptDigests:
    """Digest the history before position `first_new` and the whole transcript, in one pass."""
    current = EMPTY
    history = EMPTY
    has_history = False
    for i, message in enumerate(messages):
        if i == first_new:
            history = current
        if i < first_new and message.get("role") == "assistant":
            has_history = True
        current = step(current, message)
    if first_new >= len(messages):
        history = current
    return TranscriptDigests(history=history, turn=current, has_history=has_history)


def reply_message(text: str | None, tool_calls: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The assistant message a client keeps of an answer (for the head after it)."""
    return {"role": "assistant", "content": text or "", "tool_calls": [{"id": c.get("id")} for c in tool_calls]}


class ChatHeads:
    """
    This process's knowledge of chat heads: (chat scope, head digest) -> the conversations at that head, the heads its
    chats have moved past (a request sending one of those is a regenerate or an edit: no need to ask Letta), keyed
    sessions' heads, and which conversations may hold a turn whose answer was never recorded (checked for duplicates
    before the next turn).

    Twin chats (identical transcripts: the same first message answered with the same text) are at one head in
    conversations of their own. A request cannot tell which twin sent it, and each of those conversations holds what
    the client shows: a continuation takes the one that reached the head first, the next continuation the next one,
    and the head is left behind only when none is left (`twins_checked` adds those of other processes).

    Letta holds the record (the conversation's summary); this is only a cache, bounded like the others.
    """

    def __init__(self) -> None:
        self._conversations: LRU = LRU()  # (chat scope, head) -> conversations at it, the first to reach it first
        self._at: LRU = LRU()  # conversation -> (chat scope, head) where this process last saw it
        self._first: LRU = LRU()  # conversations at the first head they reached (a new chat's, a branch's)
        self._left: LRU = LRU()  # (chat scope, head) a conversation moved past in this process
        self._elsewhere: LRU = LRU()  # (chat scope, head) Letta also has conversations at that this process lacks
        self._checks: dict[tuple[str, str], asyncio.Task] = {}  # (chat scope, head) -> a twin check running
        self._unsettled: LRU = LRU()
        self._sessions: LRU = LRU()  # keyed session scope -> (conversation id, head or None)
        self._writes: dict[str, set[asyncio.Task]] = {}  # scope -> head writes to Letta still running
        self._naming: dict[str, asyncio.Task] = {}  # conversation -> its first summary, still being written

    def writing(self, scope: str, task: asyncio.Task) -> None:
        """A head write to Letta for the scope is running (Letta's copy is stale until it ends)."""
        tasks = self._writes.setdefault(scope, set())
        tasks.add(task)

        def done(finished: asyncio.Task) -> None:
            tasks.discard(finished)
            if not tasks:
                self._writes.pop(scope, None)

        task.add_done_callback(done)

    def naming(self, conversation_id: str, task: asyncio.Task) -> None:
        """A conversation's first summary is being written (a spare taken for a chat): head writes wait for it."""
        self._naming[conversation_id] = task
        task.add_done_callback(lambda _t: self._naming.pop(conversation_id, None))

    async def named(self, conversation_id: str) -> None:
        """Wait (up to 2 s) for the conversation's first summary, so a head written next is not overwritten by it."""
        task = self._naming.get(conversation_id)
        if task is not None:
            await asyncio.wait([task], timeout=2.0)

    async def settled(self, scope: str) -> None:
        """Wait (up to 2 s) for this process's head writes of the scope, so what Letta says next includes them."""
        tasks = list(self._writes.get(scope, ()))
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    def session(self, scope: str) -> tuple[str, str | None] | None:
        """The keyed session's conversation and head, as this process last saw them."""
        return self._sessions.get(scope)

    def session_moved(self, scope: str, conversation_id: str, head: str | None) -> None:
        """A keyed session's conversation or head changed."""
        self._sessions.remember(scope, (conversation_id, head))
        self._unsettled.pop(conversation_id, None)

    def conversation(self, scope: str, head: str) -> str | None:
        """
        The conversation of the chat scope (agent and tenant) this process last saw at `head`; of twins, the one that
        reached it first.
        """
        at = self._conversations.get((scope, head))
        return at[0] if at else None

    def at_head(self, scope: str, head: str) -> tuple[str, ...]:
        """Every conversation this process last saw at `head`, the first to reach it first."""
        return self._conversations.get((scope, head)) or ()

    def left_behind(self, scope: str, head: str) -> bool:
        """
        Whether a chat of the scope moved past `head` in this process and no conversation is known to be at it still:
        none this process saw there, none of another process that a twin check found, and no check running.
        """
        key = (scope, head)
        return key in self._left and key not in self._elsewhere and key not in self._checks

    def moved(self, scope: str, conversation_id: str, old_head: str | None, new_head: str,
              *, first: bool = False) -> None:
        """
        A keyless chat's turn was answered: its conversation's head moved (`first`: the conversation was made for
        this turn, a new chat's or a branch's).
        """
        places = {self._at.pop(conversation_id, None), (scope, old_head) if old_head is not None else None}
        for place in places - {None}:
            at = self._conversations.get(place)
            if at and conversation_id in at:
                rest = tuple(c for c in at if c != conversation_id)
                if rest:
                    self._conversations[place] = rest  # its twins are still there
                else:
                    self._conversations.pop(place, None)
                    self._left.remember(place, conversation_id)
        key = (scope, new_head)
        at = self._conversations.get(key) or ()
        self._conversations.remember(key, at if conversation_id in at else (*at, conversation_id))
        self._at.remember(conversation_id, key)
        if first:
            self._first.remember(conversation_id, key)
        else:
            self._first.pop(conversation_id, None)
        self._left.pop(key, None)
        self._unsettled.pop(conversation_id, None)

    def at_first_head(self, conversation_id: str) -> bool:
        """Whether the conversation is still at the first head it reached here (where twins start)."""
        return conversation_id in self._first

    def checking_twins(self, scope: str, head: str, task: asyncio.Task) -> None:
        """A look in Letta for conversations at `head` this process does not know of is running."""
        key = (scope, head)
        self._checks[key] = task
        task.add_done_callback(lambda t: self._checks.pop(key, None) if self._checks.get(key) is t else None)

    def twins_checked(self, scope: str, head: str, in_letta: Sequence[str], taken: str) -> None:
        """
        What Letta has at `head` (conversation ids) while `taken` moves on from it: any other this process does not
        know there is a twin another process made, so this process's chats moving past the head no longer make it
        left behind (the next request from it asks Letta). Only that fact is kept, not the ids: the other process
        may move its conversations at any time.
        """
        key = (scope, head)
        known = {taken, *(self._conversations.get(key) or ())}
        if any(c not in known for c in in_letta):
            self._elsewhere.remember(key, True)
            self._left.pop(key, None)

    def sending(self, conversation_id: str) -> None:
        """A turn is about to be sent to the conversation (unsettled until `moved`)."""
        self._unsettled.remember(conversation_id, True)

    def unsettled(self, conversation_id: str) -> bool:
        """True when a turn was sent to the conversation and its answer never recorded."""
        return conversation_id in self._unsettled
