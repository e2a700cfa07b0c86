"""LettaChatGenerator on recorded Letta event sequences, replayed through the same client call it makes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from haystack import Pipeline
from haystack.dataclasses import StreamingChunk
from haystack.utils import Secret

from letta_hayhooks.components import LettaChatGenerator
from letta_hayhooks.errors import OpenAIError
from letta_hayhooks.letta_access.clients import LettaConnection
from tests.conftest import load_events


class _Response:
    """The raw SSE response of a recorded event sequence, line by line as Letta sends it."""

    def __init__(self, events: list[dict]) -> None:
        self.events = events
        self.read_to_end = False
        self.closed = False

    async def aiter_lines(self):
        for recorded in self.events:
            await asyncio.sleep(0)
            payload = recorded
            if "_raises" in recorded:  # recorded where letta-client raised: Letta's `event: error` frame
                yield "event: error"
                payload = recorded["body"]
            yield "data: " + json.dumps(payload)
            yield ""
        yield "data: [DONE]"
        yield ""
        self.read_to_end = True

    async def aclose(self) -> None:
        self.closed = True


class FakeClient:
    """Records the message request (path and body) and answers with a recorded stream."""

    def __init__(self, events: list[dict]) -> None:
        self.events = events
        self.requests: list[dict] = []
        self.responses: list[_Response] = []
        self.deleted: list[str] = []
        self.cancelled: list[str] = []
        self.conversations = self

    async def post(self, path: str, *, cast_to: Any, body: dict, stream: bool) -> _Response:
        assert cast_to is httpx.Response and stream
        conversation_id = path.removeprefix("/v1/conversations/").removesuffix("/messages")
        self.requests.append({"conversation_id": conversation_id, **body})
        self.responses.append(_Response(self.events))
        return self.responses[-1]

    async def delete(self, conversation_id: str) -> None:
        self.deleted.append(conversation_id)

    async def cancel(self, conversation_id: str, **_: Any) -> dict:
        self.cancelled.append(conversation_id)
        return {}

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    def install(name: str) -> FakeClient:
        client = FakeClient(load_events(name))
        # every client a component builds (its own, or a blocking run's private one) is the fake
        monkeypatch.setattr(LettaConnection, "async_client", lambda _connection: client)
        return client

    return install


def make() -> LettaChatGenerator:
    return LettaChatGenerator(base_url="http://letta", api_key=Secret.from_token("k"))


class TestInitAndSerialization:
    def test_to_dict_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("LETTA_API_KEY", raising=False)
        assert LettaChatGenerator().to_dict() == {
            "type": "letta_hayhooks.components.letta_chat_generator.LettaChatGenerator",
            "init_parameters": {
                "base_url": "http://localhost:8283",
                "api_key": {"type": "env_var", "env_vars": ["LETTA_API_KEY"], "strict": False},
                "project": None,
                "timeout": 300.0,
                "connect_timeout": 5.0,
                "stream_tokens": True,
                "include_pings": True,
            },
        }

    def test_pipeline_round_trip(self) -> None:
        pipeline = Pipeline()
        pipeline.add_component("generator", LettaChatGenerator(base_url="http://letta:8283", stream_tokens=False))
        restored = Pipeline.loads(pipeline.dumps()).get_component("generator")
        assert restored.base_url == "http://letta:8283" and restored.stream_tokens is False

    def test_token_secret_refuses_to_serialize(self) -> None:
        with pytest.raises(ValueError, match="Cannot serialize token-based secret"):
            make().to_dict()


class TestRun:
    async def test_stream_emits_chunks_and_returns_the_reply(self, fake) -> None:
        client = fake("reasoning_tokens")
        chunks: list[StreamingChunk] = []

        async def collect(chunk: StreamingChunk) -> None:
            chunks.append(chunk)

        out = await make().run_async(agent_id="agent-1", messages=[{"role": "user", "content": "x", "otid": "o"}],
                                     conversation_id="conv-1", stream=True, streaming_callback=collect)
        reply = out["replies"][0]
        assert reply.text == "You said: ponder this"
        assert reply.reasoning.reasoning_text == "Thinking about: ponder this"
        assert reply.meta["finish_reason"] == "stop" and reply.meta["usage"]["total_tokens"] == 730
        assert reply.meta["conversation_id"] == "conv-1"
        assert "".join(c.content for c in chunks) == "You said: ponder this"
        assert chunks[-1].finish_reason == "stop"
        request = client.requests[0]
        await asyncio.sleep(0.01)
        assert client.responses[0].read_to_end  # read after [DONE] in the background: the connection is reused
        assert request["stream_tokens"] is True and request["include_pings"] is True
        assert request["messages"] == [{"role": "user", "content": "x", "otid": "o"}]

    async def test_the_answer_ends_at_the_usage_after_the_stop_reason_not_at_done(self, fake, monkeypatch) -> None:
        # Letta writes stop_reason, usage_statistics, [DONE]; the turn is answered without waiting for [DONE]
        client = fake("text_tokens")
        done_may_come = asyncio.Event()
        recorded = _Response.aiter_lines

        async def slow_done(self):
            async for line in recorded(self):
                if line == "data: [DONE]":
                    await done_may_come.wait()
                yield line

        monkeypatch.setattr(_Response, "aiter_lines", slow_done)
        out = await asyncio.wait_for(make().run_async(agent_id="a", messages=[], conversation_id="c", stream=True), 2)
        assert out["replies"][0].meta["finish_reason"] == "stop" and out["replies"][0].meta["usage"]
        assert not client.responses[0].read_to_end
        done_may_come.set()
        await asyncio.sleep(0.01)
        assert client.responses[0].read_to_end  # [DONE] and the rest are still read, in the background

    async def test_a_usage_before_any_stop_reason_does_not_end_the_answer(self, fake) -> None:
        events = [e for e in load_events("text_tokens") if e.get("message_type") != "usage_statistics"]
        stop = next(i for i, e in enumerate(events) if e.get("message_type") == "stop_reason")
        usage = {"message_type": "usage_statistics", "completion_tokens": 1, "prompt_tokens": 1, "total_tokens": 2}
        client = fake("text_tokens")
        client.events = [usage, *events[:stop], events[stop], usage]
        out = await make().run_async(agent_id="a", messages=[], conversation_id="c", stream=True)
        assert out["replies"][0].text == "".join(
            e.get("content", "") for e in events[:stop] if e.get("message_type") == "assistant_message")
        assert out["replies"][0].text

    async def test_non_stream_asks_for_steps(self, fake) -> None:
        client = fake("text_steps")
        out = await make().run_async(agent_id="agent-1", messages=[{"role": "user", "content": "hi steps"}])
        assert out["replies"][0].text == "You said: hi steps"
        assert client.requests[0]["stream_tokens"] is False
        assert client.requests[0]["agent_id"] == "agent-1"  # the default thread is addressed through the agent

    async def test_legacy_agent_tokens_are_decoded(self, fake) -> None:
        fake("legacy_escaped_tokens")
        out = await make().run_async(agent_id="a", messages=[], agent_type="memgpt_v2_agent", stream=True)
        assert out["replies"][0].text.endswith('café 😀 "quoted"')
        assert 'print("a\\nb")  # C:\\new\\table' in out["replies"][0].text

    async def test_client_tools_and_override_are_forwarded(self, fake) -> None:
        client = fake("client_tool_tokens")
        tools = [{"name": "get_weather", "description": "", "parameters": {"type": "object", "properties": {}}}]
        out = await make().run_async(agent_id="a", messages=[], conversation_id="conv-9", client_tools=tools,
                                     override_system="SYSTEM", stream=True)
        assert out["replies"][0].tool_calls[0].tool_name == "get_weather"
        assert out["replies"][0].meta["finish_reason"] == "tool_calls"
        assert client.requests[0]["client_tools"] == tools and client.requests[0]["override_system"] == "SYSTEM"
        assert client.requests[0]["conversation_id"] == "conv-9" and "agent_id" not in client.requests[0]

    async def test_llm_error_raises_an_openai_error(self, fake) -> None:
        fake("llm_error_tokens")
        with pytest.raises(OpenAIError) as failure:
            await make().run_async(agent_id="a", messages=[], stream=True)
        assert failure.value.status == 502 and failure.value.code == "llm_api_error"

    async def test_server_tool_waiting_for_approval_is_a_conflict(self, fake) -> None:
        fake("client_tool_tokens")
        with pytest.raises(OpenAIError) as failure:
            await make().run_async(agent_id="a", messages=[], stream=True)  # get_weather is not a client tool here
        assert failure.value.status == 409 and failure.value.code == "server_tool_approval_required"

    async def test_ephemeral_conversation_is_deleted(self, fake) -> None:
        client = fake("text_tokens")
        await make().run_async(agent_id="a", messages=[], conversation_id="conv-tmp", ephemeral=True)
        assert client.deleted == ["conv-tmp"]

    async def test_replay_answers_without_calling_letta(self, fake) -> None:
        client = fake("text_tokens")
        stored = [{"message_type": "assistant_message", "id": "m1", "content": "stored answer"}]
        out = await make().run_async(agent_id="a", messages=[], replay=stored)
        assert out["replies"][0].text == "stored answer" and out["replies"][0].meta["replayed"] is True
        assert client.requests == []

    async def test_cancellation_cancels_the_letta_run(self, fake, monkeypatch: pytest.MonkeyPatch) -> None:
        client = fake("text_tokens")

        async def never_ending(self):
            await asyncio.sleep(3600)
            yield ""

        monkeypatch.setattr(_Response, "aiter_lines", never_ending)
        task = asyncio.create_task(make().run_async(agent_id="a", messages=[], conversation_id="conv-5"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert client.cancelled == ["conv-5"]

    def test_sync_run_matches(self, fake) -> None:
        fake("text_tokens")
        seen: list[str] = []
        out = make().run(agent_id="a", messages=[], stream=True, streaming_callback=lambda c: seen.append(c.content))
        assert out["replies"][0].text == "You said: hello there" == "".join(seen)
