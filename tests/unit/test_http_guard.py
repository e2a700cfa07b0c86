"""
The header deadline of the guarded HTTP protocol, on a real uvicorn server with a tiny app (raw sockets as clients),
and the access-log redaction of secrets in query strings.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from letta_hayhooks.local.letta_server import free_port
from letta_hayhooks.server.access_log import REDACTED, RedactQuerySecrets, install, redact_query
from letta_hayhooks.server.http_guard import JoinedWrites, guarded_protocol

HEADER_TIMEOUT = 0.6
KEEPALIVE = 0.6
MARGIN = 2.0  # generous: a loaded machine is slow, and the timeout is what is tested, not the speed


async def app(scope: dict, receive, send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(HEADER_TIMEOUT * 2)  # a response longer than the header timeout
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off",
                            http=guarded_protocol(HEADER_TIMEOUT), timeout_keep_alive=KEEPALIVE)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(0.2)
    return sock


def closed(sock: socket.socket) -> bool:
    """True once the server has closed the connection (any pending answer is read and dropped)."""
    try:
        return sock.recv(4096) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def closed_within(sock: socket.socket, seconds: float, *, dribble: bool = False) -> float | None:
    """Seconds until the server closes `sock` (None: still open), sending a header line every 0.2 s if `dribble`."""
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        if dribble:
            try:
                sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())
            except OSError:
                return time.monotonic() - started
            n += 1
        if closed(sock):
            return time.monotonic() - started
    return None


def get(port: int, path: str = "/", sock: socket.socket | None = None) -> bytes:
    own = sock is None
    sock = sock or connect(port)
    sock.settimeout(5)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while not data.endswith(b"ok"):
            more = sock.recv(4096)
            if not more:
                break
            data += more
        return data
    finally:
        sock.settimeout(0.2)
        if own:
            sock.close()


def test_a_head_sent_one_line_at_a_time_is_cut_off(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        took = closed_within(sock, HEADER_TIMEOUT + MARGIN, dribble=True)
    assert took is not None, "a client dribbling headers kept its connection"
    assert took >= HEADER_TIMEOUT * 0.8


def test_a_silent_connection_is_closed(port: int) -> None:
    with connect(port) as sock:
        assert closed_within(sock, HEADER_TIMEOUT + MARGIN) is not None


def test_an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not(port: int) -> None:
    with connect(port) as sock:
        assert get(port, "/slow", sock).endswith(b"ok")  # the answer took longer than the header timeout
        assert get(port, "/", sock).endswith(b"ok")  # the same connection still serves a next request
        assert closed_within(sock, KEEPALIVE + MARGIN) is not None


def test_slow_clients_do_not_block_normal_requests(port: int) -> None:
    slow = [connect(port) for _ in range(50)]
    try:
        for sock in slow:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        assert get(port).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + HEADER_TIMEOUT + MARGIN
        while time.monotonic() < deadline and not all(closed(sock) for sock in slow):
            pass
        assert all(closed(sock) for sock in slow), "slow connections are still open"
    finally:
        for sock in slow:
            sock.close()
    assert get(port).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(("path", "expected"), [
    ("/v1/models?api_key=SECRET123", f"/v1/models?api_key={REDACTED}"),
    ("/x?model=writer&token=abc&key=k&x-api-key=s", f"/x?model=writer&token={REDACTED}&key={REDACTED}"
                                                     f"&x-api-key={REDACTED}"),
    ("/x?API%5FKEY=abc&access_token=t&limit=3", f"/x?API%5FKEY={REDACTED}&access_token={REDACTED}&limit=3"),
    ("/healthz", "/healthz"),
    ("/x?flag&password=", "/x?flag&password="),
])
def test_secret_query_values_are_redacted(path: str, expected: str) -> None:
    assert redact_query(path) == expected


def test_the_access_log_filter_rewrites_uvicorns_record(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("uvicorn.access")
    install()
    install()  # once only
    assert sum(isinstance(f, RedactQuerySecrets) for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/v1/models?api_key=SECRET123", "1.1", 200)
    assert "SECRET123" not in caplog.text and f"api_key={REDACTED}" in caplog.text


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data) -> None:  # type: ignore[no-untyped-def]
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_write_buffer_size(self) -> int:
        return 0


def test_writes_of_one_loop_turn_go_out_as_one() -> None:

    async def run() -> _Transport:
        inner = _Transport()
        joined = JoinedWrites(inner, asyncio.get_running_loop())
        joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        joined.write(b"body")
        assert inner.writes == [] and joined.get_write_buffer_size() == 23  # held until the turn ends
        await asyncio.sleep(0)
        assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        joined.write(b"next")  # a later turn: its own write
        await asyncio.sleep(0)
        joined.write(b"last")
        joined.close()  # what is held goes out before the close
        assert inner.writes[1:] == [b"next", b"last"] and inner.closed
        return inner

    asyncio.run(run())


def test_an_aborted_connection_drops_what_it_held() -> None:

    async def run() -> None:
        inner = _Transport()
        joined = JoinedWrites(inner, asyncio.get_running_loop())
        joined.write(b"partial")
        joined.abort()
        await asyncio.sleep(0)
        assert inner.writes == [] and inner.aborted

    asyncio.run(run())
