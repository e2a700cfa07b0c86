"""
Shutdown of `letta-hayhooks serve` on SIGTERM, against the real Letta: running streams finish within the grace
period, streams still open then end with a `server_shutting_down` error event and `[DONE]` (their Letta runs
cancelled), a turn arriving during the drain is refused with 503, and the process exits.

Each test stops its own server.
"""

from __future__ import annotations

import json
import signal
import socket
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Backend, Server, wait_for_model

pytestmark = pytest.mark.integration

EXIT_MARGIN = 15.0  # generous: the process exits well within grace + uvicorn's 5 s on an idle machine


def start(letta_backend: Backend, server_factory: Callable[..., Server], grace: float) -> tuple[Server, object]:
    server = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_SHUTDOWN_GRACE": str(grace)})
    agent = letta_backend.create_agent("shutdown")
    wait_for_model(server.url, agent.name)
    return server, agent


def stream_through_sigterm(server: Server, model: str, text: str) -> tuple[list, float]:
    """Stream an answer, send SIGTERM once its first content arrived; the payloads and the seconds after SIGTERM."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": text}]}
    payloads: list = []
    signalled = 0.0
    with httpx.stream("POST", f"{server.v1}/chat/completions", json=body, timeout=60,
                      headers={"X-Session-Id": f"shutdown-{uuid.uuid4().hex}"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            payload = line[6:]
            payloads.append(payload if payload == "[DONE]" else json.loads(payload))
            if not signalled and content(payloads):
                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
    return payloads, time.monotonic() - signalled


def content(payloads: list) -> str:
    return "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads
                   if p != "[DONE]" and p.get("choices"))


def assert_exits(server: Server) -> None:
    try:
        server.process.wait(EXIT_MARGIN)
    except Exception as exc:
        raise AssertionError(f"the server did not exit after SIGTERM:\n{server.log_tail()}") from exc


def test_a_stream_still_open_after_the_grace_ends_with_an_error_event_and_its_run_is_cancelled(
    letta_backend: Backend, server_factory: Callable[..., Server]
) -> None:
    server, agent = start(letta_backend, server_factory, grace=2)
    payloads, after = stream_through_sigterm(server, agent.name, "DRIP:300:" + "z" * 100)  # about 30 s of answer
    assert payloads[-1] == "[DONE]", payloads[-3:]
    error = payloads[-2]["error"]
    assert (error["code"], error["type"]) == ("server_shutting_down", "server_error")
    assert 1.5 <= after < 2 + EXIT_MARGIN  # after the grace period, well before the answer's end
    assert_exits(server)
    deadline = time.monotonic() + 15
    while True:
        runs = letta_backend.client.runs.list(agent_id=agent.id, limit=10).items
        if runs and all(run.status == "cancelled" for run in runs):
            break
        assert time.monotonic() < deadline, [(run.id, run.status) for run in runs]
        time.sleep(0.5)


def test_a_stream_that_ends_within_the_grace_is_answered_in_full(
    letta_backend: Backend, server_factory: Callable[..., Server]
) -> None:
    server, agent = start(letta_backend, server_factory, grace=30)
    # about 10 s of answer: longer than the 5 s uvicorn gave open connections before
    payloads, after = stream_through_sigterm(server, agent.name, "DRIP:300:" + "y" * 24)
    assert payloads[-1] == "[DONE]" and not any("error" in p for p in payloads[:-1])
    assert content(payloads) == "You said: " + "y" * 24
    assert after > 5
    assert_exits(server)


def test_a_turn_arriving_during_the_drain_is_refused_with_503(
    letta_backend: Backend, server_factory: Callable[..., Server]
) -> None:
    server, agent = start(letta_backend, server_factory, grace=5)
    raw = json.dumps({"model": agent.name, "messages": [{"role": "user", "content": "too late"}]}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        # the request head is in (the connection is busy with it), its body still coming when SIGTERM arrives
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw[:10])
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        sock.sendall(raw[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer[:300]
    assert b"retry-after: 5" in head.lower()
    assert json.loads(body)["error"]["code"] == "server_shutting_down"
    assert_exits(server)
