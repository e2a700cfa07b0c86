"""
What the server relies on in Starlette's `StreamingResponse` (its event streams, chat and Responses): when the
client leaves mid-stream, the content's iterator is closed where it waits, so the turn behind it cancels its Letta
run (the iterator's `finally`), and the response ends without an error reaching the server. Under ASGI 2.3, what
uvicorn's HTTP protocols speak, Starlette learns of the departure from `receive()` and cancels the writer, which
closes the iterator at once; under 2.4 (other servers) from `send()` failing, and the abandoned iterator is closed
when it is collected (asyncio's async-generator hooks), which the turn's own finalizer also covers.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse


def _content(closed: asyncio.Event) -> Any:
    async def content() -> Any:
        try:
            yield "data: 1\n\n"
            await asyncio.sleep(3600)  # a turn that would go on
            yield "data: never\n\n"
        finally:
            closed.set()

    return content()


def test_a_client_that_leaves_closes_the_content_under_asgi_2_3() -> None:
    sent: list[dict] = []

    async def receive() -> dict:
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        closed = asyncio.Event()
        response = StreamingResponse(_content(closed), media_type="text/event-stream")
        await asyncio.wait_for(response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send), 5)
        assert closed.is_set()

    asyncio.run(run())
    assert next(m.get("body") for m in sent if m["type"] == "http.response.body") == b"data: 1\n\n"
    assert sent[0]["headers"][0] == (b"content-type", b"text/event-stream; charset=utf-8")


def test_under_asgi_2_4_the_departure_is_a_client_disconnect_and_the_content_closes_when_collected() -> None:
    async def receive() -> dict:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    writes = 0

    async def send(message: dict) -> None:
        nonlocal writes
        writes += 1
        if writes > 2:
            raise OSError("the client went away")

    async def run() -> None:
        closed = asyncio.Event()

        async def content() -> Any:
            try:
                while True:
                    yield "data: x\n\n"
                    await asyncio.sleep(0.01)
            finally:
                closed.set()

        response = StreamingResponse(content(), media_type="text/event-stream")
        with pytest.raises(ClientDisconnect):
            await asyncio.wait_for(response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send), 5)
        del response
        gc.collect()
        for _ in range(3):
            await asyncio.sleep(0)  # the collected generator's aclose runs as a task
        assert closed.is_set()

    asyncio.run(run())
