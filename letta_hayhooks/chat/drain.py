"""
Shutdown of one server process, as its streams see it (the drain).

When the server begins to stop, `Drain.begin()` refuses new turns (503 `server_shutting_down` with Retry-After),
gives the streams still running `grace` seconds to finish, and then stops the rest: each ends with an OpenAI error
event and `[DONE]`, and its pipeline is closed, which cancels its Letta run. Each stream registers itself with
`Drain.track()` and awaits its next chunk through `OpenStream.watch()`, the one place a stop can interrupt it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from hayhooks import log

from letta_hayhooks.errors import OpenAIError

T = TypeVar("T")

# The lifespan state key under which the server app hands its drain to the HTTP protocol (server/http_guard.py).
DRAIN_STATE = "letta_hayhooks_drain"
# What a refused client is told to wait: long enough for a restarted server or another replica to take over.
RETRY_AFTER_SECONDS = 5
# How long the drain waits for the stopped streams to write their last event and close their runs.
_STOP_WAIT_SECONDS = 3.0


def shutting_down() -> OpenAIError:
    """503 for a turn refused or ended because the server is stopping."""
    return OpenAIError(503, "The server is shutting down; retry the request.", type="server_error",
                       code="server_shutting_down", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class OpenStream:
    """One stream that is answering: the drain can stop it between chunks or while it waits for one."""

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self.stopped = False
        self._waiting: asyncio.Task | None = None  # the task awaiting the next chunk, while it waits
        self._cancelled = False  # stop() cancelled that wait

    def stop(self) -> None:
        """End the stream: at its next chunk, or now if it is waiting for one."""
        self.stopped = True
        if self._waiting is not None and not self._cancelled:
            self._cancelled = True
            self._waiting.cancel()

    async def watch(self, next_chunk: Awaitable[T]) -> T:
        """
        Await the stream's next chunk unless the drain stops the stream first.

        :raises OpenAIError: `server_shutting_down` once the stream is stopped.
        """
        if self.stopped:
            if asyncio.iscoroutine(next_chunk):
                next_chunk.close()
            raise shutting_down()
        task = asyncio.current_task()
        self._waiting = task
        try:
            result = await next_chunk
        except asyncio.CancelledError:
            # our own cancel becomes the error event; any other cancel (client gone) goes on as a cancel
            if self._cancelled and task is not None and task.uncancel() == 0:
                raise shutting_down() from None
            raise
        finally:
            self._waiting = None
        if self._cancelled and task is not None:
            task.uncancel()  # the wait finished before the cancel landed: take the cancel back
        if self.stopped:
            raise shutting_down()
        return result

    def close(self) -> None:
        """The stream has ended (any way): the drain stops waiting for it."""
        self._drain.closed(self)


class Drain:
    """The shutdown state of one server process: whether it is draining, and the streams still open."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.draining = False
        self.streams: set[OpenStream] = set()
        self._ending: asyncio.Task | None = None
        self._idle: asyncio.Event | None = None  # set once draining and no stream is open

    def track(self) -> OpenStream:
        """Register a stream that starts answering."""
        stream = OpenStream(self)
        self.streams.add(stream)
        if self.draining and self._ending is not None and self._ending.done():
            stream.stop()  # started after the grace period ran out
        return stream

    def begin(self) -> None:
        """Refuse new turns from now on, and stop the streams still open after the grace period (idempotent)."""
        if self.draining:
            return
        self.draining = True
        self._idle = asyncio.Event()
        if not self.streams:
            self._idle.set()
        log.info("Shutting down: new turns are refused; {} open stream(s) get {} s to finish",
                 len(self.streams), self.grace)
        self._ending = asyncio.get_running_loop().create_task(self._end_streams())

    def closed(self, stream: OpenStream) -> None:
        """`stream` has ended."""
        self.streams.discard(stream)
        if not self.streams and self._idle is not None:
            self._idle.set()

    async def finish(self) -> None:
        """Begin (if not yet) and wait until every stream has ended or been stopped."""
        self.begin()
        assert self._ending is not None
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._ending)

    async def _end_streams(self) -> None:
        assert self._idle is not None
        try:
            await asyncio.wait_for(self._idle.wait(), self.grace)
        except TimeoutError:
            pass
        else:
            return
        log.warning("Shutting down: ending {} stream(s) still open after {} s", len(self.streams), self.grace)
        for stream in list(self.streams):
            stream.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), _STOP_WAIT_SECONDS)
