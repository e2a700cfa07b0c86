"""SpareConversations keeps one conversation made ahead, hands it out once, and cleans up after itself."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace
from typing import Any

from letta_hayhooks.letta_access.spare_conversations import (
    SPARE_PREFIX,
    SpareConversations,
    delete_stale_spares,
)


class FakeConversations:
    def __init__(self, fail: bool = False) -> None:
        self.made: list[str] = []
        self.deleted: list[str] = []
        self.summaries: dict[str, str] = {}
        self.fail = fail

    async def create(self, agent_id: str, summary: str) -> Any:
        await asyncio.sleep(0.01)
        if self.fail:
            raise ConnectionError("down")
        conversation_id = f"conv-{len(self.made)}"
        self.made.append(conversation_id)
        self.summaries[conversation_id] = summary
        return SimpleNamespace(id=conversation_id)

    async def delete(self, conversation_id: str) -> None:
        self.deleted.append(conversation_id)


def client(fail: bool = False) -> Any:
    return SimpleNamespace(conversations=FakeConversations(fail))


def test_a_spare_is_made_after_a_turn_and_handed_out_once() -> None:
    async def run() -> None:
        spares, letta = SpareConversations(), client()
        assert await spares.take(letta, "agent-1") is None  # none yet: the caller makes its own
        spares.refill()
        first = await spares.take(letta, "agent-1")  # still being made: awaited
        assert first == "conv-0"
        assert letta.conversations.summaries[first] == SPARE_PREFIX + spares.owner
        assert await spares.take(letta, "agent-1") is None  # handed out once
        spares.refill()
        spares.refill()  # one spare at a time
        await asyncio.sleep(0.05)
        assert letta.conversations.made == ["conv-0", "conv-1"]

    asyncio.run(run())


def test_no_spare_is_made_for_an_agent_that_never_needed_one() -> None:
    async def run() -> None:
        spares = SpareConversations()
        spares.refill()
        await asyncio.sleep(0.02)
        assert spares._making is None and spares._spare is None

    asyncio.run(run())


def test_an_old_spare_is_deleted_instead_of_handed_out() -> None:
    async def run() -> None:
        spares, letta = SpareConversations(max_age=0.01), client()
        await spares.take(letta, "agent-1")
        spares.refill()
        await asyncio.sleep(0.05)
        assert await spares.take(letta, "agent-1") is None
        await asyncio.sleep(0.01)
        assert letta.conversations.deleted == ["conv-0"]

    asyncio.run(run())


def test_close_deletes_the_spare_and_a_failed_make_is_not_fatal() -> None:
    async def run() -> None:
        spares, letta = SpareConversations(), client()
        await spares.take(letta, "agent-1")
        spares.refill()
        await asyncio.sleep(0.05)
        await spares.close()
        assert letta.conversations.deleted == ["conv-0"]

        failing, down = SpareConversations(), client(fail=True)
        await failing.take(down, "agent-1")
        failing.refill()
        assert await failing.take(down, "agent-1") is None

    asyncio.run(run())


def test_stale_spares_of_stopped_processes_are_deleted() -> None:
    now = dt.datetime.now(dt.UTC)
    rows = [
        SimpleNamespace(id="old", summary=SPARE_PREFIX + "abc", created_at=now - dt.timedelta(hours=2)),
        SimpleNamespace(id="new", summary=SPARE_PREFIX + "def", created_at=now - dt.timedelta(minutes=1)),
        SimpleNamespace(id="chat", summary="letta-hayhooks chat x prev=a head=b",
                        created_at=now - dt.timedelta(days=9)),
    ]
    deleted: list[str] = []

    def list_conversations(**params: Any) -> Any:
        return rows if params.get("after") is None else []

    letta = SimpleNamespace(conversations=SimpleNamespace(list=list_conversations, delete=deleted.append))
    assert delete_stale_spares(letta, 3600) == 1
    assert deleted == ["old"]
