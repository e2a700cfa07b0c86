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


def test_the_digest_of_a_transcript_does_not_change_between_versions() -> None:
    # heads recorded in Letta are these digests: a change would send every existing chat to a branch once
    from letta_hayhooks.chat_identity import digest

    transcript = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "  Hello\u2003 there\n"},
        {"role": "assistant", "content": "<think>hmm</think> Hi!\t\tHow  can I help?",
         "tool_calls": [{"id": "call_1"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]},
        {"role": "assistant", "content": '<details type="reasoning">x</details>Done <b>bold</b>'},
        {"role": "user", "content": [{"type": "text", "text": "and\u00a0this"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    ]
    assert digest(transcript) == "f8d6313f1dca4ab65a618f468d6dd1e6"
    # whitespace and reasoning the clients show differently do not count
    spaced = [{"role": "user", "content": " Hello\n there"}]
    assert digest([{"role": "user", "content": "Hello there"}]) == digest(spaced)
