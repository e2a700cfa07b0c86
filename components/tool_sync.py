"""
OpenAI tools become Letta client-side tools for one request; `role: "tool"` results go back as tool returns.
"""

from __future__ import annotations

import json
from typing import Any

from haystack import component, logging

from letta_hayhooks.errors import from_letta_exception, invalid_request
from letta_hayhooks.letta_access.component_base import LettaComponent
from letta_hayhooks.letta_access.conversations import pending_tool_calls, recent_messages
from letta_hayhooks.openai_request import ReadOnlyList, message_text

logger = logging.getLogger(__name__)

# Recent history read to find the agent's pending tool calls.
_PENDING_WINDOW = 20


def tool_result_is_error(message: dict[str, Any]) -> bool:
    """
    Whether an OpenAI `role: "tool"` message reports a failure.

    Markers understood: `"is_error": true` or `"status": "error"` on the message, content that is a JSON object with
    an `"error"` key, or text starting with `Error:`.
    """
    if message.get("is_error") is True or message.get("status") == "error":
        return True
    text = message_text(message.get("content")).strip()
    if text.lower().startswith("error:"):
        return True
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return False
        return isinstance(parsed, dict) and parsed.get("error") not in (None, False, "")
    return False


@component
class ToolSync(LettaComponent):
    """
    Maps OpenAI `tools` to Letta client tools and `role: "tool"` results to a Letta approval with tool returns.

    Takes the validated `tools` (`{name, description, parameters}`), `tool_choice` (`auto` / `none`), the trailing
    OpenAI `tool_results`, the session's Letta `messages`, the `agent_id` and `conversation_id`. Gives
    `client_tools` (for this request only; nothing is registered on the server and no agent is changed) and the
    final Letta `messages`: the approval carrying the tool returns first, then any new user messages. A result for
    a tool call the agent is not waiting on raises a 400.

    ### Usage example
    ```python
    sync = ToolSync(base_url="http://localhost:8283")
    out = await sync.run_async(tools=[{"name": "get_weather", "description": "", "parameters": {...}}],
                               tool_choice="auto", tool_results=[], messages=[...], agent_id="agent-...",
                               conversation_id="conv-...")
    out["client_tools"]
    ```
    """

    @component.output_types(client_tools=list[dict[str, Any]], messages=list[dict[str, Any]])
    async def run_async(
        self,
        tools: list[dict[str, Any]],
        tool_choice: str,
        tool_results: list[dict[str, Any]],
        messages: list[dict[str, Any]],
        agent_id: str,
        conversation_id: str,
        seeded: bool = False,
    ) -> dict[str, Any]:
        """
        Build the client tools and the final Letta messages.

        :param tools: Validated client tools (`{name, description, parameters}`).
        :param tool_choice: `auto` or `none`.
        :param tool_results: Trailing OpenAI `role: "tool"` messages.
        :param messages: Letta messages of the new turn (user messages).
        :param agent_id: The Letta agent.
        :param conversation_id: The session's conversation.
        :param seeded: The conversation was seeded with the transcript as text (tool results went in as text too).
        :returns: `client_tools` and the final Letta `messages`.
        :raises OpenAIError: 400 when a tool result answers no pending call.
        """
        client_tools = ReadOnlyList() if tool_choice == "none" else ReadOnlyList(tools)
        if not tool_results or seeded:
            return {"client_tools": client_tools, "messages": messages}
        pending = await self._pending(agent_id, conversation_id)
        returns = []
        seen: set[str] = set()
        for result in tool_results:
            call_id = result["tool_call_id"]
            if call_id not in pending or call_id in seen:
                msg = (f"tool_call_id '{call_id}' does not match a tool call the agent is waiting for "
                       "(unknown or already answered).")
                raise invalid_request(msg, param="messages", code="unknown_tool_call_id")
            seen.add(call_id)
            returns.append({
                "type": "tool",
                "tool_call_id": call_id,
                "tool_return": message_text(result.get("content")),
                "status": "error" if tool_result_is_error(result) else "success",
            })
        missing = set(pending) - seen
        if missing:
            logger.info("Tool calls {missing} get no result in this request", missing=sorted(missing))
        approval = {"type": "approval", "approvals": returns}
        return {"client_tools": client_tools, "messages": [approval, *messages]}

    async def _pending(self, agent_id: str, conversation_id: str) -> dict[str, str]:
        try:
            history = await recent_messages(self.client, agent_id, conversation_id, _PENDING_WINDOW)
        except Exception as exc:
            raise from_letta_exception(exc) from exc
        return pending_tool_calls(history)
