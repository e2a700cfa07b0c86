"""Haystack components of letta-hayhooks: one component per module."""

from components.agent_router import AgentRouter
from components.letta_chat_generator import LettaChatGenerator
from components.prompt_overlay import PromptOverlay
from components.session_resolver import SessionResolver
from components.stream_adapter import StreamAdapter
from components.tool_sync import ToolSync

__all__ = ["AgentRouter", "LettaChatGenerator", "PromptOverlay", "SessionResolver", "StreamAdapter", "ToolSync"]
