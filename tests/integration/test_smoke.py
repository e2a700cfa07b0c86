"""
A short end-to-end smoke through `letta-hayhooks serve` with the openai SDK: a chat turn, a stream, a Responses turn
that a second one continues. `scripts/check-latest` runs it (with the CLI's range test) on the newest dependencies.
"""

from __future__ import annotations

import openai
import pytest

from tests.conftest import Backend, Server, wait_for_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(letta_backend: Backend, server: Server) -> str:
    name = letta_backend.create_agent("smoke").name
    wait_for_model(server.url, name)
    return name


@pytest.fixture(scope="module")
def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)


def test_chat_turn(sdk: openai.OpenAI, model: str) -> None:
    reply = sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "smoke one"}])
    assert reply.choices[0].message.content == "You said: smoke one"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens > 0


def test_chat_stream(sdk: openai.OpenAI, model: str) -> None:
    chunks = list(sdk.chat.completions.create(model=model, stream=True, stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "smoke stream"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: smoke stream"
    assert chunks[-1].usage is not None


def test_responses_turn_and_its_continuation(sdk: openai.OpenAI, model: str) -> None:
    first = sdk.responses.create(model=model, input="smoke response")
    assert first.output_text == "You said: smoke response"
    second = sdk.responses.create(model=model, input="RECALL?smoke response", previous_response_id=first.id)
    assert second.output_text == "RECALL:smoke response=yes"
    with sdk.responses.stream(model=model, input="smoke response stream") as stream:
        final = stream.get_final_response()
    assert final.output_text == "You said: smoke response stream"
    assert sdk.responses.retrieve(first.id).id == first.id
