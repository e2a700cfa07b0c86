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
    heads.moved("scope", "conv-2", None, "h1")  # identical histories: both conversations are remembered
    heads.moved("scope", "conv-1", "h1", "h2")  # conv-1 moves on, conv-2 still holds h1
    assert heads.conversation("scope", "h1") == "conv-2"
    assert not heads.left_behind("scope", "h1")


def test_twin_chats_each_take_one_conversation_at_their_head() -> None:
    heads = ChatHeads()
    heads.moved("scope", "conv-a", None, "h1", first=True)  # chat A's first answer
    heads.moved("scope", "conv-b", None, "h1", first=True)  # chat B's: the same transcript
    assert heads.at_head("scope", "h1") == ("conv-a", "conv-b")
    assert heads.conversation("scope", "h1") == "conv-a"  # the first to reach the head is taken first
    heads.moved("scope", "conv-a", "h1", "ha2")  # one twin continues
    assert heads.conversation("scope", "h1") == "conv-b"  # the other twin's continuation finds the other one
    assert not heads.left_behind("scope", "h1")
    heads.moved("scope", "conv-b", "h1", "hb2")
    assert heads.conversation("scope", "h1") is None
    assert heads.left_behind("scope", "h1")  # now nothing this process knows of is at h1: a request from it branches
    assert heads.at_head("scope", "ha2") == ("conv-a",) and heads.at_head("scope", "hb2") == ("conv-b",)


def test_a_conversation_leaves_the_head_this_process_last_saw_it_at() -> None:
    heads = ChatHeads()
    heads.moved("scope", "conv-1", None, "h1")
    # another process served h1 -> h2 (found in Letta); this process records h2 -> h3
    heads.moved("scope", "conv-1", "h2", "h3")
    assert heads.conversation("scope", "h1") is None  # not a conversation at h1 any longer
    assert heads.at_head("scope", "h3") == ("conv-1",)


def test_a_twin_of_another_process_keeps_the_head_from_being_left_behind() -> None:
    heads = ChatHeads()
    heads.moved("scope", "conv-a", None, "h1", first=True)
    assert heads.at_first_head("conv-a")
    # the twin check while conv-a's next turn runs: Letta also has conv-b at h1, made by another process
    heads.twins_checked("scope", "h1", ["conv-a", "conv-b"], "conv-a")
    heads.moved("scope", "conv-a", "h1", "h2")
    assert not heads.at_first_head("conv-a")
    assert heads.conversation("scope", "h1") is None  # the other process's conversation is not cached here
    assert not heads.left_behind("scope", "h1")  # so a request from h1 asks Letta, which has conv-b


def test_a_twin_check_that_finds_nothing_new_changes_nothing() -> None:
    heads = ChatHeads()
    heads.moved("scope", "conv-a", None, "h1", first=True)
    heads.moved("scope", "conv-b", None, "h1", first=True)
    heads.twins_checked("scope", "h1", ["conv-a", "conv-b"], "conv-a")  # both known here
    heads.moved("scope", "conv-a", "h1", "ha")
    heads.moved("scope", "conv-b", "h1", "hb")
    assert heads.left_behind("scope", "h1")


def test_a_head_is_not_left_behind_while_a_twin_check_runs() -> None:
    async def run() -> tuple[bool, bool]:
        heads = ChatHeads()
        heads.moved("scope", "conv-a", None, "h1", first=True)
        heads.moved("scope", "conv-a", "h1", "h2")
        release = asyncio.Event()
        check = asyncio.get_running_loop().create_task(release.wait())
        heads.checking_twins("scope", "h1", check)
        during = heads.left_behind("scope", "h1")
        release.set()
        await check
        await asyncio.sleep(0)  # the done callback
        return during, heads.left_behind("scope", "h1")

    assert asyncio.run(run()) == (False, True)


def test_of_conversations_at_one_head_the_least_recently_used_comes_first() -> None:
    from datetime import datetime
    from types import SimpleNamespace

    from letta_hayhooks.components.session_resolver import by_last_use

    def conversation(id_: str, minute: int | None, created: int = 0) -> SimpleNamespace:
        return SimpleNamespace(id=id_, created_at=datetime(2026, 1, 1, 0, created),
                               last_message_at=None if minute is None else datetime(2026, 1, 1, 0, minute),
                               updated_at=None)

    busy, first, second = conversation("busy", 9), conversation("first", 1), conversation("second", 2)
    # a twin with a turn under way (Letta stamps last_message_at as the turn arrives) comes last
    assert [c.id for c in by_last_use([busy, second, first])] == ["first", "second", "busy"]
    assert [c.id for c in by_last_use([conversation("b", 1), conversation("a", 1)])] == ["a", "b"]


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
