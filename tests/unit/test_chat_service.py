"""
The chat orchestration (`AgentChat`) against a fake pipeline: streaming, timeouts, abandoned streams, idempotency.

No Letta: the fake pipeline plays the generator's chunks and reply, so these paths run in milliseconds.
"""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import pytest
from haystack.dataclasses import ChatMessage, StreamingChunk

from letta_hayhooks.chat.pipeline import AgentPipeline
from letta_hayhooks.chat.service import AgentChat, SharedState
from letta_hayhooks.components.prompt_overlay import CompiledPrompts
from letta_hayhooks.errors import OpenAIError
from letta_hayhooks.openai_wire import completion_from_reply
from letta_hayhooks.settings import Settings

REPLY = ChatMessage.from_assistant("Hello there", meta={"finish_reason": "stop",
                                                        "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                                                  "total_tokens": 5}})


def fresh_reply() -> ChatMessage:
    """A run's own reply, as the real pipeline makes one per run (the turn records its id and time on it)."""
    return ChatMessage.from_assistant(REPLY.text, meta=dict(REPLY.meta))


class FakeHandle:
    """What `Pipeline.stream` returns: an async iterator of chunks, `result` at the end, `aclose`."""

    def __init__(self, chunks: list[StreamingChunk], *, stall: float = 0.0, fail_first: Exception | None = None):
        self.chunks = chunks
        self.stall = stall
        self.fail_first = fail_first
        self.closed = False
        self.result: dict[str, Any] = {}

    def __aiter__(self):
        return self._run()

    async def _run(self):
        if self.fail_first is not None:
            raise self.fail_first
        for i, chunk in enumerate(self.chunks):
            if i and self.stall:
                await asyncio.sleep(self.stall)
            yield chunk
        self.result = {"generator": {"replies": [fresh_reply()]}}

    async def aclose(self) -> None:
        self.closed = True


class FakePipeline:
    def __init__(self, handle: FakeHandle | None = None, delay: float = 0.0) -> None:
        self.handle = handle
        self.delay = delay
        self.runs: list[dict] = []

    def stream(self, data: dict, **_: Any) -> FakeHandle:
        self.runs.append(data)
        assert self.handle is not None
        return self.handle

    async def run_async(self, data: dict, **_: Any) -> dict:
        self.runs.append(data)
        model, completion_id = data["adapter"]["model"], data["adapter"]["completion_id"]
        reply = fresh_reply()
        await asyncio.sleep(self.delay)
        return {"generator": {"replies": [reply]},
                "adapter": {"completion": completion_from_reply(reply, completion_id=completion_id, model=model)}}


def make_chat(pipeline: FakePipeline, **settings: Any) -> AgentChat:
    config = Settings(letta_base_url="http://127.0.0.1:9", **settings)
    return AgentChat(config, "agent-1", "writer", SharedState(config),
                     AgentPipeline(pipeline, CompiledPrompts()))  # type: ignore[arg-type]


def body(stream: bool, **extra: Any) -> dict:
    return {"model": "writer", "messages": [{"role": "user", "content": "hi"}], "stream": stream, **extra}


def chunks() -> list[StreamingChunk]:
    return [StreamingChunk(content="Hello"), StreamingChunk(content=" there"),
            StreamingChunk(content="", finish_reason="stop", meta={"usage": REPLY.meta["usage"]})]


async def collect(stream) -> list[Any]:
    return [json.loads(p) if p != "[DONE]" else p for p in [item.model_dump_json() async for item in stream]]


async def test_a_non_stream_answer_is_an_exact_completion_object() -> None:
    chat = make_chat(FakePipeline())
    completion = await chat.answer("writer", body(False)["messages"], body(False), {})
    assert completion["object"] == "chat.completion" and "delta" not in completion["choices"][0]
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Hello there"}
    assert chat.shared.load.inflight == 0


async def test_a_stream_sends_role_once_usage_and_done() -> None:
    handle = FakeHandle(chunks())
    chat = make_chat(FakePipeline(handle))
    request = body(True, stream_options={"include_usage": True})
    payloads = await collect(await chat.answer("writer", request["messages"], request, {}))
    assert payloads[-1] == "[DONE]"
    deltas = [p["choices"][0]["delta"] for p in payloads[:-1] if p["choices"]]
    assert [d.get("role") for d in deltas].count("assistant") == 1
    assert "".join(d.get("content", "") for d in deltas) == "Hello there"
    assert payloads[-2]["usage"]["total_tokens"] == 5 and payloads[-2]["choices"] == []
    assert chat.shared.load.inflight == 0


async def test_a_streams_end_is_marked_to_go_out_together() -> None:
    handle = FakeHandle(chunks())
    chat = make_chat(FakePipeline(handle))
    request = body(True, stream_options={"include_usage": True})
    items = [item async for item in await chat.answer("writer", request["messages"], request, {})]
    # content chunks go out as they come; the finish chunk and usage say more follows at once, up to [DONE]
    assert [item.more_follows for item in items] == [False, False, False, True, True, False]
    assert items[-1].model_dump_json() == "[DONE]"


async def test_a_stream_past_the_turn_timeout_ends_with_an_error_event_and_done() -> None:
    handle = FakeHandle([StreamingChunk(content="Hel"), StreamingChunk(content="lo")], stall=5.0)
    chat = make_chat(FakePipeline(handle), turn_timeout=0.2)
    payloads = await collect(await chat.answer("writer", body(True)["messages"], body(True), {}))
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["error"]["code"] == "letta_timeout"
    assert handle.closed and chat.shared.load.inflight == 0


async def test_an_error_before_the_first_chunk_is_an_http_error() -> None:
    handle = FakeHandle([], fail_first=OpenAIError(409, "busy", type="conflict_error", code="letta_conflict"))
    chat = make_chat(FakePipeline(handle))
    with pytest.raises(OpenAIError) as error:
        await chat.answer("writer", body(True)["messages"], body(True), {})
    assert error.value.status == 409 and handle.closed and chat.shared.load.inflight == 0


async def test_a_stream_never_read_frees_its_slot_and_closes_the_run() -> None:
    handle = FakeHandle(chunks())
    chat = make_chat(FakePipeline(handle))
    stream = await chat.answer("writer", body(True)["messages"], body(True), {"idempotency-key": "k1"})
    assert chat.shared.load.inflight == 1
    del stream
    gc.collect()
    await asyncio.sleep(0)  # the close runs as a task
    assert chat.shared.load.inflight == 0 and handle.closed
    # the abandoned key is released: a retry runs again instead of waiting forever
    again = await chat.answer("writer", body(False)["messages"], body(False), {"idempotency-key": "k1"})
    assert again["choices"][0]["message"]["content"] == "Hello there"


async def test_an_idempotency_key_answers_a_repeat_once_and_refuses_a_different_body() -> None:
    pipeline = FakePipeline()
    chat = make_chat(pipeline)
    first = await chat.answer("writer", body(False)["messages"], body(False), {"idempotency-key": "k2"})
    second = await chat.answer("writer", body(False)["messages"], body(False), {"idempotency-key": "k2"})
    assert len(pipeline.runs) == 1
    assert second["choices"][0]["message"] == first["choices"][0]["message"]
    other = {**body(False), "messages": [{"role": "user", "content": "something else"}]}
    with pytest.raises(OpenAIError) as error:
        await chat.answer("writer", other["messages"], other, {"idempotency-key": "k2"})
    assert (error.value.status, error.value.code) == (422, "idempotency_key_reused")
    assert len(pipeline.runs) == 1


async def test_concurrent_and_later_repeats_of_a_key_carry_the_first_completions_id_and_time() -> None:
    pipeline = FakePipeline(delay=0.05)
    chat = make_chat(pipeline)
    request = body(False)
    answers = await asyncio.gather(*(chat.answer("writer", request["messages"], request, {"idempotency-key": "k9"})
                                     for _ in range(10)))
    await asyncio.sleep(1.1)  # a replay a second later: another `created` if it were made anew
    answers.append(await chat.answer("writer", request["messages"], request, {"idempotency-key": "k9"}))
    assert len(pipeline.runs) == 1
    assert {(a["id"], a["created"]) for a in answers} == {(answers[0]["id"], answers[0]["created"])}


async def test_a_streamed_turns_repeats_carry_its_id_and_time() -> None:
    handle = FakeHandle(chunks(), stall=0.02)
    chat = make_chat(FakePipeline(handle))
    request = body(True)

    async def ids() -> set[tuple[str, int]]:
        stream = await chat.answer("writer", request["messages"], request, {"idempotency-key": "k10"})
        found = set()
        async for item in stream:
            payload = json.loads(item.model_dump_json()) if item.model_dump_json() != "[DONE]" else {}
            if "id" in payload:
                found.add((payload["id"], payload["created"]))
        return found

    first, *repeats = await asyncio.gather(*(ids() for _ in range(5)))
    await asyncio.sleep(1.1)
    repeats.append(await ids())
    assert len(first) == 1 and all(r == first for r in repeats)


async def test_start_turn_gives_the_reply_or_the_live_chunks() -> None:
    chat = make_chat(FakePipeline())
    turn = await chat.start_turn("writer", body(False)["messages"], body(False), {})
    assert turn.reply is not None and turn.reply.text == REPLY.text
    assert turn.chunks is None and chat.shared.load.inflight == 0
    handle = FakeHandle(chunks())
    chat = make_chat(FakePipeline(handle))
    turn = await chat.start_turn("writer", body(True)["messages"], body(True), {})
    seen = [chunk async for chunk in turn.stream()]
    assert [c.content for c in seen] == ["Hello", " there", ""] and seen[-1].finish_reason == "stop"
    assert chat.shared.load.inflight == 0 and not handle.closed  # ended normally: nothing to cancel


async def test_a_reader_that_stops_early_cancels_the_run_and_frees_its_slot() -> None:
    handle = FakeHandle(chunks(), stall=5.0)
    chat = make_chat(FakePipeline(handle))
    turn = await chat.start_turn("writer", body(True)["messages"], body(True), {"idempotency-key": "k3"})
    assert turn.chunks is not None
    first = await anext(turn.chunks)
    assert first.content == "Hello" and chat.shared.load.inflight == 1
    await turn.chunks.aclose()  # e.g. the Responses encoder's client went away between chunks
    assert handle.closed and chat.shared.load.inflight == 0
    again = await chat.answer("writer", body(False)["messages"], body(False), {"idempotency-key": "k3"})
    assert again["choices"][0]["message"]["content"] == "Hello there"  # the key was released, not kept failed


async def test_a_named_conversation_plans_its_own_lane_and_allows_tool_results_alone() -> None:
    chat = make_chat(FakePipeline())
    messages = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}]
    request = {"model": "writer", "messages": messages}
    turn = await chat.start_turn("writer", messages, request, {}, conversation_id="conv-1", require_user=False)
    assert turn.plan.conversation_id == "conv-1" and turn.plan.lane == "conversation-conv-1"
    assert not turn.plan.transcript_chat
    with pytest.raises(OpenAIError):  # a chat request still needs a user message
        await chat.start_turn("writer", messages, request, {})
