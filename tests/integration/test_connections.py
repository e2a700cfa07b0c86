"""
`letta-hayhooks serve` against slow and careless clients: request heads sent slowly are cut off, slow connections do
not hold up normal requests, idle keep-alive connections close, and a key in a query string stays out of the log.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Backend, Server

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 2.0
KEEPALIVE = 1.0
MARGIN = 5.0  # generous: the timeouts are tested, not the machine's speed


@pytest.fixture(scope="module")
def guarded(letta_backend: Backend, server_factory: Callable[..., Server]) -> Server:
    return server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
                                                             "LETTA_HAYHOOKS_KEEPALIVE_TIMEOUT": str(KEEPALIVE)})


def connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.settimeout(0.1)
    return sock


def is_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_request_head_sent_one_line_per_second_is_cut_off(guarded: Server) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
        started = time.monotonic()
        closed_after = None
        n = 0
        while time.monotonic() - started < HEADER_TIMEOUT + MARGIN:
            try:
                sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())
            except OSError:
                closed_after = time.monotonic() - started
                break
            n += 1
            if is_closed(sock):
                closed_after = time.monotonic() - started
                break
            time.sleep(0.9)
    assert closed_after is not None, "a client sending one header line per second kept its connection"
    assert httpx.get(f"{guarded.v1}/models", timeout=10).status_code == 200


def test_fifty_slow_connections_do_not_block_a_request_and_are_closed(guarded: Server) -> None:
    slow = [connect(guarded) for _ in range(50)]
    try:
        for sock in slow:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        assert httpx.get(f"{guarded.v1}/models", timeout=10).status_code == 200
        deadline = time.monotonic() + HEADER_TIMEOUT + MARGIN
        open_ = slow
        while open_ and time.monotonic() < deadline:
            open_ = [sock for sock in open_ if not is_closed(sock)]
        assert not open_, f"{len(open_)} slow connections are still open"
    finally:
        for sock in slow:
            sock.close()


def test_an_idle_keep_alive_connection_is_closed(guarded: Server) -> None:
    with connect(guarded) as sock:
        sock.settimeout(5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        while not answer.endswith(b'{"status":"alive"}'):  # the head and the body may come in separate reads
            answer += sock.recv(65536)
        answered = time.monotonic()
        sock.settimeout(KEEPALIVE + MARGIN)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(65536) == b""  # closed by the server, not timed out here
    # well before uvicorn's own default of 5 s
    assert time.monotonic() - answered < KEEPALIVE + 2.5


def test_a_key_in_the_query_string_is_not_logged(guarded: Server) -> None:
    response = httpx.get(f"{guarded.url}/healthz?model=x&api_key=SECRET123&token=SECRET456", timeout=10)
    assert response.status_code == 200
    deadline = time.monotonic() + 5
    while "api_key=[redacted]" not in guarded.log() and time.monotonic() < deadline:
        time.sleep(0.1)  # the access line is written after the response
    log = guarded.log()
    assert "/healthz?model=x&api_key=[redacted]&token=[redacted]" in log
    assert "SECRET123" not in log and "SECRET456" not in log
