"""EventStream writes from the request's own task and ends quietly when the client leaves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from letta_hayhooks.server.event_stream import EventStream

SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}


def test_the_head_and_first_events_go_out_before_any_other_task_runs() -> None:
    order: list[str] = []

    async def content() -> Any:
        yield "data: 1\n\n"
        yield "data: 2\n\n"

    async def receive() -> dict:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        order.append(message["type"].removeprefix("http.response."))

    async def run() -> None:
        asyncio.get_running_loop().call_soon(order.append, "another task")
        await EventStream(content())(SCOPE, receive, send)

    asyncio.run(run())
    # Starlette's StreamingResponse would let the other task run first: it writes from a task it starts
    assert order[:3] == ["start", "body", "body"] and order.index("another task") >= 3


def test_a_client_that_leaves_ends_the_stream_quietly_and_closes_its_content() -> None:
    closed = asyncio.Event()

    async def content() -> Any:
        try:
            yield "data: 1\n\n"
            await asyncio.sleep(3600)  # a turn that would go on
            yield "data: never\n\n"
        finally:
            closed.set()

    async def receive() -> dict:
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        await asyncio.wait_for(EventStream(content())(SCOPE, receive, send), 5)
        assert closed.is_set()
        assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]

    asyncio.run(run())
    assert [m.get("body") for m in sent if m["type"] == "http.response.body"] == [b"data: 1\n\n"]


def test_a_cancel_from_elsewhere_still_cancels() -> None:
    async def content() -> Any:
        yield "data: 1\n\n"
        await asyncio.sleep(3600)
        yield "data: never\n\n"

    async def receive() -> dict:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        return None

    async def run() -> None:
        task = asyncio.create_task(EventStream(content())(SCOPE, receive, send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
