"""
Opt-in event tracing (`LETTA_HAYHOOKS_DEBUG_EVENTS=1`): every Letta stream event and every OpenAI chunk of a
request, one JSON line each, to the log or to `LETTA_HAYHOOKS_DEBUG_FILE`.

Message text is redacted unless `LETTA_HAYHOOKS_DEBUG_INCLUDE_TEXT=1`. Lines carry the completion id and, through
Hayhooks' request-id middleware, the request id that is also returned in the `X-Request-Id` header.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from hayhooks import log

from letta_hayhooks.errors import OpenAIError
from letta_hayhooks.settings import Settings

# Fields that carry user, model or tool text: redacted unless text logging is allowed.
TEXT_FIELDS = frozenset({
    "content", "reasoning", "arguments", "tool_return", "reasoning_content", "message", "text", "stdout", "stderr",
    "hidden_reasoning", "value", "summary",
    "detail",  # Letta's error details echo the request (an image URL, a prompt)
})
_SINK_LOCK = threading.Lock()
_SINKS: set[str] = set()


def redact(value: Any, *, include_text: bool) -> Any:
    """A copy of `value` with every text field replaced by its length."""
    if include_text:
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in TEXT_FIELDS and isinstance(item, str):
                out[key] = f"<redacted {len(item)} chars>"
            else:
                out[key] = redact(item, include_text=include_text)
        return out
    if isinstance(value, list):
        return [redact(item, include_text=include_text) for item in value]
    return value


def _ensure_file_sink(path: str) -> None:
    with _SINK_LOCK:
        if path in _SINKS:
            return
        log.add(path, level="DEBUG", format="{time:YYYY-MM-DDTHH:mm:ss.SSSZ} {extra[request_id]} {message}",
                filter=lambda record: record["extra"].get("debug_events") is True, enqueue=False)
        _SINKS.add(path)


class DebugTrace:
    """The trace of one request (a no-op unless debug events are on)."""

    def __init__(self, completion_id: str, *, enabled: bool, include_text: bool) -> None:
        self.completion_id = completion_id
        self.enabled = enabled
        self.include_text = include_text
        self._log = log.bind(debug_events=True, completion_id=completion_id) if enabled else None

    @classmethod
    def start(cls, settings: Settings, completion_id: str) -> DebugTrace:
        """A trace for one request, writing where the settings say."""
        if settings.debug_events and settings.debug_file:
            _ensure_file_sink(settings.debug_file)
        return cls(completion_id, enabled=settings.debug_events, include_text=settings.debug_include_text)

    def _write(self, kind: str, payload: Any) -> None:
        if self._log is None:
            return
        record = {"completion_id": self.completion_id, "kind": kind,
                  "data": redact(payload, include_text=self.include_text)}
        self._log.info(json.dumps(record, ensure_ascii=False, default=str))

    def letta_event(self, event: dict[str, Any]) -> None:
        """One raw Letta stream event."""
        self._write("letta_event", event)

    def openai_chunk(self, chunk: dict[str, Any]) -> None:
        """One OpenAI chunk sent to the client."""
        self._write("openai_chunk", chunk)

    def completion(self, completion: dict[str, Any]) -> None:
        """A whole non-streaming response."""
        self._write("openai_completion", completion)

    def error(self, error: OpenAIError) -> None:
        """The error a request ended with."""
        self._write("error", {"status": error.status, **error.body()})
