"""SessionResolver's Letta calls for keyless chats: what a new chat and a regenerate cost."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from letta_hayhooks.chat_identity import ChatHeads
from letta_hayhooks.components import ChatRecorder, SessionResolver
from letta_hayhooks.letta_access.spare_conversations import SpareConversations
from letta_hayhooks.openai_request import validate_chat_request
from letta_hayhooks.turn_plan import plan_turn


class FakeConversations:
    """Records every call; `list` finds nothing (no other process wrote a head)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.made = 0

    async def create(self, agent_id: str, summary: str) -> Any:
        self.made += 1
        self.calls.append(("create", summary))
        return SimpleNamespace(id=f"conv-{self.made}")

    async def update(self, conversation_id: str, summary: str) -> Any:
        self.calls.append(("update", (conversation_id, summary)))

    async def list(self, **params: Any) -> Any:
        self.calls.append(("list", params.get("summary_search")))
        return []


def resolver_and_recorder() -> tuple[SessionResolver, ChatRecorder, FakeConversations, SpareConversations]:
    heads, spares, conversations = ChatHeads(), SpareConversations(), FakeConversations()
    resolver = SessionResolver(base_url="http://127.0.0.1:9", heads=heads, spares=spares)
    recorder = ChatRecorder(base_url="http://127.0.0.1:9", heads=heads)
    client = SimpleNamespace(conversations=conversations)
    resolver._client = recorder._client = client  # type: ignore[assignment]
    return resolver, recorder, conversations, spares


async def turn(resolver: SessionResolver, recorder: ChatRecorder, messages: list[dict], answer: str) -> dict:
    request = validate_chat_request("m", messages, {"model": "m", "messages": messages})
    plan = plan_turn("agent-1", request, {}, policy="transcript", request_id="r")
    out = await resolver.run_async(agent_id="agent-1", plan=plan, messages=request.messages,
                                   new_positions=request.new_turn.user_positions)
    reply = SimpleNamespace(text=answer, tool_calls=[])
    await recorder.run_async(replies=[reply], record=out["record"])
    return out


def test_a_regenerate_of_a_chat_served_here_branches_at_once_into_the_spare() -> None:
    async def run() -> None:
        resolver, recorder, letta, spares = resolver_and_recorder()
        first = [{"role": "user", "content": "hi"}]
        out = await turn(resolver, recorder, first, "hello")
        assert out["fate"] == "new"
        assert [kind for kind, _ in letta.calls] == ["create"]  # no spare yet: made on the turn's path
        spares.refill()  # the turn is over
        await asyncio.sleep(0.01)
        history = [*first, {"role": "assistant", "content": "hello"}]
        out = await turn(resolver, recorder, [*history, {"role": "user", "content": "one"}], "You said one")
        assert out["fate"] == "continued"
        spares.refill()
        await asyncio.sleep(0.01)
        letta.calls.clear()
        loop = asyncio.get_running_loop()
        started = loop.time()
        out = await turn(resolver, recorder, [*history, {"role": "user", "content": "two"}], "You said two")
        assert loop.time() - started < 0.04  # no wait for another process's head
        assert out["fate"] == "branched"
        assert out["conversation_id"] == "conv-2"  # the spare, made after the first turn
        assert [m["content"] for m in out["messages"]][:2] == ["hi", "hello"]  # seeded with the history
        await asyncio.sleep(0.01)
        kinds = [kind for kind, _ in letta.calls]
        assert "list" not in kinds and "create" not in kinds
        # named first, then the head: the head write waited for the name
        updates = [args for kind, args in letta.calls if kind == "update"]
        assert [conversation for conversation, _ in updates] == ["conv-2", "conv-2"]
        assert "head=pending" in updates[0][1] and "head=pending" not in updates[1][1]

    asyncio.run(run())


def test_a_history_this_process_never_saw_is_looked_up_before_branching() -> None:
    async def run() -> None:
        resolver, recorder, letta, _spares = resolver_and_recorder()
        history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        out = await turn(resolver, recorder, [*history, {"role": "user", "content": "again"}], "ok")
        assert out["fate"] == "branched"
        kinds = [kind for kind, _ in letta.calls]
        assert kinds[:2] == ["list", "list"]  # looked up, waited once for another process's head, looked again
        assert "create" in kinds

    asyncio.run(run())
