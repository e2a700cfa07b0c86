"""
Uvicorn's HTTP protocol with what a server facing untrusted clients needs beyond its own options.

* A header deadline. Uvicorn closes idle keep-alive connections (`timeout_keep_alive`), but nothing bounds how long a
  client may take to send a request's head: one header line per second holds a connection open forever, and
  thousands of them hold the server's file descriptors. Here a connection must complete its request line and headers
  within the header timeout of opening, or of its first byte after a keep-alive wait, or it is closed.
* Writes joined per event-loop turn. Uvicorn writes a response's head as soon as the app starts it, and its body
  separately; a client woken by the head alone takes the CPU from the server before the body is written (0.2-0.3 ms
  on a busy machine). Writes made in one turn of the event loop go out as one, at the end of that turn.
* The start of the drain. When the server begins to stop, uvicorn closes its listening sockets and calls `shutdown()`
  on each open connection, then waits for them; the first call begins the app's drain (`chat/drain.py`, handed over
  in the lifespan state), so running streams get their grace period and end with an error event, not a cut.

`letta-hayhooks serve` uses it; under plain uvicorn pass `--http letta_hayhooks.server.http_guard:GuardedHttpProtocol`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from letta_hayhooks.chat.drain import DRAIN_STATE
from letta_hayhooks.settings import get_settings


class GuardedHttpProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type] - httptools', or h11's without it
    """Uvicorn's HTTP protocol (httptools or h11) with a header deadline; begins the drain on shutdown."""

    header_timeout: float | None = None  # None: the LETTA_HAYHOOKS_HEADER_TIMEOUT setting

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = self.header_timeout or get_settings().header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(JoinedWrites(transport, self.loop))
        self._arm_header_deadline()  # a connection that never sends a request is closed as well

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is None and self._between_requests():
            self._arm_header_deadline()  # the first bytes of a request after a keep-alive wait
        super().data_received(data)
        if self._header_deadline is not None and not self._between_requests():
            self._header_deadline.cancel()  # the head is complete: the request is the app's now
            self._header_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        drain = (self.app_state or {}).get(DRAIN_STATE)
        if drain is not None:
            drain.begin()
        super().shutdown()

    def _between_requests(self) -> bool:
        """True while no request is being answered or queued: the connection waits for a request head."""
        cycle = self.cycle
        return (cycle is None or cycle.response_complete) and not getattr(self, "pipeline", None)

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(self._header_timeout, self._header_deadline_passed)

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        # a connection upgraded to another protocol is no longer this one's to close
        if self._between_requests() and not self.transport.is_closing() and self.transport.get_protocol() is self:
            self.transport.close()


class JoinedWrites(asyncio.Transport):
    """
    A transport whose writes made in one turn of the event loop reach the socket as one write, at the end of the
    turn; everything else is the wrapped transport's. Nothing is held longer than the turn it was written in.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(chunk) for chunk in self._pending)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


def guarded_protocol(header_timeout: float) -> type[GuardedHttpProtocol]:
    """The protocol class with `header_timeout` (seconds) fixed, for uvicorn's `http=`."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"header_timeout": header_timeout})
