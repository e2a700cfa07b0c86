"""
The request path of one agent: from an OpenAI chat-completion request to its pipeline and back (orchestration).

`AgentChat.start_turn` validates the request, plans the turn once (`plan_turn`), applies idempotency and load control
around the pipeline run and enforces the turn timeout; it gives a `Turn`: the final Haystack reply, or a live stream of
`StreamingChunk`s. The wires encode it: `AgentChat.answer` as the exact Chat Completions response (a `chat.completion`
dict, or a stream of `WireChunk`s ending with `[DONE]`, shapes from `letta_hayhooks.openai_wire`), the Responses
route as Responses objects and events (`letta_hayhooks.openai_responses`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from fastapi_openai_compat import ChatCompletion
from hayhooks import log
from hayhooks.events import create_status_event
from haystack.dataclasses import ChatMessage, ReasoningContent, StreamingChunk, ToolCallDelta

from letta_hayhooks import telemetry
from letta_hayhooks.chat.debug_trace import DebugTrace
from letta_hayhooks.chat.drain import Drain, shutting_down
from letta_hayhooks.chat.idempotency import IdempotencyStore
from letta_hayhooks.chat.load_control import LoadController, Ticket
from letta_hayhooks.chat.pipeline import AgentPipeline, build_agent_pipeline
from letta_hayhooks.chat_identity import TURN_PROGRESS, TurnProgress
from letta_hayhooks.errors import OpenAIError, from_letta_exception, upstream_timeout
from letta_hayhooks.openai_request import (
    ChatRequest,
    ReadOnlyList,
    RequestLimits,
    check_image_urls,
    validate_chat_request,
)
from letta_hayhooks.openai_wire import DONE, OpenAIChunkEncoder, WireChunk, completion_from_reply
from letta_hayhooks.settings import Settings
from letta_hayhooks.tenants import Tenant
from letta_hayhooks.turn_plan import TurnPlan, plan_turn

# Outputs a turn reads besides its reply: the session resolver's (the conversation's fate, for the turn's report).
_OUTPUTS = frozenset({"generator", "session"})
# Transcripts up to this many messages and characters are checked on the event loop (well under a millisecond).
_INLINE_MESSAGES = 200
_INLINE_TEXT = 256 * 1024


def _text_size(messages: list[Any]) -> int:
    """Characters of string content in a transcript (cheap: lengths only)."""
    return sum(len(m["content"]) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))


def _turn_slot(plan: TurnPlan, fingerprint: str) -> str | None:
    """Where the outcome of a turn without an Idempotency-Key is shared with its duplicates and SDK retries."""
    if plan.throwaway or plan.digests is None:
        return None
    # the whole request decides: the same messages under another system prompt are another request
    return f"turn\x00{plan.agent_id}\x00{plan.scope}\x00{fingerprint}"


def request_fingerprint(body: Mapping[str, Any]) -> str:
    """A digest of a request body, binding an Idempotency-Key to the request it was first used with."""
    raw = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


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

    def __init__(
        self,
        settings: Settings,
        agent_id: str,
        model_id: str,
        shared: SharedState,
        agent_pipeline: AgentPipeline | None = None,
    ) -> None:
        self.settings = settings
        self.agent_id = agent_id
        self.model_id = model_id
        self.shared = shared
        shared.models[agent_id] = model_id
        built = agent_pipeline or build_agent_pipeline(settings)
        self.pipeline = built.pipeline
        self.compiled_prompts = built.compiled_prompts
        self.spares = built.spares

    async def complete(
        self, model: str, messages: Any, body: dict[str, Any], headers: Mapping[str, str] | None
    ) -> ChatCompletion | AsyncGenerator:
        """
        `answer` for Hayhooks' own chat route: errors become `HTTPException`s with OpenAI bodies.

        That route validates a non-streaming answer against its `ChatCompletion` model, which adds `delta: null` to
        every choice; the letta-hayhooks server answers agents on its own route instead (exact objects).
        """
        try:
            result = await self.answer(model, messages, body, headers)
        except OpenAIError as error:
            raise http_error(error) from None
        return ChatCompletion(**result) if isinstance(result, dict) else result

    async def answer(
        self, model: str, messages: Any, body: dict[str, Any], headers: Mapping[str, str] | None, *,
        tenant: Tenant | None = None,
    ) -> dict[str, Any] | AsyncGenerator:
        """
        Answer one chat-completion request: a `chat.completion` dict, or an async generator of stream items.

        An encoder over `start_turn`: the turn itself (validation, plan, idempotency, load control, timeout) is the
        same for every wire.

        :raises OpenAIError: for every refusal or failure before a stream starts.
        """
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        turn = await self.start_turn(model, messages, body, headers, tenant=tenant, request_id=completion_id)
        if turn.repeated:
            # a retry is the first request's outcome: its id and time too, not a completion that never existed
            meta = turn.reply.meta or {}
            return self._from_reply(turn.reply, turn.request, model, meta.get("completion_id", completion_id),
                                    created=meta.get("created"))
        if turn.chunks is not None:
            return self._sse(turn, model, completion_id)
        assert turn.completion is not None
        return turn.completion

    async def start_turn(
        self,
        model: str,
        messages: Any,
        body: dict[str, Any],
        headers: Mapping[str, str] | None,
        *,
        tenant: Tenant | None = None,
        request_id: str | None = None,
        conversation_id: str | None = None,
        seed_history: bool = False,
        require_user: bool = True,
        route: str = "chat",
    ) -> Turn:
        """
        Validate, plan and run one turn, whatever wire it came on; the wire's encoder turns the `Turn` into bytes.

        `messages` and `body` are in the Chat Completions shape (other wires convert theirs first). A non-stream turn
        comes back finished (`reply`); a stream comes back once its first chunk is there (`chunks`), so errors found
        before anything is streamed keep their HTTP status. The chunk iterator enforces the turn timeout, cancels the
        Letta run when its reader is cancelled or closes it early, frees its slots when it is dropped unread, and
        ends with `server_shutting_down` when the drain stops it; it raises `OpenAIError` for a failure mid-stream.

        :param conversation_id: The Letta conversation the client named (a Responses `previous_response_id` or
            `conversation`): used instead of the chat identity rules.
        :param seed_history: With `conversation_id`, a conversation made just now: the transcript before the new
            turn is sent as its context.
        :param require_user: Refuse a transcript without a user message (a continuation may carry tool results only).
        :param route: The API the turn came on (`chat`, `responses`), for the turn's log line and metrics.
        :raises OpenAIError: for every refusal or failure before the turn's answer (or first chunk) is there.
        """
        if self.shared.drain.draining:  # the server began to stop: no new turn, on any wire, stream or not
            telemetry.count_rejected("shutting_down", self.model_id)
            raise shutting_down()
        settings = self.settings
        started = time.monotonic()
        created = int(time.time())
        request_id = request_id or f"chatcmpl-{uuid.uuid4().hex}"
        limits = RequestLimits.from_settings(settings)

        def prepare() -> tuple[ChatRequest, TurnPlan, str]:
            request = validate_chat_request(model, messages, body, limits=limits, require_user=require_user)
            plan = plan_turn(self.agent_id, request, headers, policy=settings.session_policy.value,
                             request_id=request_id, tenant=tenant, conversation_id=conversation_id,
                             seed_history=seed_history)
            named = {**body, "\x00conversation": conversation_id} if conversation_id is not None else body
            return request, plan, request_fingerprint(named)

        if isinstance(messages, list) and (len(messages) > _INLINE_MESSAGES or _text_size(messages) > _INLINE_TEXT):
            # a long transcript takes milliseconds to check and digest: off the event loop, so no request waits
            request, plan, fingerprint = await asyncio.to_thread(prepare)
        else:
            request, plan, fingerprint = prepare()
        await check_image_urls(request)
        trace = DebugTrace.start(settings, request_id)
        data = self._pipeline_inputs(request, plan, model, request_id, trace)

        # An Idempotency-Key names the request. Without one, the turn itself does: a duplicate arriving while the first
        # is running, or an SDK retry after it, gets the first outcome; the same request after its answer was delivered
        # is a regenerate (what chat UIs mean by sending it again) and runs anew.
        slot = plan.idempotency_slot or _turn_slot(plan, fingerprint)
        if slot is not None:
            owner, future = self.shared.idempotency.claim(slot, fingerprint, reuse_finished=plan.retry)
            if not owner:
                reply = await asyncio.shield(future)
                log.info("Repeated request: answering with the first request's outcome")
                report = _TurnClock(request_id, plan, route, started, created)
                self._report(report, reply=reply, fate="replayed")
                return Turn(request_id, request, plan, trace, reply=reply, repeated=True,
                            created=(reply.meta or {}).get("created", created))

        clock = _TurnClock(request_id, plan, route, started, created)
        # the pipeline's background writes (a spare's name, the chat's head) wait for the turn's milestones
        progress = TurnProgress()
        TURN_PROGRESS.set(progress)
        try:
            if request.stream:
                return await self._start_stream(request, plan, request_id, data, trace, slot, clock, progress)
            reply, completion, fate = await self._run(data, plan.lane)
        except OpenAIError as error:
            progress.finish()
            if slot is not None:
                self.shared.idempotency.fail(slot, error)
            trace.error(error)
            self._report(clock, error=error)
            self.spares.refill()
            raise
        except BaseException:
            progress.finish()
            # cancelled (client gone) or a bug: a retry with the same key must run again, not wait forever
            if slot is not None:
                self.shared.idempotency.fail(slot, OpenAIError(499, "The request was abandoned.",
                                                               type="server_error", code="cancelled"))
            telemetry.count_rejected("cancelled", self.model_id)
            raise
        if slot is not None:
            _stamp(reply, completion.get("id", request_id), completion.get("created", created))
            self.shared.idempotency.resolve(slot, reply)
        # the answer is sent as soon as this returns, with nothing awaited in between: the turn's bookkeeping (its
        # log line, metrics, the next spare) and what waits for the answer run right after, not before it
        asyncio.get_running_loop().call_soon(self._answered, clock, trace, reply, completion, fate, progress)
        return Turn(request_id, request, plan, trace, reply=reply, completion=completion, created=created)

    def _answered(self, clock: _TurnClock, trace: DebugTrace, reply: ChatMessage, completion: dict[str, Any],
                  fate: str | None, progress: TurnProgress) -> None:
        """What follows a finished non-stream turn once its answer is out."""
        progress.finish()
        trace.completion(completion)
        self._report(clock, reply=reply, fate=fate)
        self.spares.refill()  # making the next spare never slows the turn that took one

    def _report(self, clock: _TurnClock, *, reply: ChatMessage | None = None, error: OpenAIError | None = None,
                fate: str | None = None, ttft: float | None = None) -> None:
        """The turn's log line and metrics (ids, counts, durations and codes only)."""
        meta = (reply.meta or {}) if reply is not None else {}
        usage = meta.get("usage") or {}
        if error is not None and error.code in ("letta_timeout",):
            telemetry.count_rejected("turn_timeout", self.model_id)
        elif error is not None and error.code == "server_shutting_down":
            telemetry.count_rejected("shutting_down", self.model_id)
        telemetry.report_turn(telemetry.TurnReport(
            request_id=clock.request_id, agent_id=self.agent_id, model=self.model_id, route=clock.route,
            session_source=clock.plan.session_source, conversation_id=meta.get("conversation_id"),
            fate=fate or clock.plan.fate or None, letta_run_id=meta.get("run_id"),
            stop_reason=meta.get("stop_reason"), prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"), seconds_at_letta=meta.get("seconds_at_letta"),
            seconds_total=time.monotonic() - clock.started, ttft_seconds=ttft,
            outcome=telemetry.outcome_of(error.status if error else None, error.code if error else None),
            error_code=error.code if error else None,
        ))

    @staticmethod
    def _pipeline_inputs(
        request: ChatRequest, plan: TurnPlan, model: str, completion_id: str, trace: DebugTrace
    ) -> dict[str, Any]:
        return {
            "router": {"model": plan.agent_id},
            "session": {
                "plan": plan,
                "messages": ReadOnlyList(request.messages),
                "new_positions": request.new_turn.user_positions,
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

    async def _run(self, data: dict[str, Any], lane: str) -> tuple[ChatMessage, dict[str, Any], str | None]:
        async with self.shared.load.turn(self.agent_id, lane):
            try:
                async with asyncio.timeout(self.settings.turn_timeout):
                    result = await self.pipeline.run_async(data, include_outputs_from=_OUTPUTS)
            except TimeoutError:
                raise upstream_timeout() from None
            except OpenAIError:
                raise
            except Exception as exc:  # noqa: BLE001 - every pipeline failure becomes an OpenAI error
                raise _unwrap(exc) from None
        reply = result["generator"]["replies"][0]
        self._after_turn(reply)
        return reply, result["adapter"]["completion"], (result.get("session") or {}).get("fate")

    def _after_turn(self, reply: ChatMessage) -> None:
        if (reply.meta or {}).get("server_tool_calls"):
            # the agent ran its own tools (memory edits): the next prompt overlay must see the new memory
            self.compiled_prompts.invalidate(self.agent_id)

    def _from_reply(self, reply: ChatMessage, request: ChatRequest, model: str, completion_id: str,
                    created: int | None = None) -> Any:
        if not request.stream:
            return completion_from_reply(reply, completion_id=completion_id, model=model,
                                         think_tags=self.settings.think_tags, created=created)
        return self._replay_stream(reply, request, model, completion_id, created)

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
        self, reply: ChatMessage, request: ChatRequest, model: str, completion_id: str, created: int | None = None
    ) -> AsyncGenerator:
        encoder = OpenAIChunkEncoder(completion_id, model, think_tags=self.settings.think_tags, created=created)
        for chunk in reply_chunks(reply):
            for payload in encoder.encode(chunk):
                yield WireChunk.of(payload)
        if request.include_usage:
            yield WireChunk.of(encoder.usage((reply.meta or {}).get("usage")))
        yield WireChunk.of(DONE)

    async def _start_stream(
        self,
        request: ChatRequest,
        plan: TurnPlan,
        request_id: str,
        data: dict[str, Any],
        trace: DebugTrace,
        slot: str | None,
        clock: _TurnClock,
        progress: TurnProgress,
    ) -> Turn:
        """
        Start the turn and wait for its first chunk of the answer before answering.

        Errors found before anything is streamed (bad tool ids, Letta down, the model provider failing) still get a
        proper HTTP status: the chunks that only announce the Letta run are held back until the answer begins.
        """
        ticket = await self.shared.load.acquire(self.agent_id, plan.lane)
        if self.shared.drain.draining:  # it waited for its slot while the server began to stop
            ticket.release()
            raise shutting_down()
        deadline = time.monotonic() + self.settings.turn_timeout
        handle = self.pipeline.stream(data, streaming_components=["generator"], include_outputs_from=_OUTPUTS)
        iterator = handle.__aiter__()
        leading: list[StreamingChunk] = []
        try:
            first = await _next(iterator, deadline)
            while first is not None and _announces_only(first):
                leading.append(first)
                first = await _next(iterator, deadline)
        except BaseException as exc:
            await handle.aclose()
            ticket.release()
            if isinstance(exc, TimeoutError):
                raise upstream_timeout() from None
            if isinstance(exc, Exception):
                raise _unwrap(exc) from None
            raise
        run = _LiveRun(ticket, handle, self.shared.idempotency, slot, clock, progress)
        chunks = self._live_chunks(run, iterator, [*leading, first], deadline, trace)
        # a stream that is never iterated (client gone before the first byte) must still free its slots and run
        weakref.finalize(chunks, run.abandon)
        return Turn(request_id, request, plan, trace, chunks=chunks, created=clock.created)

    async def _live_chunks(  # noqa: PLR0912 - one loop that must end the turn correctly on every path
        self,
        run: _LiveRun,
        iterator: AsyncIterator[StreamingChunk],
        opening: list[StreamingChunk | None],
        deadline: float,
        trace: DebugTrace,
    ) -> AsyncGenerator[StreamingChunk, None]:
        """
        The turn's chunks up to the end of its pipeline (the recorder runs after the last one).

        :raises OpenAIError: the turn's failure: timeout, Letta's error, `server_shutting_down` from the drain.
        """
        server_tools = False
        failed: OpenAIError | None = None
        reply: ChatMessage | None = None
        ttft: float | None = None
        open_stream = self.shared.drain.track()  # a server shutdown may end it early, with an error event
        try:
            pending = list(opening)
            chunk = pending.pop(0)
            while chunk is not None:
                if (chunk.meta or {}).get("tool_activity") is not None:
                    server_tools = True
                if ttft is None and (chunk.content or chunk.reasoning or chunk.tool_calls):
                    ttft = time.monotonic() - run.clock.started
                yield chunk
                chunk = pending.pop(0) if pending else await open_stream.watch(_next(iterator, deadline))
            reply = run.handle.result["generator"]["replies"][0]
            if run.slot is not None:
                _stamp(reply, run.clock.request_id, run.clock.created)  # what the stream's chunks carried
                self.shared.idempotency.resolve(run.slot, reply)
        except TimeoutError:
            failed = upstream_timeout()
        except (asyncio.CancelledError, GeneratorExit):
            # the reader is gone (client disconnected, or it closed the stream early): the Letta run goes too
            failed = OpenAIError(499, "The client closed the connection.", type="server_error", code="cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - every failure reaches the encoder as an OpenAIError
            failed = _unwrap(exc)
        finally:
            if failed is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(run.handle.aclose())
                if run.slot is not None:
                    self.shared.idempotency.fail(run.slot, failed)
                trace.error(failed)
            run.settle()
            open_stream.close()
            if server_tools:
                self.compiled_prompts.invalidate(self.agent_id)
            if failed is not None and failed.code == "cancelled":
                telemetry.count_rejected("cancelled", self.model_id)
            # the pipeline's result exists only once it finished (reading it earlier raises)
            fate = (run.handle.result.get("session") or {}).get("fate") if reply is not None else None
            self._report(run.clock, reply=reply, error=failed, fate=fate, ttft=ttft)
            self.spares.refill()
        if failed is not None:
            raise failed

    async def _sse(self, turn: Turn, model: str, completion_id: str) -> AsyncGenerator:  # noqa: PLR0912 - one loop that must end the stream correctly on every path
        """The Chat Completions stream of a live turn: exact chunks, usage, `[DONE]`, errors as error events."""
        assert turn.chunks is not None
        request, trace = turn.request, turn.trace
        encoder = OpenAIChunkEncoder(completion_id, model, think_tags=self.settings.think_tags, created=turn.created)
        mode = request.tool_activity or self.settings.tool_activity.value
        done = False
        failed: OpenAIError | None = None
        try:
            for payload in encoder.role():
                trace.openai_chunk(payload)
                yield WireChunk.of(payload)
            async for chunk in turn.chunks:
                activity = (chunk.meta or {}).get("tool_activity")
                if activity is not None:
                    for item in self._show_activity(activity, mode, encoder):
                        yield item
                ends = chunk.finish_reason is not None and not done  # then usage and [DONE] follow at once
                for payload in encoder.encode(chunk):
                    trace.openai_chunk(payload)
                    yield WireChunk.of(payload, more_follows=ends)
                if ends:
                    # the answer is complete: end the stream now; the rest of the pipeline finishes after
                    if request.include_usage:
                        payload = encoder.usage((chunk.meta or {}).get("usage"))
                        trace.openai_chunk(payload)
                        yield WireChunk.of(payload, more_follows=True)
                    yield WireChunk.of(DONE)
                    done = True
        except OpenAIError as error:
            failed = error
        finally:
            await _close_quietly(turn.chunks)  # a reader that stops early ends the turn's run now
        if failed is not None:
            log.warning("Stream {} failed: {}", completion_id, failed.message)
            if done:
                return  # the client already has the whole answer
            yield WireChunk.of(failed.body())
        elif not done and request.include_usage:
            yield WireChunk.of(encoder.usage(None))
        if not done:
            yield WireChunk.of(DONE)


@dataclass
class Turn:
    """
    One started turn: the validated request, its plan, and its outcome in one of three forms.

    - `reply` with `repeated`: the outcome of an earlier identical request (idempotency), nothing ran;
    - `reply` (and the adapter's `completion`): a finished non-stream turn;
    - `chunks`: a live stream of the generator's `StreamingChunk`s (see `AgentChat.start_turn`).

    The reply's meta holds `finish_reason`, `usage`, `run_id` and `conversation_id`; a live stream announces the
    Letta run id in a meta-only chunk before any content.
    """

    request_id: str
    request: ChatRequest
    plan: TurnPlan
    trace: DebugTrace
    reply: ChatMessage | None = None
    completion: dict[str, Any] | None = None
    chunks: AsyncGenerator[StreamingChunk, None] | None = None
    repeated: bool = False
    created: int = 0  # the turn's `created` (a repeated turn's is the first request's)

    def stream(self) -> AsyncIterator[StreamingChunk]:
        """The turn's chunks: live, or rebuilt from the reply of a repeated (or non-stream) turn."""
        if self.chunks is not None:
            return self.chunks
        assert self.reply is not None
        return _iterate(reply_chunks(self.reply))


@dataclass(frozen=True)
class _TurnClock:
    """What a turn's report needs from its start."""

    request_id: str
    plan: TurnPlan
    route: str
    started: float
    created: int  # wall-clock seconds: the `created` of the turn's answer


def _stamp(reply: ChatMessage, completion_id: str, created: int) -> None:
    """Record the answer's id and time on the reply kept for retries, so every duplicate answers with them."""
    meta = reply.meta if reply.meta is not None else {}
    meta.setdefault("completion_id", completion_id)
    meta.setdefault("created", created)


def _announces_only(chunk: StreamingChunk) -> bool:
    """A chunk that only announces the Letta run (its id in `meta`), before the answer begins."""
    meta = chunk.meta or {}
    return not (chunk.content or chunk.reasoning or chunk.tool_calls or chunk.finish_reason) and \
        "tool_activity" not in meta


class _LiveRun:
    """What a live stream holds until it ends: its load slots, the pipeline run, its idempotency slot."""

    def __init__(self, ticket: Ticket, handle: Any, idempotency: IdempotencyStore, slot: str | None,
                 clock: _TurnClock, progress: TurnProgress) -> None:
        self.progress = progress
        self.ticket = ticket
        self.handle = handle
        self.idempotency = idempotency
        self.slot = slot
        self.clock = clock
        self.settled = False

    def settle(self) -> None:
        """The stream ended and cleaned up after itself."""
        self.settled = True
        self.ticket.release()
        self.progress.finish()

    def abandon(self) -> None:
        """The stream was dropped without ending (never read): free its slots and close its run (a finalizer)."""
        if self.settled:
            return
        self.settled = True
        self.ticket.release()
        self.progress.finish()
        if self.slot is not None:
            self.idempotency.fail(self.slot, OpenAIError(499, "The client closed the connection.",
                                                         type="server_error"))
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(self.handle.aclose())


def reply_chunks(reply: ChatMessage) -> list[StreamingChunk]:
    """A finished reply as the chunks a live turn would have streamed (reasoning, text, tool calls, the end)."""
    meta = reply.meta or {}
    chunks: list[StreamingChunk] = []
    if meta.get("run_id"):
        chunks.append(StreamingChunk(content="", meta={"run_id": meta["run_id"]}))
    if reply.reasoning:
        chunks.append(StreamingChunk(content="", index=0,
                                     reasoning=ReasoningContent(reasoning_text=reply.reasoning.reasoning_text)))
    if reply.text:
        chunks.append(StreamingChunk(content=reply.text, index=0))
    for i, call in enumerate(reply.tool_calls):
        arguments = (call.extra or {}).get("arguments", "")
        chunks.append(StreamingChunk(content="", index=i, tool_calls=[
            ToolCallDelta(index=i, id=call.id, tool_name=call.tool_name, arguments=arguments)]))
    chunks.append(StreamingChunk(content="", finish_reason=meta.get("finish_reason", "stop"),
                                 meta={"usage": meta.get("usage"), "run_id": meta.get("run_id")}))
    return chunks


async def _iterate(chunks: list[StreamingChunk]) -> AsyncGenerator[StreamingChunk, None]:
    for chunk in chunks:
        yield chunk


async def _close_quietly(chunks: AsyncGenerator[StreamingChunk, None]) -> None:
    with contextlib.suppress(Exception):
        await chunks.aclose()


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
        # a timeout scope, not wait_for: wait_for runs each chunk's wait in a task of its own (about 20 us a chunk)
        async with asyncio.timeout(remaining):
            return await anext(iterator)
    except StopAsyncIteration:
        return None


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
        self.drain = Drain(settings.shutdown_grace)  # begun when the server stops
        self.models: dict[str, str] = {}  # agent id -> served model id (the metrics' label)
        self.load.on_load = lambda agent_id, waiting, inflight: telemetry.set_queue(
            self.models.get(agent_id, agent_id), waiting, inflight)
