"""
Fault and bad-input suite: bounded in time, loopback only, against the real Letta server.

Each test says what it proves. The suite's figures (requests tried, faults injected, 5xx answers, duplicated or
interleaved turns) are printed at the end of the test run.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid

import httpx
import openai
import pytest
from letta_hayhooks.components.session_resolver import SUMMARY_PREFIX, session_digest

from tests.conftest import Backend, Server, wait_for_model

pytestmark = pytest.mark.integration

FIGURES = {"requests": 0, "malformed requests": 0, "5xx to malformed requests": 0, "hangs": 0,
           "faults injected": 0, "duplicated turns": 0, "interleaved turns": 0}


def tally(status: int | None, *, malformed: bool = False) -> None:
    FIGURES["requests"] += 1
    if malformed:
        FIGURES["malformed requests"] += 1
    if status is None:
        FIGURES["hangs"] += 1
    elif status >= 500 and malformed:
        FIGURES["5xx to malformed requests"] += 1


@pytest.fixture(scope="module")
def roomy(letta_backend: Backend, server_factory, agent) -> Server:
    """A server with a deep session queue and a short turn timeout."""
    proxy = server_factory(letta_backend.base_url, extra_env={
        "LETTA_HAYHOOKS_SESSION_QUEUE_DEPTH": "64", "LETTA_HAYHOOKS_TURN_TIMEOUT": "4",
        "LETTA_HAYHOOKS_MAX_INFLIGHT_PER_AGENT": "64"})
    wait_for_model(proxy.url, agent.name)
    return proxy


def conversation_of(backend: Backend, agent_id: str, key: str):
    scope = session_digest(agent_id, key)
    found = [c for c in backend.client.conversations.list(agent_id=agent_id, limit=1000)
             if (c.summary or "").startswith(f"{SUMMARY_PREFIX}{scope}")]
    assert len(found) == 1
    return found[0]


def history(backend: Backend, conversation_id: str) -> list:
    page = backend.client.conversations.messages.list(conversation_id, order="asc", limit=500)
    return [m for m in page.items if m.message_type in ("user_message", "assistant_message")]


def malformed_bodies(model: str) -> list[tuple[str, bytes]]:
    """More than 50 malformed requests, built from a table of bad fields and bad messages."""
    good_messages = [{"role": "user", "content": "hi"}]
    bad_fields = {
        "model": [None, 42, "", [], {"x": 1}],
        "messages": [None, "hi", 5, {}, [None], [1, 2], ["text"], [{"content": "no role"}]],
        "stream": ["yes", 3, {}],
        "n": [0, 2, "2"],
        "tools": ["x", {}, [1], [{"type": "retrieval"}], [{"type": "function"}],
                  [{"type": "function", "function": {}}]],
        "tool_choice": ["sometimes", 5, {"type": "function"}, "required"],
        "user": [5, "x" * 300, "a\x00b"],
        "stream_options": ["x", 3],
        "letta_tool_activity": ["loud", 1],
    }
    bad_messages = [
        {"role": "user"}, {"role": "user", "content": None}, {"role": "user", "content": 7},
        {"role": "user", "content": [{"type": "text"}]}, {"role": "user", "content": [{"text": "no type"}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": "data:text/plain;base64,AA"}]},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "tool", "content": "orphan"}, {"role": "function", "content": "legacy"},
        {"role": "assistant", "content": None, "tool_calls": "nope"},
        {"role": 3, "content": "x"},
    ]
    bodies: list[tuple[str, bytes]] = []
    for field, values in bad_fields.items():
        for value in values:
            body = {"model": model, "messages": good_messages, field: value}
            bodies.append((f"{field}={value!r}"[:60], json.dumps(body).encode()))
    for message in bad_messages:
        body = {"model": model, "messages": [message]}
        bodies.append((f"message={message!r}"[:60], json.dumps(body).encode()))
    raws = (b"", b"{", b"null", b"[]", b"\"text\"", b"\xff\xfe", b"{\"model\": \"" + model.encode() + b"\"}")
    bodies.extend((f"raw={raw[:20]!r}", raw) for raw in raws)
    return bodies


def test_malformed_requests_never_5xx_or_hang(server: Server, agent) -> None:
    """50+ malformed requests: every one gets a 4xx OpenAI error quickly; none is a 5xx or hangs."""
    bodies = malformed_bodies(agent.name)
    assert len(bodies) >= 50
    failures = []
    for label, raw in bodies:
        started = time.monotonic()
        try:
            response = httpx.post(f"{server.v1}/chat/completions", content=raw, timeout=15,
                                  headers={"content-type": "application/json"})
        except httpx.TimeoutException:
            tally(None, malformed=True)
            failures.append((label, "hang"))
            continue
        tally(response.status_code, malformed=True)
        ok = 400 <= response.status_code < 500 and set(response.json().get("error", {})) == {
            "message", "type", "param", "code"}
        if not ok or time.monotonic() - started > 10:
            failures.append((label, response.status_code, response.text[:200]))
    assert failures == []


def test_slow_letta_times_out_and_cancels_the_run(letta_backend: Backend, roomy: Server, agent) -> None:
    """A turn longer than LETTA_HAYHOOKS_TURN_TIMEOUT: 504 (or an error event + [DONE]) and the run is cancelled."""
    FIGURES["faults injected"] += 2
    sdk = openai.OpenAI(base_url=roomy.v1, api_key="unused", max_retries=0, timeout=60)
    key = f"slow-{uuid.uuid4().hex}"
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as timeout:
        sdk.chat.completions.create(model=agent.name, extra_headers={"X-Session-Id": key},
                                    messages=[{"role": "user", "content": "SLOW:8000:too slow"}])
    tally(timeout.value.status_code)
    assert timeout.value.status_code == 504 and time.monotonic() - started < 8
    with httpx.stream("POST", f"{roomy.v1}/chat/completions", timeout=60, headers={"X-Session-Id": key + "-s"},
                      json={"model": agent.name, "stream": True,
                            "messages": [{"role": "user", "content": "SLOW:8000:too slow"}]}) as response:
        payloads = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    tally(response.status_code)
    assert payloads[-1] == "[DONE]" and json.loads(payloads[-2])["error"]["code"] == "letta_timeout"
    conversation = conversation_of(letta_backend, agent.id, key)
    deadline = time.monotonic() + 15
    while True:
        runs = letta_backend.client.runs.list(conversation_id=conversation.id, limit=10).items
        if runs and all(r.status == "cancelled" for r in runs):
            break
        assert time.monotonic() < deadline, [(r.id, r.status) for r in runs]
        time.sleep(0.5)


def test_client_disconnect_cancels_the_run(letta_backend: Backend, server: Server, agent) -> None:
    """A client that goes away mid-stream: the Letta run is cancelled (visible in Letta's runs)."""
    FIGURES["faults injected"] += 1
    key = f"gone-{uuid.uuid4().hex}"
    with httpx.stream("POST", f"{server.v1}/chat/completions", timeout=60, headers={"X-Session-Id": key},
                      json={"model": agent.name, "stream": True,
                            "messages": [{"role": "user", "content": "SLOW:6000:nobody listens"}]}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # the role chunk arrived: the run started; now hang up
    tally(response.status_code)
    conversation = conversation_of(letta_backend, agent.id, key)
    deadline = time.monotonic() + 15
    while True:
        runs = letta_backend.client.runs.list(conversation_id=conversation.id, limit=10).items
        if runs and runs[0].status == "cancelled":
            break
        assert time.monotonic() < deadline, [(r.id, r.status) for r in runs]
        time.sleep(0.5)


def test_concurrent_requests_on_one_session_are_serialised(letta_backend: Backend, roomy: Server, agent) -> None:
    """50 concurrent requests on one session: 50 turns, one after another, none interleaved or duplicated."""
    key = f"serial-{uuid.uuid4().hex}"
    texts = [f"turn-{i:02d}" for i in range(50)]

    def send(text: str) -> str:
        response = httpx.post(f"{roomy.v1}/chat/completions", timeout=120, headers={"X-Session-Id": key},
                              json={"model": agent.name, "messages": [{"role": "user", "content": text}]})
        tally(response.status_code)
        assert response.status_code == 200, response.text[:300]
        return response.json()["choices"][0]["message"]["content"]

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(send, texts))
    assert answers == [f"You said: {t}" for t in texts]
    turns = history(letta_backend, conversation_of(letta_backend, agent.id, key).id)
    users = [m.content for m in turns if m.message_type == "user_message"]
    FIGURES["duplicated turns"] += len(users) - len(set(users))
    pairs = list(zip(turns[::2], turns[1::2], strict=True))
    interleaved = [p for p in pairs if p[1].content != f"You said: {p[0].content}"]
    FIGURES["interleaved turns"] += len(interleaved)
    assert sorted(users) == texts
    assert interleaved == []


def test_concurrent_sessions_have_no_cross_talk(letta_backend: Backend, server: Server, agent) -> None:
    """50 concurrent sessions on one agent: each answer and each conversation holds only its own turn."""
    keys = [f"many-{i}-{uuid.uuid4().hex}" for i in range(50)]

    def send(key: str) -> str:
        response = httpx.post(f"{server.v1}/chat/completions", timeout=180, headers={"X-Session-Id": key},
                              json={"model": agent.name, "messages": [{"role": "user", "content": f"I am {key}"}]})
        tally(response.status_code)
        assert response.status_code == 200, response.text[:300]
        return response.json()["choices"][0]["message"]["content"]

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(send, keys))
    assert answers == [f"You said: I am {key}" for key in keys]
    for key in keys[:10]:
        turns = history(letta_backend, conversation_of(letta_backend, agent.id, key).id)
        assert [m.content for m in turns] == [f"I am {key}", f"You said: I am {key}"]


def test_one_megabyte_system_prompt(letta_backend: Backend, server: Server, server_factory) -> None:
    """A 1 MB system prompt: 413 with the default limit, an answer when the limit allows it."""
    big_agent = letta_backend.create_agent("megabyte", context_window_limit=2_000_000)
    prompt = ("All work and no play. " * 50_000)[:1_048_576] + "MB-END"
    body = {"model": big_agent.name, "messages": [{"role": "system", "content": prompt},
                                                  {"role": "user", "content": "SYSTEM?MB-END"}]}
    wait_for_model(server.url, big_agent.name)
    refused = httpx.post(f"{server.v1}/chat/completions", json=body, timeout=60)
    tally(refused.status_code)
    assert refused.status_code == 413
    allowed = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_MAX_SYSTEM_PROMPT_BYTES": "2000000"})
    wait_for_model(allowed.url, big_agent.name)
    answer = httpx.post(f"{allowed.v1}/chat/completions", json=body, timeout=120,
                        headers={"X-Session-Id": uuid.uuid4().hex})
    tally(answer.status_code)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["choices"][0]["message"]["content"] == "SYSTEM_HAS:MB-END=yes"


def test_letta_killed_mid_stream_then_restarted(letta_backend: Backend, server: Server, agent) -> None:
    """Letta dies mid-stream: error event + [DONE] within seconds; after a restart the same proxy answers again."""
    FIGURES["faults injected"] += 1
    body = {"model": agent.name, "stream": True,
            "messages": [{"role": "user", "content": "DRIP:150:" + "streaming until the server dies " * 5}]}
    payloads: list[str] = []
    started = time.monotonic()
    try:
        with httpx.stream("POST", f"{server.v1}/chat/completions", json=body, timeout=60,
                          headers={"X-Session-Id": f"kill-{uuid.uuid4().hex}"}) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    payloads.append(line[6:])
                    if len(payloads) == 3:
                        letta_backend.letta.letta_process.kill()
        tally(response.status_code)
        assert time.monotonic() - started < 20
        assert payloads[-1] == "[DONE]"
        assert set(json.loads(payloads[-2])) == {"error"}
    finally:
        letta_backend.letta.restart_letta(timeout=240)
    sdk = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)
    reply = sdk.chat.completions.create(model=agent.name, messages=[{"role": "user", "content": "alive again"}],
                                        extra_headers={"X-Session-Id": f"after-{uuid.uuid4().hex}"})
    tally(200)
    assert reply.choices[0].message.content == "You said: alive again"
