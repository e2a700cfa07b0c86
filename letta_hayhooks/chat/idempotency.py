"""
`Idempotency-Key` support: a retried request gets the outcome of the first one instead of a second turn.

Outcomes live in process memory for a bounded time; across processes the deterministic `otid`s of the forwarded
messages let the session resolver recognise a turn Letta already has.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from letta_hayhooks.errors import OpenAIError

# Long enough for client retries with back-off, short enough to keep memory bounded.
_TTL_SECONDS = 600.0
_MAX_ENTRIES = 2_000


class IdempotencyStore:
    """Shares one in-flight or finished outcome per key; failures are forgotten so a retry can run again."""

    def __init__(self, ttl: float = _TTL_SECONDS, max_entries: int = _MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, asyncio.Future, str]] = OrderedDict()

    def claim(self, key: str, fingerprint: str = "", *, reuse_finished: bool = True) -> tuple[bool, asyncio.Future]:
        """
        Claim `key` for a request whose body has the digest `fingerprint`.

        With `reuse_finished` off, only an attempt still running is shared: a finished one is replaced by this one.

        :returns: `(owner, future)`: the owner runs the turn and resolves the future; others await it.
        :raises OpenAIError: 422 `idempotency_key_reused` when the key was used for a different request.
        """
        now = time.monotonic()
        while self._entries:
            oldest_key, (stamp, _, _) = next(iter(self._entries.items()))
            if now - stamp < self.ttl and len(self._entries) < self.max_entries:
                break
            self._entries.pop(oldest_key)
        entry = self._entries.get(key)
        if entry is not None and entry[1].done() and not reuse_finished:
            del self._entries[key]
            entry = None
        if entry is not None:
            if entry[2] != fingerprint:
                # answering a different message with the first one's outcome would drop it silently
                msg = "This Idempotency-Key was already used for a different request; use a new key."
                raise OpenAIError(422, msg, type="invalid_request_error", code="idempotency_key_reused")
            return False, entry[1]
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._entries[key] = (now, future, fingerprint)
        return True, future

    def resolve(self, key: str, outcome: Any) -> None:
        """Record a successful outcome."""
        entry = self._entries.get(key)
        if entry is not None and not entry[1].done():
            entry[1].set_result(outcome)

    def fail(self, key: str, exc: BaseException) -> None:
        """Forget a failed attempt (waiters get the error, later retries run anew)."""
        entry = self._entries.get(key)
        if entry is None or entry[1].done():
            return  # unknown, or already settled: a success stays recorded
        del self._entries[key]
        entry[1].set_exception(exc)
        entry[1].exception()  # mark retrieved: nobody may be waiting
