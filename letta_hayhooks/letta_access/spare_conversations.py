"""
An empty Letta conversation made ahead of need, so a new chat or a branch does not wait for Letta to make one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from haystack import logging

from letta_hayhooks.letta_access.paging import all_items

logger = logging.getLogger(__name__)

# The summary of a spare: the maintenance job deletes those older than `SPARE_MAX_AGE_SECONDS * 4` (left behind by a
# process that did not stop cleanly); a process never hands out a spare half that old.
SPARE_PREFIX = "letta-hayhooks spare "
SPARE_MAX_AGE_SECONDS = 900.0


class SpareConversations:
    """
    One agent's spare conversation: `take` hands it out (and nothing when there is none), `refill` makes the next one
    once a turn is over, `close` deletes what is left.

    Making a conversation takes Letta 50 to 100 ms, and every new chat, branch (a regenerate, an edit) and throwaway
    conversation needs one. A spare is kept only for an agent that needed one before, only one, and never older than
    `max_age` (one left unused longer is deleted and made anew when next needed). It lives in this process alone: its
    summary names the process, and only this process hands it out.
    """

    def __init__(self, max_age: float = SPARE_MAX_AGE_SECONDS) -> None:
        self.max_age = max_age
        self.owner = uuid.uuid4().hex[:12]
        self._spare: tuple[str, float] | None = None  # (conversation id, made at)
        self._making: asyncio.Task | None = None
        self._wanted = False
        self._client: Any = None
        self._agent_id: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def take(self, client: Any, agent_id: str) -> str | None:
        """
        A spare conversation of the agent for the caller to use (its summary is the caller's to set); None when
        there is none ready, and the caller makes its own. Either way the next `refill` makes one.

        A spare still being made is awaited: it was started earlier than a conversation made now would be.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            return None  # a blocking `run` on a private loop: the spares belong to the server's loop
        self._loop, self._client, self._agent_id, self._wanted = loop, client, agent_id, True
        if self._making is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._making)
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        conversation_id, made = spare
        if time.monotonic() - made > self.max_age:
            self._delete_later(conversation_id)
            return None
        return conversation_id

    def refill(self) -> None:
        """After a turn: make the next spare in the background if one was taken (or missing) since the last."""
        if not self._wanted or self._spare is not None or self._making is not None or self._client is None:
            return
        try:
            if asyncio.get_running_loop() is not self._loop:
                return
        except RuntimeError:
            return
        self._wanted = False
        self._making = asyncio.get_running_loop().create_task(self._make())

    async def _make(self) -> None:
        try:
            made = await self._client.conversations.create(agent_id=self._agent_id, summary=SPARE_PREFIX + self.owner)
            self._spare = (made.id, time.monotonic())
        except Exception as exc:  # noqa: BLE001 - the next chat makes its own conversation
            logger.warning("A spare conversation could not be made: {error}", error=type(exc).__name__)
        finally:
            self._making = None

    def _delete_later(self, conversation_id: str) -> None:
        async def delete() -> None:
            with contextlib.suppress(Exception):
                await self._client.conversations.delete(conversation_id)

        _BACKGROUND.add(task := asyncio.get_running_loop().create_task(delete()))
        task.add_done_callback(_BACKGROUND.discard)

    async def close(self) -> None:
        """Delete the spare (the server is stopping)."""
        if self._making is not None:
            self._making.cancel()
            with contextlib.suppress(BaseException):
                await self._making
        spare, self._spare = self._spare, None
        if spare is not None and self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.conversations.delete(spare[0])


_BACKGROUND: set[asyncio.Task] = set()


def delete_stale_spares(client: Any, max_age_seconds: float = SPARE_MAX_AGE_SECONDS * 4) -> int:
    """Delete spare conversations older than `max_age_seconds` (left by a process that stopped without cleaning up)."""
    now = time.time()
    deleted = 0
    for conversation in all_items(client.conversations.list, summary_search=SPARE_PREFIX.strip()):
        if not (conversation.summary or "").startswith(SPARE_PREFIX):
            continue
        made = conversation.created_at
        if made is not None and now - made.timestamp() > max_age_seconds:
            client.conversations.delete(conversation.id)
            deleted += 1
    return deleted
