"""ChatRecorder moves the head at once in this process and writes Letta's copy once the answer is delivered."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from letta_hayhooks.chat_identity import TURN_PROGRESS, ChatHeads, TurnProgress
from letta_hayhooks.components import ChatRecorder
from letta_hayhooks.components.session_resolver import ChatRecord


def test_the_head_is_written_to_letta_after_the_answer_is_delivered() -> None:
    async def run() -> None:
        updates: list[tuple[str, str]] = []

        async def update(conversation_id: str, summary: str) -> Any:
            updates.append((conversation_id, summary))

        heads = ChatHeads()
        recorder = ChatRecorder(base_url="http://127.0.0.1:9", heads=heads)
        recorder._client = SimpleNamespace(conversations=SimpleNamespace(update=update))  # type: ignore[assignment]
        progress = TurnProgress()
        TURN_PROGRESS.set(progress)
        progress.sent.set()
        record = ChatRecord("chat", "conv-1", "scope", None, "prev-digest", None)
        out = await recorder.run_async(replies=[SimpleNamespace(text="hello", tool_calls=[])], record=record)
        assert heads.conversation("scope", out["head"]) == "conv-1"  # known here at once
        await asyncio.sleep(0.02)
        assert updates == []  # the answer is still on its way
        progress.delivered.set()
        await heads.settled("scope")
        assert updates == [("conv-1", f"letta-hayhooks chat scope prev=prev-digest head={out['head']}")]

    asyncio.run(run())
