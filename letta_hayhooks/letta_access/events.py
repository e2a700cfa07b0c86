"""
Letta's stream events as Haystack `StreamingChunk`s: the Letta -> Haystack direction, used by the generator.

- `sse_events` reads Letta's server-sent events;
- `JsonStringDecoder` decodes JSON-string-escaped text incrementally (legacy agents stream `send_message` arguments
  still escaped);
- `LettaEventTranslator` turns one request's Letta events into `StreamingChunk`s, the final reply and the turn's
  outcome (stop reason, usage, run id, errors).

Nothing here keeps state across requests.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from haystack import logging
from haystack.dataclasses import (
    ChatMessage,
    ComponentInfo,
    ReasoningContent,
    StreamingChunk,
    ToolCall,
    ToolCallDelta,
)

from letta_hayhooks.errors import CONTEXT_OVERFLOW, OpenAIError, from_letta_error, upstream_error

logger = logging.getLogger(__name__)

# How `sse_events` reports the end of Letta's stream.
DONE_EVENT = "[DONE]"

# Letta stop reasons -> OpenAI finish_reason. Anything not listed and not an error maps to "stop".
_FINISH_REASONS = {
    "end_turn": "stop",
    "no_tool_call": "stop",
    "tool_rule": "stop",
    "max_tokens_exceeded": "length",
    "max_steps": "length",
    "requires_approval": "tool_calls",
}
# Stop reasons that mean the turn failed: they become an error, never assistant text.
_ERROR_STOP_REASONS = {
    "error": "letta_error",
    "llm_api_error": "llm_api_error",
    "invalid_llm_response": "invalid_llm_response",
    "invalid_tool_call": "invalid_tool_call",
    "context_window_overflow_in_system_prompt": "context_window_exceeded",
    "insufficient_credits": "insufficient_credits",
    "cancelled": "cancelled",
}
# Agent types whose token stream carries JSON-escaped text (values cut out of `send_message` arguments).
ESCAPED_TOKEN_AGENT_TYPES = frozenset({"memgpt_agent", "memgpt_v2_agent"})

_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX = frozenset("0123456789abcdefABCDEF")


class JsonStringDecoder:
    """
    Incremental decoder for the inside of a JSON string literal.

    Feed it text pieces as they arrive; escapes split across pieces are held back until complete. `\\uXXXX`
    escapes are decoded, including UTF-16 surrogate pairs. `flush()` returns whatever is still held back.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._high_surrogate: int | None = None

    def feed(self, text: str) -> str:
        """Decode `text` (with anything held back before it) and return the completed characters."""
        data = self._pending + text
        self._pending = ""
        out: list[str] = []
        i = 0
        n = len(data)
        while i < n:
            ch = data[i]
            if ch != "\\":
                self._emit_pending_surrogate(out)
                j = data.find("\\", i)
                j = n if j < 0 else j
                out.append(data[i:j])
                i = j
                continue
            if i + 1 >= n:
                self._pending = data[i:]
                break
            esc = data[i + 1]
            if esc == "u":
                if i + 6 > n:
                    if all(c in _HEX for c in data[i + 2 :]):
                        self._pending = data[i:]
                        break
                    # not a valid \u escape: keep the text as it is
                    self._emit_pending_surrogate(out)
                    out.append(data[i : i + 2])
                    i += 2
                    continue
                digits = data[i + 2 : i + 6]
                if not all(c in _HEX for c in digits):
                    self._emit_pending_surrogate(out)
                    out.append(data[i : i + 2])
                    i += 2
                    continue
                self._code_unit(int(digits, 16), out)
                i += 6
                continue
            self._emit_pending_surrogate(out)
            out.append(_SIMPLE_ESCAPES.get(esc, "\\" + esc))
            i += 2
        return "".join(out)

    def flush(self, *, cut_quote: bool = False) -> str:
        r"""
        Return everything still held back (an incomplete escape is returned as the raw text).

        :param cut_quote: Read a lone trailing backslash as an escaped quote. Letta's extraction of `send_message`
            arguments drops the closing `"` of the JSON string; when the text itself ends with `\"`, that leaves
            a lone `\`, which valid JSON string content can never end with.
        """
        out: list[str] = []
        self._emit_pending_surrogate(out)
        out.append('"' if cut_quote and self._pending == "\\" else self._pending)
        self._pending = ""
        return "".join(out)

    def _code_unit(self, unit: int, out: list[str]) -> None:
        if 0xD800 <= unit <= 0xDBFF:
            self._emit_pending_surrogate(out)
            self._high_surrogate = unit
            return
        if 0xDC00 <= unit <= 0xDFFF and self._high_surrogate is not None:
            high = self._high_surrogate
            self._high_surrogate = None
            out.append(chr(0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00)))
            return
        self._emit_pending_surrogate(out)
        out.append("\ufffd" if 0xDC00 <= unit <= 0xDFFF else chr(unit))

    def _emit_pending_surrogate(self, out: list[str]) -> None:
        if self._high_surrogate is not None:
            self._high_surrogate = None
            out.append("\ufffd")


def _get(event: Any, name: str, default: Any = None) -> Any:
    if isinstance(event, dict):
        return event.get(name, default)
    return getattr(event, name, default)


def _text_of(content: Any) -> str:
    """Letta message content: a string, or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(_get(part, "text", "") or "") for part in content)
    return str(content)


@dataclass
class _ToolCallState:
    index: int
    id: str
    name: str = ""
    arguments: str = ""


@dataclass
class TurnOutcome:
    """What one Letta turn produced, assembled from its events."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[_ToolCallState] = field(default_factory=list)
    stop_reason: str | None = None
    usage: dict[str, Any] | None = None
    run_id: str | None = None
    error: OpenAIError | None = None
    error_detail: str | None = None  # Letta's own words about the error, when it gave any
    server_approval: str | None = None


class LettaEventTranslator:
    """
    Translates the Letta events of one request into `StreamingChunk`s and a final `ChatMessage`.

    Create one per request. `client_tool_names` are the tools the client sent: only approval requests for them
    become OpenAI tool calls. The agent's own tools are reported as `meta["tool_activity"]` chunks, never as calls.
    """

    def __init__(
        self,
        *,
        escaped_text: bool = False,
        client_tool_names: frozenset[str] | set[str] = frozenset(),
        component_info: ComponentInfo | None = None,
    ) -> None:
        self._escaped = escaped_text
        self._client_tools = frozenset(client_tool_names)
        self._info = component_info
        self._content_decoder = JsonStringDecoder() if escaped_text else None
        self._reasoning_decoder = JsonStringDecoder() if escaped_text else None
        self._last_assistant_id: str | None = None
        self._last_reasoning_id: str | None = None
        self._calls: dict[str, _ToolCallState] = {}
        self._server_calls: dict[str, str] = {}
        self._pending_server_approval: str | None = None
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._generic_error = False  # the outcome's error says only the stop reason so far
        self.outcome = TurnOutcome()

    # ---- feeding
    def feed(self, event: Any) -> list[StreamingChunk]:
        """Translate one Letta event (SDK object or dict) into zero or more chunks."""
        kind = _get(event, "message_type")
        if self.outcome.run_id is None:
            self.outcome.run_id = _get(event, "run_id")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            return []  # ping, hidden_reasoning_message, user/system echoes: internal, never content
        return handler(event)

    def finish(self) -> list[StreamingChunk]:
        """Flush decoders and emit the final chunk that carries the finish reason."""
        chunks = self._flush_decoders()
        outcome = self.outcome
        outcome.text = "".join(self._text)
        outcome.reasoning = "".join(self._reasoning)
        outcome.tool_calls = sorted(self._calls.values(), key=lambda c: c.index)
        if outcome.error is None and outcome.stop_reason == "requires_approval" and not outcome.tool_calls:
            outcome.server_approval = self._pending_server_approval or "unknown"
        chunks.append(
            StreamingChunk(
                content="",
                component_info=self._info,
                finish_reason=self.finish_reason(),  # type: ignore[arg-type]
                meta={"usage": outcome.usage, "stop_reason": outcome.stop_reason, "run_id": outcome.run_id},
            )
        )
        return chunks

    def finish_reason(self) -> str:
        """The OpenAI finish_reason for what has been seen so far."""
        if self.outcome.tool_calls or self._calls:
            return "tool_calls"
        reason = _FINISH_REASONS.get(self.outcome.stop_reason or "end_turn", "stop")
        return "stop" if reason == "tool_calls" else reason

    def reply(self, meta: dict[str, Any] | None = None) -> ChatMessage:
        """The final assistant message (call after `finish()`)."""
        outcome = self.outcome
        tool_calls = [
            ToolCall(tool_name=c.name, arguments=_parse_arguments(c.arguments), id=c.id,
                     extra={"arguments": c.arguments})
            for c in outcome.tool_calls
        ]
        return ChatMessage.from_assistant(
            text=outcome.text or None,
            tool_calls=tool_calls or None,
            reasoning=ReasoningContent(reasoning_text=outcome.reasoning) if outcome.reasoning else None,
            meta={
                "finish_reason": self.finish_reason(),
                "stop_reason": outcome.stop_reason,
                "usage": outcome.usage,
                "run_id": outcome.run_id,
                "server_tool_calls": sorted(set(self._server_calls.values())),
                **(meta or {}),
            },
        )

    # ---- handlers, one per Letta message_type
    def _on_ping(self, event: Any) -> list[StreamingChunk]:  # noqa: ARG002
        # a keepalive: tells the caller the run started, produces no OpenAI output
        return [StreamingChunk(content="", component_info=self._info, meta={"ping": True})]

    def _on_assistant_message(self, event: Any) -> list[StreamingChunk]:
        chunks = self._flush_reasoning()
        text = _text_of(_get(event, "content"))
        msg_id = _get(event, "id")
        if msg_id != self._last_assistant_id:
            if self._content_decoder is not None:
                chunks.extend(self._content_chunks(self._content_decoder.flush(cut_quote=True)))
            if self._last_assistant_id is not None and self._text:
                # a second assistant message in the same turn: keep the two apart
                chunks.extend(self._content_chunks("\n\n"))
            self._last_assistant_id = msg_id
        if self._content_decoder is not None:
            text = self._content_decoder.feed(text)
        chunks.extend(self._content_chunks(text))
        return chunks

    def _on_reasoning_message(self, event: Any) -> list[StreamingChunk]:
        text = _get(event, "reasoning") or ""
        msg_id = _get(event, "id")
        if msg_id != self._last_reasoning_id:
            self._last_reasoning_id = msg_id
            if self._reasoning and not self._reasoning[-1].endswith("\n"):
                text = "\n" + text
        if self._reasoning_decoder is not None:
            text = self._reasoning_decoder.feed(text)
        return self._reasoning_chunks(text)

    def _on_approval_request_message(self, event: Any) -> list[StreamingChunk]:
        chunks = self._flush_decoders()
        for call in _tool_call_parts(event):
            call_id = _get(call, "tool_call_id") or ""
            name = _get(call, "name")
            args = _get(call, "arguments")
            state = self._calls.get(call_id)
            if state is None:
                if name and name not in self._client_tools:
                    # the agent's own tool waiting for approval: not something the client can execute
                    self._pending_server_approval = name
                    self._server_calls[call_id] = name
                    continue
                if call_id in self._server_calls:
                    continue
                state = _ToolCallState(index=len(self._calls), id=call_id, name=name or "")
                self._calls[call_id] = state
                delta = ToolCallDelta(index=state.index, id=call_id, tool_name=state.name, arguments=args or "")
                state.arguments += args or ""
            else:
                if not args:
                    continue
                state.arguments += args
                delta = ToolCallDelta(index=state.index, arguments=args)
            chunks.append(
                StreamingChunk(content="", component_info=self._info, index=state.index, tool_calls=[delta],
                               start=delta.id is not None)
            )
        return chunks

    def _on_tool_call_message(self, event: Any) -> list[StreamingChunk]:
        chunks: list[StreamingChunk] = []
        for call in _tool_call_parts(event):
            call_id = _get(call, "tool_call_id") or ""
            name = _get(call, "name")
            if name and call_id not in self._server_calls:
                self._server_calls[call_id] = name
                chunks.append(self._activity({"phase": "call", "name": name, "id": call_id}))
        return chunks

    def _on_tool_return_message(self, event: Any) -> list[StreamingChunk]:
        call_id = _get(event, "tool_call_id") or ""
        if call_id in self._calls:
            return []  # a client tool's result: the client already knows it
        name = _get(event, "name") or self._server_calls.get(call_id, "")
        return [self._activity({"phase": "return", "name": name, "id": call_id, "status": _get(event, "status")})]

    def _on_stop_reason(self, event: Any) -> list[StreamingChunk]:
        reason = _get(event, "stop_reason")
        self.outcome.stop_reason = reason
        if reason in _ERROR_STOP_REASONS and self.outcome.error is None:
            # Letta sends its error_message (with the provider's words) right after: it replaces this generic error
            self._generic_error = True
            if reason == CONTEXT_OVERFLOW:
                self.outcome.error = from_letta_error(reason, "The agent's prompt does not fit its context window.")
            else:
                self.outcome.error = upstream_error(
                    f"The Letta agent stopped with '{reason}'.", code=_ERROR_STOP_REASONS[reason]
                )
        return []

    def _on_usage_statistics(self, event: Any) -> list[StreamingChunk]:
        prompt = int(_get(event, "prompt_tokens") or 0)
        completion = int(_get(event, "completion_tokens") or 0)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": int(_get(event, "total_tokens") or prompt + completion),
        }
        if (reasoning_tokens := _get(event, "reasoning_tokens")) is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": int(reasoning_tokens)}
        if (cached := _get(event, "cached_input_tokens")) is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": int(cached)}
        self.outcome.usage = usage
        return []

    def _on_error_message(self, event: Any) -> list[StreamingChunk]:
        message = _get(event, "message") or _get(event, "detail") or "error"
        self.outcome.error_detail = str(message)[:500]
        if self.outcome.error is None or self._generic_error:
            # the status, code and message the client gets: provider 429 -> 429, provider 5xx -> 502, context -> 400
            detail = _get(event, "detail")
            self.outcome.error = from_letta_error(
                _get(event, "error_type"), str(message), str(detail) if detail else None,
                stop_reason=self.outcome.stop_reason,
            )
            self._generic_error = False
        return []

    # ---- chunk builders
    def _content_chunks(self, text: str) -> list[StreamingChunk]:
        if not text:
            return []
        self._text.append(text)
        return [StreamingChunk(content=text, component_info=self._info, index=0)]

    def _reasoning_chunks(self, text: str) -> list[StreamingChunk]:
        if not text:
            return []
        self._reasoning.append(text)
        return [
            StreamingChunk(content="", component_info=self._info, index=0,
                           reasoning=ReasoningContent(reasoning_text=text))
        ]

    def _activity(self, activity: dict[str, Any]) -> StreamingChunk:
        return StreamingChunk(content="", component_info=self._info, meta={"tool_activity": activity})

    def _flush_reasoning(self) -> list[StreamingChunk]:
        if self._reasoning_decoder is None:
            return []
        return self._reasoning_chunks(self._reasoning_decoder.flush())

    def _flush_decoders(self) -> list[StreamingChunk]:
        chunks = self._flush_reasoning()
        if self._content_decoder is not None:
            chunks.extend(self._content_chunks(self._content_decoder.flush(cut_quote=True)))
        return chunks


def _tool_call_parts(event: Any) -> list[Any]:
    """The tool call(s) of an event: token deltas carry one object, step events may carry a list."""
    calls = _get(event, "tool_calls")
    if isinstance(calls, list) and calls:
        return calls
    if calls is not None and not isinstance(calls, list):
        return [calls]
    single = _get(event, "tool_call")
    return [single] if single is not None else []


def _parse_arguments(arguments: str) -> dict[str, Any]:
    if not arguments:
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        logger.warning("Tool call arguments are not valid JSON; passing them through as text")
        return {}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """
    Letta's server-sent events as `(event name, JSON payload)`; `[DONE]` comes as `(DONE_EVENT, {})`.

    The caller decides whether to read on after `[DONE]` (reading to the end lets the connection be reused).
    """
    name: str | None = None
    data: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif not line and data:
            payload = "\n".join(data)
            data = []
            if payload == "[DONE]":
                yield DONE_EVENT, {}
            else:
                try:
                    event = json.loads(payload)
                except ValueError:
                    logger.warning("Skipping a malformed Letta stream event")
                    event = None
                if isinstance(event, dict):
                    yield name, event
            name = None
    if data and "\n".join(data) != "[DONE]":
        with contextlib.suppress(ValueError):
            event = json.loads("\n".join(data))
            if isinstance(event, dict):
                yield name, event
