"""
The OpenAI wire: Haystack chunks and replies as OpenAI `chat.completion(.chunk)` objects, and exact payloads through
Hayhooks' routes.

- `OpenAIChunkEncoder` turns one request's `StreamingChunk`s into `chat.completion.chunk` dicts;
- `completion_from_reply` builds the `chat.completion` dict of a final reply;
- `WireChunk` carries a prebuilt payload through Hayhooks' chat routes: fastapi-openai-compat serialises every
  `ChatCompletion` an answer generator yields as `data: <model_dump_json()>`, so the stream carries OpenAI's exact
  chunk shape (role only on the first delta, no null noise), the error event `{"error": {...}}`, and `[DONE]`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi_openai_compat import ChatCompletion
from haystack.dataclasses import ChatMessage, StreamingChunk
from pydantic import PrivateAttr

DONE = "[DONE]"


class OpenAIChunkEncoder:
    """
    Encodes one request's `StreamingChunk`s as OpenAI `chat.completion.chunk` dicts.

    The first delta carries `role: "assistant"`; tool-call deltas keep their 0-based index; `think_tags` wraps
    reasoning in `<think>...</think>` inside `content` for clients that only render that.
    """

    def __init__(self, completion_id: str, model: str, *, think_tags: bool = False, created: int | None = None) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = created or int(time.time())
        self._think_tags = think_tags
        self._role_sent = False
        self._in_think = False

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def role(self) -> list[dict[str, Any]]:
        """A content-less first chunk announcing the assistant role (sent once)."""
        return [] if self._role_sent else [self._chunk({"content": ""})]

    def encode(self, chunk: StreamingChunk) -> list[dict[str, Any]]:
        """Encode one chunk; meta-only chunks (tool activity) produce nothing here."""
        out: list[dict[str, Any]] = []
        if chunk.reasoning is not None and chunk.reasoning.reasoning_text:
            text = chunk.reasoning.reasoning_text
            if self._think_tags:
                if not self._in_think:
                    self._in_think = True
                    text = "<think>" + text
                out.append(self._chunk({"content": text}))
            else:
                out.append(self._chunk({"reasoning_content": text}))
        if chunk.content:
            out.extend(self._close_think())
            out.append(self._chunk({"content": chunk.content}))
        if chunk.tool_calls:
            out.extend(self._close_think())
            calls = []
            for delta in chunk.tool_calls:
                call: dict[str, Any] = {"index": delta.index}
                if delta.id is not None:
                    call["id"] = delta.id
                    call["type"] = "function"
                    call["function"] = {"name": delta.tool_name or "", "arguments": delta.arguments or ""}
                else:
                    call["function"] = {"arguments": delta.arguments or ""}
                calls.append(call)
            out.append(self._chunk({"tool_calls": calls}))
        if chunk.finish_reason is not None:
            out.extend(self._close_think())
            out.append(self._chunk({}, finish_reason=chunk.finish_reason))
        return out

    def extra_delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        """A chunk with a custom delta (no content), e.g. the agent's tool activity for clients that read it."""
        return self._chunk(dict(delta))

    def usage(self, usage: dict[str, Any] | None) -> dict[str, Any]:
        """The trailing usage chunk of `stream_options.include_usage` (empty `choices`)."""
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    def _close_think(self) -> list[dict[str, Any]]:
        if self._in_think:
            self._in_think = False
            return [self._chunk({"content": "</think>"})]
        return []


def completion_from_reply(
    reply: ChatMessage, *, completion_id: str, model: str, think_tags: bool = False, created: int | None = None
) -> dict[str, Any]:
    """Build the OpenAI `chat.completion` dict for a final reply."""
    meta = reply.meta or {}
    text = reply.text
    reasoning = reply.reasoning.reasoning_text if reply.reasoning else None
    if think_tags and reasoning:
        text = f"<think>{reasoning}</think>{text or ''}"
        reasoning = None
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning:
        message["reasoning_content"] = reasoning
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.tool_name,
                    "arguments": (call.extra or {}).get("arguments") or json.dumps(call.arguments),
                },
            }
            for call in reply.tool_calls
        ]
    usage = meta.get("usage") or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": meta.get("finish_reason", "stop")}
        ],
        "usage": usage,
    }


class WireChunk(ChatCompletion):
    """A `ChatCompletion` that serialises to a prebuilt payload."""

    _payload: str = PrivateAttr(default="")
    # more of the stream follows at once (the stream's end: finish, usage, [DONE]): a writer may send them together
    _more_follows: bool = PrivateAttr(default=False)

    @classmethod
    def of(cls, payload: dict[str, Any] | str, *, more_follows: bool = False) -> WireChunk:
        """Wrap a chunk or completion dict (or the literal `[DONE]`)."""
        chunk = cls(id="", object="chat.completion.chunk", created=0, model="", choices=[])
        chunk._payload = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False,
                                                                             separators=(",", ":"))
        chunk._more_follows = more_follows
        return chunk

    @property
    def more_follows(self) -> bool:
        """True when the next chunk comes without waiting: the end of a stream is written in one piece."""
        return self._more_follows

    def model_dump_json(self, *args: Any, **kwargs: Any) -> str:  # noqa: ARG002 - same signature as pydantic's
        """The prebuilt payload, exactly."""
        return self._payload
