"""
Sends the new turn of a chat to a Letta agent and streams the answer back as Haystack `StreamingChunk`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from haystack import component, logging
from haystack.dataclasses import ChatMessage, ComponentInfo, StreamingChunk

from letta_hayhooks.chat_identity import TURN_PROGRESS
from letta_hayhooks.errors import OpenAIError, describe_exception, from_letta_exception
from letta_hayhooks.letta_access.component_base import LettaComponent
from letta_hayhooks.letta_access.conversations import (
    DEFAULT_CONVERSATION,
    agent_param,
    open_turn_stream,
    pending_tool_calls,
    recent_messages,
)
from letta_hayhooks.letta_access.events import (
    DONE_EVENT,
    ESCAPED_TOKEN_AGENT_TYPES,
    LettaEventTranslator,
    sse_events,
)
from letta_hayhooks.letta_access.paging import page_items

logger = logging.getLogger(__name__)

StreamingCallback = Callable[[StreamingChunk], Awaitable[None] | None]
EventObserver = Callable[[dict[str, Any]], None]


@component
class LettaChatGenerator(LettaComponent):
    """
    Sends a turn to a Letta agent with letta-client's async client and streams the answer.

    Takes the agent, the conversation (`"default"` is the agent's own thread), the Letta `messages` of the new
    turn (user messages with their `otid`s, or an approval carrying tool results), optional `client_tools` and
    `override_system`; gives `replies`: one assistant `ChatMessage` whose `meta` holds `finish_reason`,
    `stop_reason`, `usage` and `run_id`. Each Letta event becomes `StreamingChunk`s passed to the per-request
    `streaming_callback`: first a meta-only chunk with the Letta `run_id` (as soon as Letta names it), then content,
    `reasoning`, client tool-call deltas, and a last chunk with the finish reason.
    A failed turn raises an `OpenAIError`; it is never disguised as assistant text.

    ### Usage example
    ```python
    gen = LettaChatGenerator(base_url="http://localhost:8283")
    out = gen.run(agent_id="agent-...", messages=[{"role": "user", "content": "hi", "otid": "..."}])
    out["replies"][0].text
    ```
    """

    # the streaming callback is per request and never serialised
    init_parameters = ("stream_tokens", "include_pings")

    def __init__(
        self,
        *,
        stream_tokens: bool = True,
        include_pings: bool = True,
        streaming_callback: StreamingCallback | None = None,
        **connection: Any,
    ) -> None:
        """
        Create the generator.

        :param connection: Where Letta is (`base_url`, `api_key`, `project`, `timeout`, `connect_timeout`), as
            in `LettaComponent`.
        :param stream_tokens: Ask Letta for token deltas when streaming (else one event per step).
        :param include_pings: Ask Letta for keepalive pings, so long tool steps don't trip idle timeouts.
        :param streaming_callback: Default callback; a callback given to `run` wins.
        """
        LettaComponent.__init__(self, **connection)  # Haystack rebuilds the class: no bare super()
        self.stream_tokens = stream_tokens
        self.include_pings = include_pings
        self.streaming_callback = streaming_callback

    @component.output_types(replies=list[ChatMessage])
    async def run_async(
        self,
        agent_id: str,
        messages: list[dict[str, Any]],
        conversation_id: str = DEFAULT_CONVERSATION,
        agent_type: str = "",
        client_tools: list[dict[str, Any]] | None = None,
        override_system: str | None = None,
        replay: list[dict[str, Any]] | None = None,
        stream: bool = False,
        ephemeral: bool = False,
        event_observer: EventObserver | None = None,
        streaming_callback: StreamingCallback | None = None,
    ) -> dict[str, Any]:
        """
        Send the turn and stream the answer.

        :param agent_id: The Letta agent.
        :param messages: Letta messages of the new turn.
        :param conversation_id: Letta conversation id, or `"default"` for the agent's own thread.
        :param agent_type: The agent's type; legacy types stream JSON-escaped text that is decoded here.
        :param client_tools: Client-side tools for this request only (`{name, description, parameters}`).
        :param override_system: A system prompt replacing the compiled one for this request.
        :param replay: Letta messages already in the conversation to answer with instead of a new turn.
        :param stream: Ask for token deltas (when `stream_tokens` is on).
        :param ephemeral: Delete the conversation after the turn (a throwaway transcript replay).
        :param event_observer: Called with every raw Letta event (debug tracing).
        :param streaming_callback: Called with every `StreamingChunk`.
        :returns: `{"replies": [ChatMessage]}`.
        :raises OpenAIError: when Letta fails or the agent stops with an error.
        """
        callback = streaming_callback or self.streaming_callback
        tokens = bool(stream and self.stream_tokens)

        def new_translator() -> LettaEventTranslator:
            return LettaEventTranslator(
                escaped_text=tokens and agent_type in ESCAPED_TOKEN_AGENT_TYPES and replay is None,
                client_tool_names={tool["name"] for tool in client_tools or []},
                component_info=ComponentInfo.from_component(self),
            )

        translator = new_translator()
        at_letta: float | None = None  # time waiting for Letta's answer, for the turn's report
        announced = False
        progress = TURN_PROGRESS.get()

        async def emit(chunks: list[StreamingChunk]) -> None:
            nonlocal announced
            if progress is not None and translator.outcome.run_id is not None:
                progress.sent.set()  # Letta has the turn: the turn's background writes may go
            if callback is None:
                return
            if not announced and translator.outcome.run_id is not None:
                # the run id comes with Letta's first event (a ping): wires that name the answer after the run (the
                # Responses API's response id) learn it before any content
                announced = True
                chunks = [StreamingChunk(content="", component_info=ComponentInfo.from_component(self),
                                         meta={"run_id": translator.outcome.run_id}), *chunks]
            for chunk in chunks:
                result = callback(chunk)
                if inspect.isawaitable(result):
                    await result

        try:
            if replay is not None:
                for event in _replay_events(replay):
                    await emit(translator.feed(event))
            else:
                turn = {"agent_id": agent_id, "conversation_id": conversation_id, "client_tools": client_tools,
                        "override_system": override_system, "stream_tokens": tokens}
                letta_started = time.monotonic()
                await self._stream_turn(translator, emit, event_observer, messages=messages, **turn)
                if _waiting_for_approval(translator.outcome):
                    # an earlier client tool call got no result (the client sent a new message instead): deny it so
                    # the conversation moves on, then send this turn again with the denial in front
                    denial = await self._deny_pending_client_calls(agent_id, conversation_id)
                    translator = new_translator()
                    await self._stream_turn(translator, emit, event_observer, messages=[denial, *messages], **turn)
                at_letta = time.monotonic() - letta_started
        finally:
            if progress is not None:
                progress.sent.set()
            if ephemeral and conversation_id != DEFAULT_CONVERSATION:
                await asyncio.shield(self._delete_conversation(conversation_id))

        final_chunks = translator.finish()
        outcome = translator.outcome
        if outcome.error is not None:
            raise outcome.error
        if outcome.server_approval is not None:
            raise OpenAIError(
                409,
                f"The agent is waiting for approval to run its own tool '{outcome.server_approval}'. "
                "Approve or deny it in Letta; this API can only return client tools.",
                type="conflict_error",
                code="server_tool_approval_required",
            )
        await emit(final_chunks)
        return {
            "replies": [
                translator.reply(meta={"agent_id": agent_id, "conversation_id": conversation_id,
                                       "replayed": replay is not None, "seconds_at_letta": at_letta})
            ]
        }

    async def _stream_turn(
        self,
        translator: LettaEventTranslator,
        emit: Callable[[list[StreamingChunk]], Awaitable[None]],
        event_observer: EventObserver | None,
        *,
        agent_id: str,
        conversation_id: str,
        messages: list[dict[str, Any]],
        client_tools: list[dict[str, Any]] | None,
        override_system: str | None,
        stream_tokens: bool,
    ) -> None:
        # The raw SSE response: the end of what follows [DONE] (Letta keeps the response open a while, finishing the
        # run) is read in the background, so the connection goes back to the pool for the next turn.
        response = None
        lines: AsyncIterator[str] | None = None
        reached_done = False
        try:
            response = await open_turn_stream(
                self.client, agent_id, conversation_id, messages, stream_tokens=stream_tokens,
                include_pings=self.include_pings, client_tools=list(client_tools) if client_tools else None,
                override_system=override_system)
            lines = response.aiter_lines()
            reached_done = await _consume(sse_events(lines), translator, emit, event_observer)
        except OpenAIError:
            raise
        except asyncio.CancelledError:
            # the client went away or the turn timed out: stop the Letta run too, not only our reading of it
            await asyncio.shield(self._cancel_run(agent_id, conversation_id, translator.outcome.run_id))
            raise
        except Exception as exc:  # noqa: BLE001 - every Letta failure becomes the turn's error
            _record_failure(translator, exc, agent_id)
        finally:
            if response is not None:
                if reached_done and lines is not None:
                    _drain_later(response, lines)
                else:
                    await asyncio.shield(_close(response))
        if translator.outcome.stop_reason is None and translator.outcome.error is None:
            translator.outcome.error = from_letta_exception(ConnectionError("Letta ended the stream early"))

    async def _deny_pending_client_calls(self, agent_id: str, conversation_id: str) -> dict[str, Any]:
        """
        The approval message that denies every pending client tool call of the conversation.

        :raises OpenAIError: 409 naming the call when the agent waits on one of its own tools (approve it in Letta).
        """
        try:
            pending = pending_tool_calls(await recent_messages(self.client, agent_id, conversation_id, 20))
            own_tools = {tool.name for tool in page_items(await self.client.agents.tools.list(agent_id, limit=200))}
        except Exception as exc:
            raise from_letta_exception(exc) from exc
        for call_id, name in pending.items():
            if name in own_tools:
                msg = (f"The agent is waiting for approval to run its own tool '{name}' (tool call {call_id}). "
                       "Approve or deny it in Letta; this API can only answer client tools.")
                raise OpenAIError(409, msg, type="conflict_error", code="server_tool_approval_required")
        logger.info("Denying {count} unanswered client tool call(s) in conversation {conversation_id}",
                    count=len(pending), conversation_id=conversation_id)
        return {"type": "approval", "approvals": [
            {"type": "approval", "approve": False, "tool_call_id": call_id, "reason": DENIED_REASON}
            for call_id in pending
        ]}

    async def _delete_conversation(self, conversation_id: str) -> None:
        try:
            await self.client.conversations.delete(conversation_id)
        except Exception as exc:  # noqa: BLE001 - a leftover throwaway conversation is harmless
            logger.warning("Could not delete conversation {conversation_id}: {error}", conversation_id=conversation_id,
                           error=describe_exception(exc))

    async def _cancel_run(self, agent_id: str, conversation_id: str, run_id: str | None) -> None:
        try:
            await asyncio.wait_for(
                self.client.conversations.cancel(conversation_id, agent_id=agent_param(agent_id, conversation_id)),
                timeout=5,
            )
            logger.info("Cancelled Letta run {run_id} in {conversation_id}", run_id=run_id,
                        conversation_id=conversation_id)
        except Exception as exc:  # noqa: BLE001 - cancellation is best effort
            logger.warning("Could not cancel Letta run {run_id}: {error}", run_id=run_id, error=describe_exception(exc))


# What the agent sees when a client answers its tool call with a new message instead of the tool's result.
DENIED_REASON = "The client did not run the tool."


def _waiting_for_approval(outcome: Any) -> bool:
    """True when Letta refused the turn because an earlier tool call still waits for its approval or result."""
    detail = (outcome.error_detail or "").lower()
    return outcome.error is not None and "waiting for approval" in detail and not outcome.text and \
        not outcome.tool_calls


async def _consume(
    events: AsyncIterator[tuple[str | None, dict[str, Any]]],
    translator: LettaEventTranslator,
    emit: Callable[[list[StreamingChunk]], Awaitable[None]],
    event_observer: EventObserver | None,
) -> bool:
    """
    Translate events up to the answer's end; True when it ended (what follows is read in the background).

    Letta ends a turn with `stop_reason`, `usage_statistics` and `[DONE]`, written one after the other; the answer is
    complete at the usage that follows the stop reason, and [DONE] can come a few tenths of a millisecond later.
    """
    async for name, event in events:
        if name == DONE_EVENT:
            return True
        if event_observer is not None:
            event_observer(event)
        if name == "error":
            translator.feed({**event, "message_type": "error_message"})
        else:
            await emit(translator.feed(event))
            if event.get("message_type") == "usage_statistics" and translator.outcome.stop_reason is not None:
                return True
    return False


def _record_failure(translator: LettaEventTranslator, exc: Exception, agent_id: str) -> None:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("message_type") == "error_message":
        translator.feed(body)  # Letta's own error event carried by the exception
    if translator.outcome.error is None:
        translator.outcome.error = from_letta_exception(exc)
    logger.warning("Letta turn failed for agent {agent_id}: {error}", agent_id=agent_id, error=describe_exception(exc))


_DRAINING: set[asyncio.Task] = set()


async def _close(response: Any) -> None:
    with contextlib.suppress(Exception):
        await response.aclose()


def _drain_later(response: Any, lines: AsyncIterator[str]) -> None:
    """Read what follows [DONE] in the background, so the connection goes back to the pool."""

    async def drain() -> None:
        with contextlib.suppress(Exception):
            async for _ in lines:
                pass
        await _close(response)

    task = asyncio.get_running_loop().create_task(drain())
    _DRAINING.add(task)
    task.add_done_callback(_DRAINING.discard)


def _replay_events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored Letta messages of an earlier turn, plus the stop reason that turn ended with."""
    events = list(messages)
    last = events[-1]["message_type"] if events else None
    stop = "requires_approval" if last == "approval_request_message" else "end_turn"
    events.append({"message_type": "stop_reason", "stop_reason": stop})
    return events
