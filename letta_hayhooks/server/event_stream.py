"""
An event-stream response written from the request's own task.

Starlette's `StreamingResponse`, under ASGI 2.3 (what uvicorn speaks), writes the stream from a task it starts and
waits for the client to leave in the request's task: the stream's head and first events go out one event-loop turn
later than they could. Here the stream is written at once, and a side task waits for the client to leave.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, MutableMapping
from typing import Any

from starlette.responses import StreamingResponse

from letta_hayhooks.settings import get_settings


def event_stream(content: AsyncIterable[str | bytes]) -> StreamingResponse:
    """The event-stream response of `content`: `EventStream`, or Starlette's own for the A/B benchmark."""
    if get_settings().stock_event_stream:
        return StreamingResponse(content, media_type="text/event-stream")
    return EventStream(content)


class EventStream(StreamingResponse):
    """
    A `text/event-stream` response of `content` (strings or bytes, one write each), written from the task that
    sends it. When the client goes away, that task is cancelled: the content's iterator is closed where it waits
    (the turn behind it cancels its Letta run) and the response ends quietly.
    """

    def __init__(self, content: AsyncIterable[str | bytes]) -> None:
        super().__init__(content, media_type="text/event-stream")

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Callable, send: Callable  # noqa: ARG002 - ASGI's signature
    ) -> None:
        writer = asyncio.current_task()
        assert writer is not None
        left = False

        async def watch() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            writer.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if left and writer.uncancel() == 0:
                return  # the client left: nothing more to write
            raise
        finally:
            watcher.cancel()
        if self.background is not None:
            await self.background()
