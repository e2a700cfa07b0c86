"""
One agent's Haystack pipeline: router -> session -> overlay -> tool_sync -> generator -> adapter, recorder.

Every component gets its configuration from `Settings` here, the Letta API key included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from haystack import Pipeline
from haystack.utils import Secret

from letta_hayhooks.chat.acyclic_pipeline import AcyclicPipeline
from letta_hayhooks.chat_identity import ChatHeads
from letta_hayhooks.components import (
    AgentRouter,
    ChatRecorder,
    LettaChatGenerator,
    PromptOverlay,
    SessionResolver,
    StreamAdapter,
    ToolSync,
)
from letta_hayhooks.components.prompt_overlay import CompiledPrompts
from letta_hayhooks.letta_access.spare_conversations import SpareConversations
from letta_hayhooks.settings import Settings


@dataclass
class AgentPipeline:
    """
    The pipeline and what it shares with its runner: compiled prompts, chat heads, and the agent's spare
    conversation (refilled after each turn, so making it never slows the turn that took the last one).
    """

    pipeline: Pipeline
    compiled_prompts: CompiledPrompts
    heads: ChatHeads = field(default_factory=ChatHeads)
    spares: SpareConversations = field(default_factory=SpareConversations)


def build_agent_pipeline(settings: Settings) -> AgentPipeline:
    """One agent's pipeline, configured from `settings`."""
    api = {
        "base_url": settings.letta_base_url,
        "api_key": Secret.from_token(settings.letta_api_key) if settings.letta_api_key else None,
        "project": settings.letta_project,
        "timeout": settings.letta_timeout,
        "connect_timeout": settings.letta_connect_timeout,
    }
    compiled_prompts = CompiledPrompts(settings.prompt_cache_seconds)
    heads = ChatHeads()
    spares = SpareConversations()
    pipeline = AcyclicPipeline()  # an acyclic graph run once per turn: no general scheduler needed
    pipeline.add_component(
        "router",
        AgentRouter(
            **api,
            tags=settings.agent_tags,
            name_regex=settings.agent_name_regex,
            hide_sleeptime=settings.hide_sleeptime_agents,
            refresh_interval=settings.refresh_interval,
        ),
    )
    pipeline.add_component("session", SessionResolver(**api, heads=heads, spares=spares))
    pipeline.add_component(
        "overlay",
        PromptOverlay(**api, enabled=settings.overlay_enabled, prompt_cache_seconds=settings.prompt_cache_seconds,
                      compiled_prompts=compiled_prompts),
    )
    pipeline.add_component("tool_sync", ToolSync(**api))
    pipeline.add_component("generator", LettaChatGenerator(**api, stream_tokens=settings.stream_tokens))
    pipeline.add_component("adapter", StreamAdapter(think_tags=settings.think_tags))
    pipeline.add_component("recorder", ChatRecorder(**api, heads=heads))
    for receiver in ("session", "overlay", "tool_sync", "generator"):
        pipeline.connect("router.agent_id", f"{receiver}.agent_id")
    pipeline.connect("router.agent_type", "generator.agent_type")
    for receiver in ("overlay", "tool_sync", "generator"):
        pipeline.connect("session.conversation_id", f"{receiver}.conversation_id")
    for receiver in ("overlay", "generator"):
        pipeline.connect("session.ephemeral", f"{receiver}.ephemeral")
    pipeline.connect("session.seeded", "tool_sync.seeded")
    pipeline.connect("session.session_scope", "overlay.session_scope")
    pipeline.connect("session.fresh_scope", "overlay.fresh_scope")
    pipeline.connect("session.messages", "tool_sync.messages")
    pipeline.connect("session.replay", "generator.replay")
    pipeline.connect("overlay.override_system", "generator.override_system")
    pipeline.connect("tool_sync.client_tools", "generator.client_tools")
    pipeline.connect("tool_sync.messages", "generator.messages")
    pipeline.connect("generator.replies", "adapter.replies")
    pipeline.connect("generator.replies", "recorder.replies")
    pipeline.connect("session.record", "recorder.record")
    return AgentPipeline(pipeline, compiled_prompts, heads, spares)


async def close_pipeline(pipeline: Pipeline) -> None:
    """Release the Letta clients of a pipeline's components."""
    for _name, instance in pipeline.walk():
        close = getattr(instance, "close", None)
        if close is not None:
            await close()
