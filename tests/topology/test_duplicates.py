"""
Duplicates across replicas, with Redis: Letta's conversation lock (Redis) lets one of two concurrent sends of a
turn in, whichever Letta server they reach; the proxy's deterministic otids recognise the retry that follows.

Proves: the same first turn of a chat reaching both proxies at the same moment is one turn in Letta (the other
request gets a 409 `letta_conflict`, or the answer when it came second); the client's retry of the refused request
(as the OpenAI SDK retries a 409) gets the answer without a second turn; a later turn sent four times at once
through both proxies is stored once.
"""

from __future__ import annotations

import json
import threading
import uuid

import httpx
import pytest

from tests.topology.conftest import Stack
from tests.topology.test_across_replicas import session_conversations, user_messages

pytestmark = [pytest.mark.integration, pytest.mark.topology]

RETRY = {"x-stainless-retry-count": "1"}  # what the OpenAI SDKs send with an automatic retry


def streamed_text(response: httpx.Response) -> str:
    parts = []
    for line in response.text.splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            chunk = json.loads(line[5:])
            assert "error" not in chunk, chunk
            parts += [c["delta"].get("content") or "" for c in chunk["choices"]]
    return "".join(parts)


def at_once(requests: list[tuple[str, dict, dict]]) -> list[httpx.Response]:
    """Send (url, headers, body) requests at the same moment, one thread each."""
    barrier = threading.Barrier(len(requests))
    responses: list[httpx.Response | None] = [None] * len(requests)

    def send(index: int) -> None:
        url, headers, body = requests[index]
        barrier.wait()
        responses[index] = httpx.post(f"{url}/v1/chat/completions", headers=headers, json=body, timeout=60)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert all(r is not None for r in responses)
    return responses  # type: ignore[return-value]


@pytest.mark.parametrize("stream", [True, False])
def test_the_same_first_turn_at_both_proxies_is_one_turn(stack: Stack, agent, stream: bool) -> None:
    refused = 0
    for _ in range(3):
        key = f"first-{uuid.uuid4().hex}"
        body = {"model": agent.name, "messages": [{"role": "user", "content": "first!"}], "stream": stream}
        responses = at_once([(proxy.url, {"X-Session-Id": key}, body) for proxy in stack.proxies])
        statuses = sorted(r.status_code for r in responses)
        assert statuses in ([200, 200], [200, 409]), [r.text[:300] for r in responses]
        for response in responses:
            if response.status_code == 409:
                refused += 1
                assert response.json()["error"]["code"] == "letta_conflict"
                # the client retries (as the SDK does): the stored answer, no second turn
                retried = httpx.post(f"{stack.proxies[1].v1}/chat/completions", json=body, timeout=60,
                                     headers={"X-Session-Id": key, **RETRY})
                assert retried.status_code == 200, retried.text
                response = retried  # noqa: PLW2901 - the client's final answer
            text = streamed_text(response) if stream else response.json()["choices"][0]["message"]["content"]
            assert text == "You said: first!"
        (conversation,) = session_conversations(stack, agent.id, key)
        assert user_messages(stack, conversation.id, 1, ["first!"]) == ["first!"]
    # the lock was really in play: without Redis both requests would have been answered (and stored)
    assert refused >= 1


def test_a_turn_sent_four_times_at_once_is_stored_once(stack: Stack, agent) -> None:
    key = f"dup-{uuid.uuid4().hex}"
    first = {"model": agent.name, "messages": [{"role": "user", "content": "hello"}]}
    assert httpx.post(f"{stack.proxies[0].v1}/chat/completions", json=first, headers={"X-Session-Id": key},
                      timeout=60).status_code == 200
    body = {"model": agent.name, "stream": True, "messages": [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": "You said: hello"},
        {"role": "user", "content": "again"}]}
    responses = at_once([(proxy.url, {"X-Session-Id": key}, body) for proxy in stack.proxies * 2])
    answered = [r for r in responses if r.status_code == 200]
    assert answered, [r.text[:300] for r in responses]
    assert all(r.status_code in (200, 409) for r in responses), [r.text[:300] for r in responses]
    assert all(streamed_text(r) == "You said: again" for r in answered)
    (conversation,) = session_conversations(stack, agent.id, key)
    assert user_messages(stack, conversation.id, 0, ["hello", "again"]) == ["hello", "again"]
