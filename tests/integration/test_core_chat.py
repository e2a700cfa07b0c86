"""
The core chat path under plain `hayhooks run`, driven with the openai SDK against the real Letta server.

Proves: every agent is a model; non-stream and stream answers (usage, finish_reason, reasoning); agents created
later appear without a restart; bad input gets 4xx, never 500; Letta down at start-up or mid-request is survived.
"""

from __future__ import annotations

import base64
import time

import httpx
import openai
import pytest

from tests.conftest import Backend, Server, wait_for_model
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def agents(letta_backend: Backend) -> dict:
    return {
        "plain": letta_backend.create_agent("core-plain"),
        "other": letta_backend.create_agent("core-other"),
    }


@pytest.fixture(scope="module")
def hayhooks_server(letta_backend: Backend, server_factory, agents) -> Server:
    return server_factory(letta_backend.base_url, command="hayhooks", ready_path="/status")


@pytest.fixture(scope="module")
def sdk(hayhooks_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=hayhooks_server.v1, api_key="unused", max_retries=0, timeout=60)


def test_models_lists_every_agent_by_name(sdk: openai.OpenAI, agents: dict, letta_backend: Backend) -> None:
    ids = {model.id for model in sdk.models.list()}
    expected = {agent.name for agent in letta_backend.client.agents.list(limit=1000)
                if not agent.name.endswith("sleeptime")}
    assert {agents["plain"].name, agents["other"].name} <= ids
    assert expected <= ids
    assert "letta_agents" not in ids  # the pipelines folder itself is not a model


def test_duplicate_names_are_advertised_by_id(letta_backend: Backend, sdk: openai.OpenAI,
                                             hayhooks_server: Server) -> None:
    first = letta_backend.create_agent(f"twin-{letta_backend.run_id}", unique=False)
    second = letta_backend.create_agent(f"twin-{letta_backend.run_id}", unique=False)
    wait_for_model(hayhooks_server.url, first.id)
    ids = {model.id for model in sdk.models.list()}
    assert first.id in ids
    assert second.id in ids
    assert first.name not in ids
    reply = sdk.chat.completions.create(model=second.id, messages=[{"role": "user", "content": "which twin"}])
    assert reply.choices[0].message.content == "You said: which twin"


def test_non_stream_reply_has_usage_and_stop(sdk: openai.OpenAI, agents: dict) -> None:
    reply = sdk.chat.completions.create(
        model=agents["plain"].name, messages=[{"role": "user", "content": "hello there"}]
    )
    assert reply.choices[0].message.content == "You said: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(reply.usage.prompt_tokens, int) and reply.usage.prompt_tokens > 0
    assert isinstance(reply.usage.completion_tokens, int) and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_stream_deltas_concatenate_to_the_non_stream_reply(sdk: openai.OpenAI, agents: dict) -> None:
    text = "THINK:stream me a reply"
    whole = sdk.chat.completions.create(model=agents["other"].name, messages=[{"role": "user", "content": text}])
    chunks = list(sdk.chat.completions.create(
        model=agents["plain"].name, messages=[{"role": "user", "content": text}], stream=True,
        stream_options={"include_usage": True},
    ))
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    reasoning = [getattr(c.choices[0].delta, "reasoning_content", None) for c in chunks if c.choices]
    reasoning = [r for r in reasoning if r]
    assert len(content) > 1  # token deltas, not one block
    assert "".join(content) == whole.choices[0].message.content == "You said: stream me a reply"
    assert "".join(reasoning) == "Thinking about: stream me a reply"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_agent_created_while_running_becomes_a_model(letta_backend: Backend, sdk: openai.OpenAI,
                                                     hayhooks_server: Server) -> None:
    late = letta_backend.create_agent("late-agent")
    started = time.monotonic()
    wait_for_model(hayhooks_server.url, late.name, timeout=10)
    assert time.monotonic() - started < 10  # refresh interval is 1 s in tests
    reply = sdk.chat.completions.create(model=late.name, messages=[{"role": "user", "content": "new here"}])
    assert reply.choices[0].message.content == "You said: new here"
    letta_backend.client.agents.delete(late.id)
    deadline = time.monotonic() + 10
    while late.name in {m.id for m in sdk.models.list()}:
        assert time.monotonic() < deadline, "deleted agent still listed"
        time.sleep(0.2)


def test_image_parts_reach_letta_as_image_content(sdk: openai.OpenAI, agents: dict,
                                                  letta_backend: Backend) -> None:
    pixel = base64.b64encode(bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")).decode()
    reply = sdk.chat.completions.create(model=agents["plain"].name, messages=[{"role": "user", "content": [
        {"type": "text", "text": "look at"},
        {"type": "text", "text": "this picture"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
    ]}])
    assert reply.choices[0].message.content == "You said: look at\nthis picture"
    sent = letta_backend.model_requests()[-1]["messages"][-1]
    assert isinstance(sent["content"], list)
    kinds = [part.get("type") for part in sent["content"]]
    assert "image_url" in kinds
    image = next(part for part in sent["content"] if part.get("type") == "image_url")
    assert pixel in image["image_url"]["url"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "no-such-agent", "messages": [{"role": "user", "content": "x"}]}, 404, "no-such-agent"),
        ({"model": "{agent}", "messages": []}, 400, "messages"),
        ({"model": "{agent}", "messages": [{"role": "system", "content": "only system"}]}, 400, "user message"),
        ({"model": "{agent}", "messages": [{"role": "user", "content": 42}]}, 400, "content"),
        ({"model": "{agent}", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}, 400, "audio"),
        ({"model": "{agent}", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
        ({"model": "{agent}", "n": 2, "messages": [{"role": "user", "content": "x"}]}, 400, "n=1"),
        ({"model": "{agent}", "messages": "not a list"}, 422, ""),
    ],
)
def test_bad_input_gets_a_clear_4xx(hayhooks_server: Server, agents: dict, body: dict, status: int,
                                    needle: str) -> None:
    if body["model"] == "{agent}":
        body = {**body, "model": agents["plain"].name}
    response = httpx.post(f"{hayhooks_server.v1}/chat/completions", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert needle in response.text
    assert agents["other"].name not in response.text  # a 404 never lists the agents


def test_letta_down_at_start_and_during_requests(letta_backend: Backend, server_factory) -> None:
    relay = TcpRelay(letta_backend.letta.letta_port)  # starts "down"
    try:
        hh = server_factory(relay.url, command="hayhooks", ready_path="/status")
        assert httpx.get(f"{hh.v1}/models", timeout=5).json()["data"] == []
        relay.up()
        agent = letta_backend.create_agent("relay-agent")
        wait_for_model(hh.url, agent.name, timeout=15)
        sdk = openai.OpenAI(base_url=hh.v1, api_key="unused", max_retries=0, timeout=30)
        ok = sdk.chat.completions.create(model=agent.name, messages=[{"role": "user", "content": "up"}])
        assert ok.choices[0].message.content == "You said: up"
        relay.down()
        with pytest.raises(openai.APIStatusError) as failure:
            sdk.chat.completions.create(model=agent.name, messages=[{"role": "user", "content": "down"}])
        assert failure.value.status_code in (502, 503)
        relay.up()
        again = sdk.chat.completions.create(model=agent.name, messages=[{"role": "user", "content": "back"}])
        assert again.choices[0].message.content == "You said: back"
    finally:
        relay.close()
