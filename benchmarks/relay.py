"""
A timing TCP relay in front of Letta: it forwards bytes unchanged and records when each HTTP request and its
response passed through, so a benchmark can split a client's latency into "time at Letta" and "time elsewhere".

Run as its own process (so it never competes with the benchmark client for the GIL):

    python -m benchmarks.relay --target-port 8283 --port 9000 --out records.json

It writes the records as JSON to `--out` when it gets SIGTERM. One record per HTTP request:
`{"conn", "method", "path", "t_req" (first request byte), "t_resp_first", "t_resp_last", "t_done", "assistant": [...]}`
(`t_done`: when Letta's `data: [DONE]` passed; Letta keeps a streamed response open a while after it, finishing the
run, and a client that reads the response to its end sees that tail)
where `assistant` holds the arrival time of every server read that carried an `assistant_message` event (one entry
per occurrence). Times are `time.monotonic()` seconds, the same clock as in every other process on the machine.
Requests on a keep-alive connection are told apart by direction changes (HTTP/1.1 without pipelining).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path

MARKER = b"assistant_message"
DONE_MARKER = b"data: [DONE]"  # the end of Letta's answer; the response itself may stay open after it
_METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ", b"OPTIONS ")


class Relay:
    """Forwards connections to 127.0.0.1:`target_port` and records request/response timing."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.records: list[dict] = []
        self._conn_ids = 0

    async def handle(  # noqa: PLR0915 - one relay loop per direction, kept together
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._conn_ids += 1
        conn = self._conn_ids
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        state: dict = {"current": None, "tail": b""}

        async def client_to_server() -> None:
            while data := await reader.read(65536):
                now = time.monotonic()
                current = state["current"]
                if current is None or current["t_resp_first"] is not None:
                    method, path = b"?", b"?"
                    if data.startswith(_METHODS):
                        first = data.split(b"\r\n", 1)[0].split(b" ")
                        method, path = first[0], first[1] if len(first) > 1 else b"?"
                    current = {"conn": conn, "method": method.decode(), "path": path.decode("latin-1"),
                               "t_req": now, "t_resp_first": None, "t_resp_last": None, "t_done": None,
                               "assistant": []}
                    state["current"] = current
                    state["tail"] = b""
                    self.records.append(current)
                up_writer.write(data)
                await up_writer.drain()
            with contextlib.suppress(OSError):
                up_writer.write_eof()

        async def server_to_client() -> None:
            while data := await up_reader.read(65536):
                now = time.monotonic()
                writer.write(data)
                current = state["current"]
                if current is not None:
                    if current["t_resp_first"] is None:
                        current["t_resp_first"] = now
                    current["t_resp_last"] = now
                    window = state["tail"] + data
                    count = window.count(MARKER) - state["tail"].count(MARKER)
                    current["assistant"].extend([now] * count)
                    if current["t_done"] is None and DONE_MARKER in window:
                        current["t_done"] = now
                    state["tail"] = window[-(len(DONE_MARKER) - 1):]
                await writer.drain()

        async def upstream_part() -> None:
            try:
                await client_to_server()
            except Exception:  # noqa: BLE001 - the client went away: let Letta see it
                up_writer.close()

        forward = asyncio.create_task(upstream_part())
        with contextlib.suppress(Exception, asyncio.CancelledError):  # cancelled: the relay is shutting down
            await server_to_client()
        forward.cancel()
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()


async def _main(args: argparse.Namespace) -> None:
    relay = Relay(args.target_port)
    server = await asyncio.start_server(relay.handle, "127.0.0.1", args.port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.ready:
        Path(args.ready).write_text("ready")  # noqa: ASYNC240 - once, before any traffic
    async with server:
        await stop.wait()
        Path(args.out).write_text(json.dumps(relay.records))  # noqa: ASYNC240 - after the traffic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ready", default=None, help="a file written once the relay listens")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
