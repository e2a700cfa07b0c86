"""
The shutdown drain against a fake pipeline: new turns refused, running streams finished within the grace period,
the rest ended with a `server_shutting_down` error event and `[DONE]` and their runs closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from haystack.dataclasses import StreamingChunk

from letta_hayhooks.errors import OpenAIError
from tests.unit.test_chat_service import FakeHandle, FakePipeline, body, make_chat


def slow_chunks() -> list[StreamingChunk]:
    return [StreamingChunk(content="Hel"), StreamingChunk(content="lo"),
            StreamingChunk(content="", finish_reason="stop")]


async def read_while_draining(chat: Any, stream: Any) -> list[Any]:
    """Read a stream; the drain begins once its first content chunk has arrived."""
    payloads: list[Any] = []
    async for item in stream:
        raw = item.model_dump_json()
        payloads.append(raw if raw == "[DONE]" else json.loads(raw))
        if not chat.shared.drain.draining and any(
            p != "[DONE]" and p.get("choices") and p["choices"][0]["delta"].get("content") for p in payloads
        ):
            chat.shared.drain.begin()
    return payloads


async def test_a_stream_still_open_after_the_grace_ends_with_an_error_event_and_done() -> None:
    handle = FakeHandle(slow_chunks(), stall=30.0)
    chat = make_chat(FakePipeline(handle), shutdown_grace=0.2)
    stream = await chat.answer("writer", body(True)["messages"], body(True), {})
    payloads = await asyncio.wait_for(read_while_draining(chat, stream), 5)
    assert payloads[-1] == "[DONE]"
    error = payloads[-2]["error"]
    assert (error["code"], error["type"]) == ("server_shutting_down", "server_error")
    assert handle.closed  # the pipeline is closed: the generator cancels the Letta run
    assert chat.shared.load.inflight == 0 and not chat.shared.drain.streams
    await asyncio.wait_for(chat.shared.drain.finish(), 1)


async def test_a_stream_that_ends_within_the_grace_is_left_alone() -> None:
    handle = FakeHandle(slow_chunks(), stall=0.1)
    chat = make_chat(FakePipeline(handle), shutdown_grace=10)
    stream = await chat.answer("writer", body(True)["messages"], body(True), {})
    payloads = await asyncio.wait_for(read_while_draining(chat, stream), 5)
    assert payloads[-1] == "[DONE]" and not any("error" in p for p in payloads[:-1])
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1] if p["choices"])
    assert text == "Hello"
    await asyncio.wait_for(chat.shared.drain.finish(), 1)  # nothing left open: no wait for the grace


async def test_a_client_gone_during_the_drain_is_still_a_cancel() -> None:
    handle = FakeHandle(slow_chunks(), stall=30.0)
    chat = make_chat(FakePipeline(handle), shutdown_grace=0.2)
    stream = await chat.answer("writer", body(True)["messages"], body(True), {})
    reader = asyncio.create_task(read_while_draining(chat, stream))
    await asyncio.sleep(0.1)
    reader.cancel()  # the client disconnects while the stream waits
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert handle.closed and chat.shared.load.inflight == 0 and not chat.shared.drain.streams


async def test_new_turns_are_refused_once_draining() -> None:
    chat = make_chat(FakePipeline(FakeHandle(slow_chunks())))
    chat.shared.drain.begin()
    with pytest.raises(OpenAIError) as error:
        await chat.answer("writer", body(True)["messages"], body(True), {})
    assert (error.value.status, error.value.code) == (503, "server_shutting_down")
    assert error.value.headers["Retry-After"].isdigit() and chat.shared.load.inflight == 0
    with pytest.raises(OpenAIError) as error:  # a non-stream turn too
        await chat.answer("writer", body(False)["messages"], body(False), {})
    assert error.value.code == "server_shutting_down"
    # the routes answer it as every OpenAIError: its status, body and Retry-After (tests/unit/test_app.py)
