"""
Every served Letta agent as a model in Hayhooks' registry, kept in step with Letta by a background refresh.

Each agent gets its own `AgentWrapper` (a Hayhooks pipeline wrapper with its own Haystack pipeline), registered
under the agent's advertised model id, so Hayhooks' built-in `/v1/models` lists it and `/v1/chat/completions`
answers for it. Agents created later are added and deleted ones removed without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import types
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from fastapi_openai_compat import ChatCompletion, Response
from hayhooks import BasePipelineWrapper, log
from hayhooks.server.pipelines.registry import registry as hayhooks_registry
from hayhooks.server.utils.module_loader import create_pipeline_wrapper_instance
from haystack.dataclasses import StreamingChunk
from starlette.datastructures import Headers

from letta_hayhooks.chat.pipeline import close_pipeline
from letta_hayhooks.chat.service import AgentChat, SharedState, http_error, reply_chunks
from letta_hayhooks.errors import OpenAIError, describe_exception, invalid_request, model_not_found
from letta_hayhooks.letta_access.catalog import AgentCatalog, AgentInfo, CatalogFilter
from letta_hayhooks.letta_access.clients import LettaConnection
from letta_hayhooks.openai_responses import (
    ResponseEncoder,
    encode_all,
    item_reference,
    parse_request,
    response_id_for,
    to_chat,
)
from letta_hayhooks.server.access import Agent, may_reach
from letta_hayhooks.settings import Settings, get_settings
from letta_hayhooks.tenants import Tenant

# Garbage collection of stale system-prompt blocks runs at most this often.
_GC_INTERVAL_SECONDS = 3600.0
# Hayhooks registers the folder's own wrapper after its setup() returns; watch for it this long.
_STARTUP_POLL_SECONDS = 30.0


def agent_model_object(info: AgentInfo) -> dict[str, Any]:
    """An agent as an OpenAI model object."""
    return {
        "id": info.model_id,
        "object": "model",
        "created": info.created,  # the agent's creation time, not the time of the request
        "owned_by": "letta",
        "name": info.name,
        "letta_agent_id": info.id,
        # what this model answers on (the openai SDKs read neither; it tells people and tools the Responses API works)
        "supported_endpoints": ["/v1/chat/completions", "/v1/responses"],
    }


class AgentWrapper(BasePipelineWrapper):
    """The Hayhooks wrapper of one Letta agent: a thin shell around its `AgentChat` (see `wrapper_for`)."""

    skip_mcp = True
    skip_a2a = True
    chat: AgentChat

    def setup(self) -> None:
        """The pipeline is built with the chat (one per agent)."""
        self.pipeline = self.chat.pipeline

    async def run_chat_completion_async(
        self, model: str, messages: list[dict], body: dict, headers: Headers | None = None
    ) -> ChatCompletion | AsyncGenerator:
        """Answer a chat completion for this agent (stream or not)."""
        return await self.chat.complete(model, messages, body, headers)

    async def run_response_async(
        self, model: str, input_items: list[dict], body: dict, headers: Headers | None = None
    ) -> Response | AsyncGenerator:
        """
        Answer a Responses request on Hayhooks' stock route (plain `hayhooks run`).

        That route builds the stream's events itself, under its own response id, from text and reasoning chunks, with
        no usage and no `sequence_number`, and it wraps errors in `{"detail": ...}`; a non-stream answer is returned
        whole (this server's id, output items, usage). It stores nothing, so `previous_response_id`, `conversation`
        and references to earlier items are refused here: the `letta-hayhooks` server serves them (server/responses.py).
        """
        del input_items  # the body carries the same input
        try:
            return await _stock_response(self.chat, model, body, headers)
        except OpenAIError as error:
            raise http_error(error) from None


def wrapper_for(chat: AgentChat) -> AgentWrapper:
    """
    The agent's wrapper, made the way Hayhooks makes a pipeline folder's: its loader instantiates the module's
    `PipelineWrapper`, runs `setup()` and records which run methods the class implements.
    """
    module = types.ModuleType(f"letta_agent_{chat.agent_id}")
    module.PipelineWrapper = type("PipelineWrapper", (AgentWrapper,), {"chat": chat})  # type: ignore[attr-defined]
    return create_pipeline_wrapper_instance(module)  # type: ignore[return-value]


async def _stock_response(
    chat: AgentChat, model: str, body: dict[str, Any], headers: Headers | None
) -> Response | AsyncGenerator:
    parsed = parse_request(body)
    if parsed.previous_response_id or parsed.conversation:
        msg = ("'previous_response_id' and 'conversation' need the letta-hayhooks server (`letta-hayhooks serve`): "
               "under plain `hayhooks run` send the whole history (chat identity finds the conversation).")
        raise invalid_request(msg, param="previous_response_id" if parsed.previous_response_id else "conversation")
    refs = [item_reference(ref) for ref in parsed.references]
    if any(ref is None or ref[0] != "rs" for ref in refs):
        msg = "Item references need the letta-hayhooks server (`letta-hayhooks serve`); send the items themselves."
        raise invalid_request(msg, param="input", code="invalid_item_reference")
    parsed.items = [item for item in parsed.items if item.get("type") != "item_reference"]
    turn_input = to_chat(parsed, body)
    turn = await chat.start_turn(model, turn_input.messages, turn_input.body, headers,
                                 request_id=f"resp-{uuid.uuid4().hex}")
    if not parsed.stream:
        assert turn.reply is not None
        encoder = ResponseEncoder(response_id_for((turn.reply.meta or {}).get("run_id")), model, parsed.echo)
        return Response(**encode_all(encoder, reply_chunks(turn.reply)))

    async def chunks() -> AsyncGenerator[StreamingChunk, None]:
        async for chunk in turn.stream():
            # the stock route turns text and reasoning into events; the run id and the end are its own business
            if chunk.content or chunk.reasoning is not None or chunk.tool_calls:
                yield chunk

    return chunks()


class AgentModels:
    """Keeps the registry's agent models equal to the agent catalogue."""

    def __init__(self, settings: Settings, registry: Any = hayhooks_registry) -> None:
        self.settings = settings
        self.registry = registry
        self.shared = SharedState(settings)
        self.connection = LettaConnection.from_settings(settings)
        self.catalog = AgentCatalog.shared(
            self.connection,
            CatalogFilter(tuple(settings.agent_tags), settings.agent_name_regex, settings.hide_sleeptime_agents),
            settings.refresh_interval,
        )
        self.wrappers: dict[str, AgentWrapper] = {}
        self._retired: list[AgentWrapper] = []  # removed from the registry; their clients close at shutdown
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._hidden: list[tuple[str, Any]] = []
        self._last_gc = 0.0

    # ---- registry
    def apply(self) -> None:
        """Add, replace and remove registry entries so they match the catalogue."""
        with self._lock:
            wanted: dict[str, AgentInfo] = dict(self.catalog.agents)
            for model_id, wrapper in list(self.wrappers.items()):
                info = wanted.get(model_id)
                if info is None or info.id != wrapper.chat.agent_id:
                    self.registry.remove(model_id)
                    del self.wrappers[model_id]
                    self._retired.append(wrapper)  # a turn may still be running on it
                    log.info("Model '{}' removed (agent gone or renamed)", model_id)
            for model_id, info in wanted.items():
                if model_id in self.wrappers:
                    continue
                if self.registry.get(model_id) is not None:
                    log.warning("Model id '{}' is taken by another pipeline; agent {} not served", model_id, info.id)
                    continue
                wrapper = wrapper_for(AgentChat(self.settings, info.id, model_id, self.shared))
                self.registry.add(model_id, wrapper, metadata={"letta_agent_id": info.id, "created": info.created})
                self.wrappers[model_id] = wrapper
                log.info("Model '{}' -> Letta agent {}", model_id, info.id)
            self._remove_hidden()

    async def resolve(self, model: str, tenant: Tenant | None) -> str:
        """
        The registered model id that serves `model`: an advertised id, a raw agent id, or an agent created since the
        last refresh (registered from now on).

        :raises OpenAIError: 404 `model_not_found`, also for a model the key may not use (as if it did not exist).
        """
        name = model
        if model not in self.wrappers and self.registry.get(model) is None:
            try:
                info = await self.catalog.resolve(model)
            except OpenAIError:
                raise model_not_found(model) from None
            self.apply()
            name = info.model_id
            if name not in self.wrappers:
                raise model_not_found(model)
        if not may_reach(tenant, Agent(self.subject(name))):
            log.info("Key '{}' may not use model '{}'", tenant.name if tenant else "-", name)
            raise model_not_found(model)
        return name

    def chat_for(self, name: str) -> AgentChat | None:
        """The agent chat registered under `name`; None for another pipeline."""
        wrapper = self.wrappers.get(name)
        return wrapper.chat if wrapper is not None else None

    # ---- model objects (what /v1/models shows)
    def model_objects(self, tenant: Tenant | None = None) -> list[dict[str, Any]]:
        """
        Every registered model `tenant` may use, in the registry's order, as OpenAI model objects (see
        `model_object`); every model without a tenant (no API keys configured).
        """
        objects = [self.model_object(name, tenant) for name in self.registry.get_names()]
        return [obj for obj in objects if obj is not None]

    def model_object(self, name: str, tenant: Tenant | None = None) -> dict[str, Any] | None:
        """
        One registered model as an OpenAI model object; None when nothing is registered under `name` or `tenant` may
        not use it (the same answer, so a key cannot tell another key's agents from absent ones).

        An agent shows its creation time, its name and `letta_agent_id`; another pipeline someone deployed next to
        the agents shows as Hayhooks' (with `created` 0: Hayhooks does not know when it was deployed).
        """
        info = self.subject(name)
        if not may_reach(tenant, Agent(info)):
            return None
        if name in self.wrappers:
            return agent_model_object(info)
        return {"id": name, "object": "model", "created": 0, "owned_by": "hayhooks", "name": name}

    def subject(self, name: str) -> AgentInfo | None:
        """What a key's agent patterns are matched against for a registered model; None when none is registered."""
        wrapper = self.wrappers.get(name)
        if wrapper is not None:
            # the catalogue may have dropped the agent a moment before the registry does (then no tags: fail closed)
            return self.catalog.by_id.get(wrapper.chat.agent_id) or AgentInfo(wrapper.chat.agent_id, name, name)
        if self.registry.get(name) is None:
            return None
        return AgentInfo(name, name, name)  # another pipeline: matched by its name

    def refresh(self) -> bool:
        """Refresh the catalogue from Letta (blocking) and apply it; False when Letta could not be listed."""
        ok = self.catalog.refresh()
        if ok:
            self.apply()
        return ok

    def hide(self, name: str, wrapper: Any) -> None:
        """Keep a non-agent pipeline (the folder's own wrapper) out of the model list once it is registered."""
        with self._lock:
            self._hidden.append((name, wrapper))
            self._remove_hidden()
        # Hayhooks registers a wrapper right after its setup() returns, on the event loop during start-up (sequential
        # deploy): a callback on that loop runs before the first request is served. The refresh thread's polling
        # covers the other cases (a parallel deploy calls setup() in a worker thread).
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_soon(self._remove_hidden_locked)

    def _remove_hidden_locked(self) -> None:
        with self._lock:
            self._remove_hidden()

    def _remove_hidden(self) -> None:
        for name, wrapper in list(self._hidden):
            if self.registry.get(name) is wrapper:
                self.registry.remove(name)
                self._hidden.remove((name, wrapper))

    # ---- background refresh
    def start(self) -> None:
        """Refresh now, then keep refreshing in a daemon thread every `refresh_interval` seconds."""
        if self._thread is not None:
            return
        if not self.refresh():
            log.warning("Letta is not reachable at start-up; models appear once it answers ({})",
                        self.catalog.last_error)
        self._thread = threading.Thread(target=self._loop, name="letta-hayhooks-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background refresh."""
        self._stop.set()

    async def close(self) -> None:
        """Stop refreshing and release every Letta client (server shutdown)."""
        self.stop()
        with self._lock:
            wrappers = [*self.wrappers.values(), *self._retired]
            self._retired.clear()
        for wrapper in wrappers:
            await close_pipeline(wrapper.chat.pipeline)
        await self.catalog.close()

    def _loop(self) -> None:
        started = time.monotonic()
        next_refresh = started + self.settings.refresh_interval
        while True:
            # poll briefly at first so the folder wrapper leaves the model list right after Hayhooks registers it
            startup = time.monotonic() - started < _STARTUP_POLL_SECONDS
            timeout = 0.1 if startup else max(0.05, next_refresh - time.monotonic())
            if self._stop.wait(timeout):
                return
            self._remove_hidden_locked()
            if time.monotonic() >= next_refresh:
                self.refresh()
                next_refresh = time.monotonic() + self.settings.refresh_interval
                if time.time() - self._last_gc > _GC_INTERVAL_SECONDS:
                    self._last_gc = time.time()
                    self.collect_garbage()

    def collect_garbage(self) -> int:
        """
        Delete system-prompt blocks unused for longer than the overlay TTL, archived branches past their TTL (when
        set), and spare conversations a stopped process left behind; returns how many.
        """
        from letta_hayhooks.letta_access.spare_conversations import delete_stale_spares  # noqa: PLC0415
        from letta_hayhooks.server.maintenance import (  # noqa: PLC0415 - only needed hourly
            delete_stale_branches,
            delete_stale_overlays,
        )

        try:
            deleted = delete_stale_overlays(self.catalog.sync_client, self.settings.overlay_ttl_hours * 3600)
            if self.settings.branch_ttl_hours > 0:
                deleted += delete_stale_branches(self.catalog.sync_client, self.settings.branch_ttl_hours * 3600)
            return deleted + delete_stale_spares(self.catalog.sync_client)
        except Exception as exc:  # noqa: BLE001 - retried next hour
            log.warning("Overlay garbage collection failed: {}", describe_exception(exc))
            return 0


_DEFAULT: AgentModels | None = None
_DEFAULT_SETTINGS: Settings | None = None
_DEFAULT_LOCK = threading.Lock()


def use_settings(settings: Settings) -> None:
    """The settings the process-wide `AgentModels` is built with (the server app passes its own)."""
    global _DEFAULT_SETTINGS  # noqa: PLW0603 - one registry per process, like Hayhooks' own
    _DEFAULT_SETTINGS = settings


def default_models() -> AgentModels:
    """The process-wide `AgentModels`, started on first use."""
    global _DEFAULT  # noqa: PLW0603 - one registry per process, like Hayhooks' own
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = AgentModels(_DEFAULT_SETTINGS or get_settings())
            _DEFAULT.start()
        return _DEFAULT
