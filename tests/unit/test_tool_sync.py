"""Tool results: error markers and the calls the agent is waiting for."""

from __future__ import annotations

import json

import pytest

from letta_hayhooks.components import ToolSync
from letta_hayhooks.components.tool_sync import tool_result_is_error
from letta_hayhooks.letta_access.conversations import pending_tool_calls
from tests.conftest import load_events


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"content": "Sunny"}, False),
        ({"content": "Error: city not found"}, True),
        ({"content": "error: lower case"}, True),
        ({"content": json.dumps({"error": "boom"})}, True),
        ({"content": json.dumps({"error": None, "value": 1})}, False),
        ({"content": "{not json"}, False),
        ({"content": "fine", "is_error": True}, True),
        ({"content": [{"type": "text", "text": "Error: in parts"}]}, True),
    ],
)
def test_error_markers(message: dict, error: bool) -> None:
    assert tool_result_is_error(message) is error


def test_pending_calls_from_history() -> None:
    request = [e for e in load_events("parallel_tools_steps") if e["message_type"] == "approval_request_message"]
    pending = pending_tool_calls([{"message_type": "user_message"}, *request])
    assert list(pending.values()) == ["get_weather", "get_time"]
    answered = pending_tool_calls([*request, {"message_type": "approval_response_message"}])
    assert answered == {}


async def test_tool_choice_none_drops_tools_without_touching_letta() -> None:
    tools = [{"name": "f", "description": "", "parameters": {"type": "object"}}]
    sync = ToolSync(base_url="http://127.0.0.1:9")  # nothing listens there: no call may be made
    out = await sync.run_async(tools=tools, tool_choice="none", tool_results=[], messages=[{"role": "user"}],
                               agent_id="a", conversation_id="c")
    assert out == {"client_tools": [], "messages": [{"role": "user"}]}
    out = await sync.run_async(tools=tools, tool_choice="auto", tool_results=[], messages=[], agent_id="a",
                               conversation_id="c")
    assert out["client_tools"] == tools
