"""
The request path: from an OpenAI chat-completion request to the agent pipeline and back.

`AgentChat` builds one Haystack pipeline per agent (router -> session -> overlay -> tool sync -> generator ->
adapter) and answers requests for it: validation, session key, idempotency, load control, turn timeout, and the
exact OpenAI response (a `ChatCompletion`, or an SSE stream of `WireChunk`s ending with `[DONE]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from fastapi import HTTPException
from fastapi_openai_compat import ChatCompletion
from hayhooks import log
from hayhooks.events import create_status_event
from haystack import Pipeline
from haystack.dataclasses import ChatMessage, ReasoningContent, StreamingChunk, ToolCallDelta

from letta_hayhooks.chat.debug_trace import DebugTrace
from letta_hayhooks.chat.idempotency import IdempotencyStore
from letta_hayhooks.chat.load_control import LoadController, Ticket
from letta_hayhooks.components import (
    AgentRouter,
    LettaChatGenerator,
    PromptOverlay,
    SessionResolver,
    StreamAdapter,
    ToolSync,
)
from letta_hayhooks.components.session_resolver import check_session_key, session_digest
from letta_hayhooks.components.stream_adapter import OpenAIChunkEncoder
from letta_hayhooks.errors import OpenAIError, from_letta_exception, upstream_timeout
from letta_hayhooks.openai_request import ChatRequest, ReadOnlyList, validate_chat_request
from letta_hayhooks.openai_wire import DONE, WireChunk
from letta_hayhooks.settings import Settings


def build_agent_pipeline(settings: Settings) -> Pipeline:
    """One agent's pipeline: router -> session -> overlay -> tool_sync -> generator -> adapter."""
    api = {
        "base_url": settings.letta_base_url,
        "project": settings.letta_project,
        "timeout": settings.letta_timeout,
        "connect_timeout": settings.letta_connect_timeout,
    }
    pipeline = Pipeline()
    pipeline.add_component(
        "router",
        AgentRouter(
            **api,
            tags=settings.agent_tags,
            name_regex=settings.agent_name_regex,
            hide_sleeptime=settings.hide_sleeptime_agents,
            refresh_interval=settings.refresh_interval,
        ),
    )
    pipeline.add_component("session", SessionResolver(**api, policy=settings.session_policy.value))
    pipeline.add_component(
        "overlay",
        PromptOverlay(**api, enabled=settings.overlay_enabled, prompt_cache_seconds=settings.prompt_cache_seconds),
    )
    pipeline.add_component("tool_sync", ToolSync(**api))
    pipeline.add_component("generator", LettaChatGenerator(**api, stream_tokens=settings.stream_tokens))
    pipeline.add_component("adapter", StreamAdapter(think_tags=settings.think_tags))
    for receiver in ("session", "overlay", "tool_sync", "generator"):
        pipeline.connect("router.agent_id", f"{receiver}.agent_id")
    pipeline.connect("router.agent_type", "generator.agent_type")
    for receiver in ("overlay", "tool_sync", "generator"):
        pipeline.connect("session.conversation_id", f"{receiver}.conversation_id")
        pipeline.connect("session.ephemeral", f"{receiver}.ephemeral")
    pipeline.connect("session.session_scope", "overlay.session_scope")
    pipeline.connect("session.messages", "tool_sync.messages")
    pipeline.connect("session.replay", "generator.replay")
    pipeline.connect("overlay.override_system", "generator.override_system")
    pipeline.connect("tool_sync.client_tools", "generator.client_tools")
    pipeline.connect("tool_sync.messages", "generator.messages")
    pipeline.connect("generator.replies", "adapter.replies")
    return pipeline


def _header(headers: Mapping[str, str] | None, *names: str) -> str | None:
    if headers is None:
        return None
    for name in names:
        value = headers.get(name)
        if value:
            return value
    return None


def _unwrap(exc: BaseException) -> OpenAIError:
    """The OpenAI error behind an exception raised inside the pipeline."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, OpenAIError):
            return current
        if current.__cause__ is None:
            break
        current = current.__cause__  # PipelineRuntimeError and friends wrap the component's own error
        seen += 1
    mapped = from_letta_exception(current or exc)
    if mapped.status == 500:
        log.opt(exception=exc).error("Unexpected error in the agent pipeline")
    return mapped


def http_error(error: OpenAIError) -> HTTPException:
    """An HTTPException carrying the OpenAI error body (the app unwraps `detail` to the top level)."""
    return HTTPException(status_code=error.status, detail=error.body(), headers=error.headers or None)


class AgentChat:
    """Answers chat completions for one Letta agent with its own pipeline."""

    def __init__(self, settings: Settings, agent_id: str, model_id: str, shared: SharedState) -> None:
        self.settings = settings
        self.agent_id = agent_id
        self.model_id = model_id
        self.shared = shared
        self.pipeline = build_agent_pipeline(settings)

    async def complete(
        self, model: str, messages: Any, body: dict[str, Any], headers: Mapping[str, str] | None
    ) -> ChatCompletion | AsyncGenerator:
        """Answer one chat-completion request; errors become `HTTPException`s with OpenAI bodies."""
        try:
            return await self._complete(model, messages, body, headers)
        except OpenAIError as error:
            raise http_error(error) from None

    async def _complete(
        self, model: str, messages: Any, body: dict[str, Any], headers: Mapping[str, str] | None
    ) -> ChatCompletion | AsyncGenerator:
        settings = self.settings
        request = validate_chat_request(model, messages, body, max_system_bytes=settings.max_system_prompt_bytes)
        owui_chat = _header(headers, "x-openwebui-chat-id")
        session_key = _header(headers, "x-session-id", "x-letta-chat-key")
        if session_key is None and request.stream and owui_chat:
            session_key = owui_chat
        if session_key is None:
            session_key = request.user
        session_key = check_session_key(session_key)
        # Open WebUI's non-streaming background tasks (titles, tags) carry the chat id but must not write into it
        ephemeral = session_key is None and owui_chat is not None and not request.stream
        idempotency_key = _header(headers, "idempotency-key", "x-idempotency-key")
        scope = session_digest(self.agent_id, session_key if session_key is not None else "\x00default")
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        trace = DebugTrace.start(settings, completion_id)
        data = self._pipeline_inputs(request, model, completion_id, session_key, idempotency_key, trace)
        if ephemeral:
            data["session"]["force_ephemeral"] = True

        idem_key = f"{self.agent_id}\x00{scope}\x00{idempotency_key}" if idempotency_key else None
        if idem_key is not None:
            owner, future = self.shared.idempotency.claim(idem_key)
            if not owner:
                reply = await asyncio.shield(future)
                log.info("Idempotency-Key repeat: answering with the first request's outcome")
                return self._from_reply(reply, request, model, completion_id)

        # throwaway conversations share nothing, so they need no place in a session's queue
        throwaway = ephemeral or (session_key is None and settings.session_policy.value == "ephemeral")
        lane = f"ephemeral-{completion_id}" if throwaway else scope
        try:
            if request.stream:
                return await self._start_stream(request, model, completion_id, data, lane, idem_key, trace)
            reply, completion = await self._run(data, lane)
        except OpenAIError as error:
            if idem_key is not None:
                self.shared.idempotency.fail(idem_key, error)
            trace.error(error)
            raise
        except BaseException:
            # cancelled (client gone) or a bug: a retry with the same key must run again, not wait forever
            if idem_key is not None:
                self.shared.idempotency.fail(idem_key, OpenAIError(499, "The request was abandoned.",
                                                                    type="server_error", code="cancelled"))
            raise
        if idem_key is not None:
            self.shared.idempotency.resolve(idem_key, reply)
        trace.completion(completion)
        return ChatCompletion(**completion)

    def _pipeline_inputs(
        self,
        request: ChatRequest,
        model: str,
        completion_id: str,
        session_key: str | None,
        idempotency_key: str | None,
        trace: DebugTrace,
    ) -> dict[str, Any]:
        return {
            "router": {"model": self.agent_id},
            "session": {
                "messages": ReadOnlyList(request.messages),
                "new_positions": request.new_turn.user_positions,
                "session_key": session_key,
                "idempotency_key": idempotency_key,
            },
            "overlay": {"system_prompt": request.system_prompt},
            "tool_sync": {
                "tools": ReadOnlyList(request.tools),
                "tool_choice": request.tool_choice,
                "tool_results": ReadOnlyList(request.new_turn.tool_results),
            },
            "generator": {"stream": request.stream, "event_observer": trace.letta_event if trace.enabled else None},
            "adapter": {"model": model, "completion_id": completion_id},
        }

    async def _run(self, data: dict[str, Any], lane: str) -> tuple[ChatMessage, dict[str, Any]]:
        async with self.shared.load.turn(self.agent_id, lane):
            try:
                async with asyncio.timeout(self.settings.turn_timeout):
                    result = await self.pipeline.run_async(data, include_outputs_from={"generator"})
            except TimeoutError:
                raise upstream_timeout() from None
            except OpenAIError:
                raise
            except Exception as exc:  # noqa: BLE001 - every pipeline failure becomes an OpenAI error
                raise _unwrap(exc) from None
        reply = result["generator"]["replies"][0]
        self._after_turn(reply)
        return reply, result["adapter"]["completion"]

    def _after_turn(self, reply: ChatMessage) -> None:
        if (reply.meta or {}).get("server_tool_calls"):
            # the agent ran its own tools (memory edits): the next prompt overlay must see the new memory
            self.pipeline.get_component("overlay").invalidate(self.agent_id)

    def _from_reply(self, reply: ChatMessage, request: ChatRequest, model: str, completion_id: str) -> Any:
        adapter: StreamAdapter = self.pipeline.get_component("adapter")
        completion = adapter.run(replies=[reply], model=model, completion_id=completion_id)["completion"]
        if not request.stream:
            return ChatCompletion(**completion)
        return self._replay_stream(reply, request, model, completion_id)

    def _show_activity(self, activity: dict[str, Any], mode: str, encoder: OpenAIChunkEncoder) -> list[Any]:
        """The agent's own tool activity, shown the way the request or the settings ask."""
        if mode == "status":
            return [_status_event(activity)]
        if mode == "reasoning":
            line = ReasoningContent(reasoning_text=_activity_line(activity))
            chunk = StreamingChunk(content="", index=0, reasoning=line)
            return [WireChunk.of(payload) for payload in encoder.encode(chunk)]
        if mode == "delta":
            return [WireChunk.of(encoder.extra_delta({"letta_tool_activity": activity}))]
        return []

    async def _replay_stream(
        self, reply: ChatMessage, request: ChatRequest, model: str, completion_id: str
    ) -> AsyncGenerator:
        encoder = OpenAIChunkEncoder(completion_id, model, think_tags=self.settings.think_tags)
        chunks: list[StreamingChunk] = []
        if reply.reasoning:
            chunks.append(StreamingChunk(content="", index=0,
                                         reasoning=ReasoningContent(reasoning_text=reply.reasoning.reasoning_text)))
        if reply.text:
            chunks.append(StreamingChunk(content=reply.text, index=0))
        for i, call in enumerate(reply.tool_calls):
            arguments = (call.extra or {}).get("arguments", "")
            chunks.append(StreamingChunk(content="", index=i, tool_calls=[
                ToolCallDelta(index=i, id=call.id, tool_name=call.tool_name, arguments=arguments)]))
        chunks.append(StreamingChunk(content="", finish_reason=(reply.meta or {}).get("finish_reason", "stop")))
        for chunk in chunks:
            for payload in encoder.encode(chunk):
                yield WireChunk.of(payload)
        if request.include_usage:
            yield WireChunk.of(encoder.usage((reply.meta or {}).get("usage")))
        yield WireChunk.of(DONE)

    async def _start_stream(
        self,
        request: ChatRequest,
        model: str,
        completion_id: str,
        data: dict[str, Any],
        lane: str,
        idem_key: str | None,
        trace: DebugTrace,
    ) -> AsyncGenerator:
        """
        Start the turn and wait for its first chunk before answering.

        Errors found before anything is streamed (bad tool ids, Letta down) still get a proper HTTP status.
        """
        ticket = await self.shared.load.acquire(self.agent_id, lane)
        deadline = time.monotonic() + self.settings.turn_timeout
        handle = self.pipeline.stream(data, streaming_components=["generator"], include_outputs_from={"generator"})
        iterator = handle.__aiter__()
        try:
            first = await _next(iterator, deadline)
        except BaseException as exc:
            await handle.aclose()
            ticket.release()
            if isinstance(exc, TimeoutError):
                raise upstream_timeout() from None
            if isinstance(exc, Exception):
                raise _unwrap(exc) from None
            raise
        stream = self._sse(request, model, completion_id, handle, iterator, first, deadline, ticket, idem_key, trace)
        # a stream that is never iterated (client gone before the first byte) must still free its slots and run
        weakref.finalize(stream, _abandon, ticket, handle, self.shared.idempotency, idem_key)
        return stream

    async def _sse(  # noqa: PLR0912, PLR0915 - one loop that must end the stream correctly on every path
        self,
        request: ChatRequest,
        model: str,
        completion_id: str,
        handle: Any,
        iterator: AsyncIterator[StreamingChunk],
        first: StreamingChunk | None,
        deadline: float,
        ticket: Ticket,
        idem_key: str | None,
        trace: DebugTrace,
    ) -> AsyncGenerator:
        encoder = OpenAIChunkEncoder(completion_id, model, think_tags=self.settings.think_tags)
        mode = request.tool_activity or self.settings.tool_activity.value
        server_tools = False
        done = False
        failed: OpenAIError | None = None
        try:
            for payload in encoder.role():
                trace.openai_chunk(payload)
                yield WireChunk.of(payload)
            chunk = first
            while chunk is not None:
                activity = (chunk.meta or {}).get("tool_activity")
                if activity is not None:
                    server_tools = True
                    for item in self._show_activity(activity, mode, encoder):
                        yield item
                for payload in encoder.encode(chunk):
                    trace.openai_chunk(payload)
                    yield WireChunk.of(payload)
                if chunk.finish_reason is not None and not done:
                    # the answer is complete: end the stream now; the rest of the pipeline finishes after
                    if request.include_usage:
                        payload = encoder.usage((chunk.meta or {}).get("usage"))
                        trace.openai_chunk(payload)
                        yield WireChunk.of(payload)
                    yield WireChunk.of(DONE)
                    done = True
                chunk = await _next(iterator, deadline)
            reply = handle.result["generator"]["replies"][0]
            if idem_key is not None:
                self.shared.idempotency.resolve(idem_key, reply)
        except TimeoutError:
            failed = upstream_timeout()
        except asyncio.CancelledError:
            failed = OpenAIError(499, "The client closed the connection.", type="server_error", code="cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes an SSE error event
            failed = _unwrap(exc)
        finally:
            if failed is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(handle.aclose())
                if idem_key is not None:
                    self.shared.idempotency.fail(idem_key, failed)
                trace.error(failed)
            ticket.release()
            if server_tools:
                self.pipeline.get_component("overlay").invalidate(self.agent_id)
        if failed is not None:
            log.warning("Stream {} failed: {}", completion_id, failed.message)
            if done:
                return  # the client already has the whole answer
            yield WireChunk.of(failed.body())
        elif not done and request.include_usage:
            yield WireChunk.of(encoder.usage(None))
        if not done:
            yield WireChunk.of(DONE)


def _activity_line(activity: dict[str, Any]) -> str:
    name = activity.get("name") or "tool"
    if activity.get("phase") == "call":
        return f"[running {name}]\n"
    return f"[{name}: {activity.get('status') or 'done'}]\n"


async def _next(iterator: AsyncIterator[StreamingChunk], deadline: float) -> StreamingChunk | None:
    """The next chunk, None at the end; TimeoutError past the turn deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    try:
        return await asyncio.wait_for(iterator.__anext__(), timeout=remaining)
    except StopAsyncIteration:
        return None


def _abandon(ticket: Ticket, handle: Any, idempotency: IdempotencyStore, idem_key: str | None) -> None:
    ticket.release()
    if idem_key is not None:
        idempotency.fail(idem_key, OpenAIError(499, "The client closed the connection.", type="server_error"))
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop().create_task(handle.aclose())


def _status_event(activity: dict[str, Any]) -> Any:
    name = activity.get("name") or "tool"
    if activity.get("phase") == "call":
        return create_status_event(f"Agent is running {name}", done=False)
    status = activity.get("status") or "done"
    return create_status_event(f"Agent ran {name} ({status})", done=True)


class SharedState:
    """State shared by every agent of one server process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.idempotency = IdempotencyStore()
        self.load = LoadController(
            max_inflight=settings.max_inflight,
            max_inflight_per_agent=settings.max_inflight_per_agent,
            queue_depth=settings.session_queue_depth,
            queue_wait=settings.session_queue_wait,
        )
