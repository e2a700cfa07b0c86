"""
Moves a chat's head once its answer is known, so the chat's next request finds its conversation again.
"""

from __future__ import annotations

import asyncio
from typing import Any

from haystack import component, logging
from haystack.dataclasses import ChatMessage

from letta_hayhooks.chat_identity import TURN_PROGRESS, ChatHeads, reached, reply_message, step
from letta_hayhooks.components.session_resolver import ChatRecord, chat_summary, session_summary
from letta_hayhooks.errors import describe_exception
from letta_hayhooks.letta_access.component_base import LettaComponent

logger = logging.getLogger(__name__)

# Head writes still running (kept referenced until they finish).
_WRITING: set[asyncio.Task] = set()


@component
class ChatRecorder(LettaComponent):
    """
    Records a chat's new head in Letta after its turn was answered.

    Takes the generator's `replies` and the session resolver's `record` (the conversation, the digest of the
    transcript that led to this answer, the head it replaces); gives `head`: the digest of the history the client
    now shows (transcript plus this answer), or None when there is nothing to record (the agent's default thread, a
    throwaway conversation, a replayed answer). A keyless chat's head goes into its conversation's summary, where the
    next request of the chat finds it (`summary_search`) from any proxy process; a keyed session's after its key
    in its summary (in the background: this process knows the new head at once). If the write fails, another process
    would start a branch for the chat's next request instead of continuing it: nothing is lost.

    ### Usage example
    ```python
    recorder = ChatRecorder(base_url="http://localhost:8283")
    out = await recorder.run_async(replies=[reply], record=record)
    out["head"]
    ```
    """

    def __init__(self, *, heads: ChatHeads | None = None, **connection: Any) -> None:
        """
        Create the recorder.

        :param heads: This process's cache of chat heads, shared with the session resolver (not serialised).
        :param connection: Where Letta is (`base_url`, `api_key`, `project`, `timeout`, `connect_timeout`), as in
            `LettaComponent`.
        """
        LettaComponent.__init__(self, **connection)  # Haystack rebuilds the class: no bare super()
        self.heads = heads or ChatHeads()

    @component.output_types(head=str | None)
    async def run_async(self, replies: list[ChatMessage], record: ChatRecord | None = None) -> dict[str, Any]:
        """
        Record the head after the answer.

        :param replies: The generator's replies (one assistant message).
        :param record: The session resolver's record of the turn, or None.
        :returns: `{"head": str | None}`.
        """
        if record is None or not replies:
            return {"head": None}
        reply = replies[0]
        head = step(record.prev, reply_message(reply.text, [{"id": call.id} for call in reply.tool_calls]))
        # this process knows the new head at once; Letta's copy (for other processes and restarts) is written in the
        # background, so the answer does not wait for it
        if record.kind == "chat":
            self.heads.moved(record.scope, record.conversation_id, record.old_head, head, first=record.first)
        else:
            self.heads.session_moved(record.scope, record.conversation_id, head)
        progress = TURN_PROGRESS.get()
        task = asyncio.get_running_loop().create_task(self._write(record, head, progress and progress.delivered))
        _WRITING.add(task)
        task.add_done_callback(_WRITING.discard)
        self.heads.writing(record.scope, task)
        return {"head": head}

    async def _write(self, record: ChatRecord, head: str, delivered: asyncio.Event | None) -> None:
        try:
            await reached(delivered)  # after the answer's last byte, not in its way
            await self.heads.named(record.conversation_id)  # a taken spare's first summary must not land after this
            if record.kind == "chat":
                await self.client.conversations.update(record.conversation_id,
                                                       summary=chat_summary(record.scope, record.prev, head))
            else:
                summary = session_summary(record.scope, record.session_key or "", record.prev, head)
                await self.client.conversations.update(record.conversation_id, summary=summary)
        except Exception as exc:  # noqa: BLE001 - another process then branches instead of continuing: nothing lost
            logger.warning("Could not record the head of conversation {conversation_id}: {error}",
                           conversation_id=record.conversation_id, error=describe_exception(exc))
