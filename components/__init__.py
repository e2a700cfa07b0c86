"""Haystack components of letta-hayhooks: one component per module."""

from letta_hayhooks.components.agent_router import AgentRouter
from letta_hayhooks.components.chat_recorder import ChatRecorder
from letta_hayhooks.components.letta_chat_generator import LettaChatGenerator
from letta_hayhooks.components.prompt_overlay import PromptOverlay
from letta_hayhooks.components.session_resolver import SessionResolver
from letta_hayhooks.components.stream_adapter import StreamAdapter
from letta_hayhooks.components.tool_sync import ToolSync

__all__ = [
    "AgentRouter",
    "ChatRecorder",
    "LettaChatGenerator",
    "PromptOverlay",
    "SessionResolver",
    "StreamAdapter",
    "ToolSync",
]
