"""
Which Letta conversation a call targets, sending a turn to it, and reading a conversation's recent history.

Letta addresses an agent's own thread as the conversation `"default"` plus the agent's id; every other conversation
by its id alone. That rule lives here, once.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from letta_client import AsyncLetta, omit

from letta_hayhooks.letta_access.paging import page_items

DEFAULT_CONVERSATION = "default"


def agent_param(agent_id: str, conversation_id: str) -> Any:
    """The `agent_id` argument of a conversation call: the agent for its default thread, omitted otherwise."""
    return agent_id if conversation_id == DEFAULT_CONVERSATION else omit


async def open_turn_stream(
    client: AsyncLetta,
    agent_id: str,
    conversation_id: str,
    messages: list[dict[str, Any]],
    *,
    stream_tokens: bool,
    include_pings: bool,
    client_tools: list[dict[str, Any]] | None = None,
    override_system: str | None = None,
) -> httpx.Response:
    """
    Send a turn (`POST /v1/conversations/{id}/messages`, streaming) and return Letta's SSE response, open: read it
    with `aiter_lines()`, close it with `aclose()`.

    The request goes through letta-client's method for custom requests, with letta-client's base URL, headers,
    timeouts and errors (`APIStatusError` and the rest, as from `messages.create`). The typed `create` would first
    walk the body through its type-driven transform, half of letta-client's cost of the call (0.14 ms a turn); this
    body is in Letta's JSON shape already. `streaming` with the raw response also keeps the connection: the typed
    stream closes the response at [DONE] without reading its end, which drops it.
    """
    body: dict[str, Any] = {"messages": messages, "streaming": True, "stream_tokens": stream_tokens,
                            "include_pings": include_pings}
    if conversation_id == DEFAULT_CONVERSATION:
        body["agent_id"] = agent_id
    if client_tools:
        body["client_tools"] = client_tools
    if override_system:
        body["override_system"] = override_system
    return await client.post(f"/v1/conversations/{quote(conversation_id, safe='')}/messages", cast_to=httpx.Response,
                             body=body, stream=True)


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def chronological(items: list[Any], *, assume_ascending: bool) -> list[Any]:
    """Messages in time order, whichever order the server returned them in."""
    if len(items) < 2:
        return list(items)
    first, last = _field(items[0], "date"), _field(items[-1], "date")
    if first is not None and last is not None and first != last:
        return list(items) if first < last else list(reversed(items))
    return list(items) if assume_ascending else list(reversed(items))


async def recent_messages(client: AsyncLetta, agent_id: str, conversation_id: str, limit: int) -> list[dict[str, Any]]:
    """The last `limit` messages of a conversation as JSON dicts, oldest first."""
    page = await client.conversations.messages.list(
        conversation_id, agent_id=agent_param(agent_id, conversation_id), order="desc", limit=limit
    )
    history = [m.model_dump(mode="json") for m in page_items(page)]
    # the default thread's listing ignores `order` on some Letta versions: dates decide, else its own order
    return chronological(history, assume_ascending=conversation_id == DEFAULT_CONVERSATION)


def pending_tool_calls(history: list[dict[str, Any]]) -> dict[str, str]:
    """Tool call id -> name of the approval requests that no later message answered."""
    pending: dict[str, str] = {}
    for message in history:
        kind = message.get("message_type")
        if kind == "approval_request_message":
            calls = message.get("tool_calls")
            calls = calls if isinstance(calls, list) and calls else [message.get("tool_call")]
            for call in calls:
                if call and call.get("tool_call_id"):
                    pending[call["tool_call_id"]] = call.get("name") or ""
        elif kind in ("approval_response_message", "user_message", "tool_return_message"):
            if kind == "tool_return_message":
                pending.pop(message.get("tool_call_id"), None)
            else:
                pending.clear()
    return pending
