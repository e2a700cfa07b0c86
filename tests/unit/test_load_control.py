"""Per-session serialisation, bounded queues and caps."""

from __future__ import annotations

import asyncio

import pytest

from letta_hayhooks.chat.load_control import LoadController
from letta_hayhooks.errors import OpenAIError


def controller(**kwargs) -> LoadController:
    params = {"max_inflight": 10, "max_inflight_per_agent": 10, "queue_depth": 8, "queue_wait": 2.0, **kwargs}
    return LoadController(**params)


async def test_turns_of_one_session_run_one_at_a_time() -> None:
    load = controller()
    running, peak, order = 0, 0, []

    async def turn(i: int) -> None:
        nonlocal running, peak
        async with load.turn("agent", "session"):
            running += 1
            peak = max(peak, running)
            order.append(i)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(turn(i) for i in range(5)))
    assert peak == 1 and sorted(order) == list(range(5))
    assert load.inflight == 0


async def test_full_session_queue_is_429_with_retry_after() -> None:
    load = controller(queue_depth=1)
    first = await load.acquire("agent", "s")
    waiting = asyncio.create_task(load.acquire("agent", "s"))
    await asyncio.sleep(0.01)
    with pytest.raises(OpenAIError) as busy:
        await load.acquire("agent", "s")
    assert busy.value.status == 429 and busy.value.headers["Retry-After"]
    first.release()
    (await waiting).release()
    assert load.rejected == 1


async def test_waiting_too_long_is_429() -> None:
    load = controller(queue_wait=0.05)
    held = await load.acquire("agent", "s")
    with pytest.raises(OpenAIError) as late:
        await load.acquire("agent", "s")
    assert late.value.status == 429
    held.release()


async def test_agent_cap_lets_other_agents_through() -> None:
    load = controller(max_inflight_per_agent=1, queue_wait=0.05)
    held = await load.acquire("busy-agent", "s1")
    with pytest.raises(OpenAIError):
        await load.acquire("busy-agent", "s2")
    other = await load.acquire("other-agent", "s3")
    assert load.inflight == 2
    for ticket in (held, other):
        ticket.release()
        ticket.release()  # idempotent
    assert load.inflight == 0


async def test_a_newcomer_does_not_jump_a_woken_waiter_and_still_times_out() -> None:
    # a released lock whose waiter has not run yet is unlocked but not free: the newcomer queues, bounded by its wait
    load = controller(queue_wait=0.05)
    first = await load.acquire("agent", "s")
    woken = asyncio.create_task(load.acquire("agent", "s"))
    await asyncio.sleep(0)
    first.release()  # `woken` is due to run, but has not yet: the newcomer below starts first, in this task
    with pytest.raises(OpenAIError) as late:
        async with asyncio.timeout(2):  # a newcomer queued without its bound would end here instead
            await load.acquire("agent", "s")
    assert late.value.status == 429
    (await woken).release()
    assert load.inflight == 0


async def test_a_free_slot_is_taken_without_waiting() -> None:
    load = controller()
    ticket = await load.acquire("agent", "s")
    assert load.inflight == 1 and load.waiting["agent"] == 0
    ticket.release()
    assert load.inflight == 0
