"""
Exact OpenAI wire payloads through Hayhooks' own chat routes.

Hayhooks (fastapi-openai-compat) serialises every `ChatCompletion` an answer generator yields as
`data: <model_dump_json()>`. `WireChunk` is a `ChatCompletion` whose JSON is a payload we built ourselves, so the
stream carries OpenAI's exact chunk shape (role only on the first delta, no null noise), the error event
`{"error": {...}}`, and the closing `[DONE]`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi_openai_compat import ChatCompletion
from pydantic import PrivateAttr

DONE = "[DONE]"


class WireChunk(ChatCompletion):
    """A `ChatCompletion` that serialises to a prebuilt SSE payload."""

    _payload: str = PrivateAttr(default="")

    @classmethod
    def of(cls, payload: dict[str, Any] | str) -> WireChunk:
        """Wrap a chunk dict (or the literal `[DONE]`)."""
        chunk = cls(id="", object="chat.completion.chunk", created=0, model="", choices=[])
        chunk._payload = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False,
                                                                             separators=(",", ":"))
        return chunk

    @property
    def payload(self) -> str:
        """The serialised payload."""
        return self._payload

    def model_dump_json(self, *args: Any, **kwargs: Any) -> str:  # noqa: ARG002 - same signature as pydantic's
        """The prebuilt payload, exactly."""
        return self._payload
