"""ChatHeads: what this process knows of chat heads."""

from __future__ import annotations

import asyncio

from letta_hayhooks.chat_identity import ChatHeads


def test_a_head_moved_past_is_known_as_left_behind_until_a_chat_reaches_it_again() -> None:
    heads = ChatHeads()
    heads.moved("scope", "conv-1", None, "h1")
    assert not heads.left_behind("scope", "h1")
    heads.moved("scope", "conv-1", "h1", "h2")
    assert heads.conversation("scope", "h1") is None
    assert heads.left_behind("scope", "h1")
    assert not heads.left_behind("other-scope", "h1")
    heads.moved("scope", "conv-2", None, "h1")  # another chat's answer led to the same head
    assert not heads.left_behind("scope", "h1")
    assert heads.conversation("scope", "h1") == "conv-2"


def test_a_head_another_conversation_holds_is_not_left_behind() -> None:
    heads = ChatHeads()
    heads.moved("scope", "conv-1", None, "h1")
    heads.moved("scope", "conv-2", None, "h1")  # identical histories: the newest conversation is remembered
    heads.moved("scope", "conv-1", "h1", "h2")  # conv-1 moves on, conv-2 still holds h1
    assert heads.conversation("scope", "h1") == "conv-2"
    assert not heads.left_behind("scope", "h1")


def test_a_head_write_waits_for_the_conversations_first_summary() -> None:
    async def run() -> list[str]:
        heads, order = ChatHeads(), []

        async def first_summary() -> None:
            await asyncio.sleep(0.02)
            order.append("named")

        heads.naming("conv-1", asyncio.get_running_loop().create_task(first_summary()))
        await heads.named("conv-1")
        order.append("head")
        await heads.named("conv-unknown")  # nothing to wait for
        return order

    assert asyncio.run(run()) == ["named", "head"]
