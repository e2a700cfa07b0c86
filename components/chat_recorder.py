"""
Moves a chat's head once its answer is known, so the chat's next request finds its conversation again.
"""

from __future__ import annotations

from typing import Any

from haystack import component, logging
from haystack.dataclasses import ChatMessage

from letta_hayhooks.chat_identity import ChatHeads, reply_message, step
from letta_hayhooks.components.session_resolver import ChatRecord, chat_summary, session_description
from letta_hayhooks.errors import describe_exception
from letta_hayhooks.letta_access.component_base import LettaComponent

logger = logging.getLogger(__name__)


@component
class ChatRecorder(LettaComponent):
    """
    Records a chat's new head in Letta after its turn was answered.

    Takes the generator's `replies` and the session resolver's `record` (the conversation, the digest of the
    transcript that led to this answer, the head it replaces); gives `head`: the digest of the history the client
    now shows (transcript plus this answer), or None when there is nothing to record (the agent's default thread, a
    throwaway conversation, a replayed answer). A keyless chat's head goes into its conversation's summary, where the
    next request of the chat finds it (`summary_search`) from any proxy process; a keyed session's into its
    description. If the write fails, the chat's next request starts a branch instead of continuing: nothing is lost.

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
        try:
            if record.kind == "chat":
                await self.client.conversations.update(record.conversation_id,
                                                       summary=chat_summary(record.scope, record.prev, head))
            else:
                await self.client.conversations.update(record.conversation_id,
                                                       description=session_description(record.prev, head))
        except Exception as exc:  # noqa: BLE001 - the chat's next request branches instead: nothing is lost
            logger.warning("Could not record the head of conversation {conversation_id}: {error}",
                           conversation_id=record.conversation_id, error=describe_exception(exc))
            return {"head": None}
        if record.kind == "chat":
            self.heads.moved(record.scope, record.conversation_id, record.old_head, head)
        else:
            self.heads.session_moved(record.scope, record.conversation_id, head)
        return {"head": head}
