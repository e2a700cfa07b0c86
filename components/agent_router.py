"""
Resolves a request's `model` to a Letta agent, from a cached catalogue of every agent on the server.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from haystack import component, default_from_dict, default_to_dict, logging
from haystack.utils import Secret, deserialize_secrets_inplace

from letta_hayhooks.errors import from_letta_exception, model_not_found
from letta_hayhooks.letta_access.clients import LettaConnection, all_items, all_items_async, async_client, sync_client

logger = logging.getLogger(__name__)

# Letta's list endpoint caps page sizes; 100 keeps each page cheap and the number of round trips small.
_PAGE_SIZE = 100
# A miss refreshes the catalogue, but never more often than this, so unknown-model spam can't hammer Letta.
_MIN_MISS_REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class AgentInfo:
    """One agent as the catalogue sees it."""

    id: str
    name: str
    model_id: str
    agent_type: str | None = None
    created: int = 0
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class CatalogFilter:
    """Which agents are served."""

    tags: tuple[str, ...] = ()
    name_regex: str | None = None
    hide_sleeptime: bool = True

    def accepts(self, name: str, agent_type: str | None, tags: tuple[str, ...]) -> bool:
        """True when an agent with these properties should be served."""
        if self.hide_sleeptime and (name.endswith("sleeptime") or agent_type == "sleeptime_agent"):
            return False
        if self.tags and not set(self.tags) & set(tags):
            return False
        return not (self.name_regex and not re.search(self.name_regex, name))


def advertise(agents: list[tuple[str, str, str | None, int, tuple[str, ...]]]) -> dict[str, AgentInfo]:
    """
    Give every agent its public model id: its name when unique and not another agent's id, else its id.

    :param agents: `(id, name, agent_type, created, tags)` tuples.
    :returns: model id -> `AgentInfo`.
    """
    ids = {agent_id for agent_id, *_ in agents}
    counts: dict[str, int] = {}
    for _, name, *_ in agents:
        counts[name] = counts.get(name, 0) + 1
    catalog: dict[str, AgentInfo] = {}
    for agent_id, name, agent_type, created, tags in agents:
        unique = bool(name) and counts[name] == 1 and name not in ids
        model_id = name if unique else agent_id
        catalog[model_id] = AgentInfo(agent_id, name, model_id, agent_type, created, tags)
    return catalog


@dataclass
class AgentCatalog:
    """
    Every served agent, refreshed from Letta on a TTL and on a miss.

    Thread-safe for the background refresher and request handlers; one instance per (connection, filter).
    """

    connection: LettaConnection
    filter: CatalogFilter = field(default_factory=CatalogFilter)
    ttl: float = 30.0
    agents: dict[str, AgentInfo] = field(default_factory=dict)
    by_id: dict[str, AgentInfo] = field(default_factory=dict)
    last_refresh: float | None = None
    last_attempt: float = 0.0
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _background: asyncio.Task | None = field(default=None, repr=False)

    @classmethod
    def shared(cls, connection: LettaConnection, agent_filter: CatalogFilter, ttl: float) -> AgentCatalog:
        """The process-wide catalogue for this backend and filter."""
        key = (connection, agent_filter)
        with _SHARED_LOCK:
            catalog = _SHARED.get(key)
            if catalog is None:
                catalog = cls(connection=connection, filter=agent_filter, ttl=ttl)
                _SHARED[key] = catalog
            catalog.ttl = min(catalog.ttl, ttl)
            return catalog

    @property
    def healthy(self) -> bool:
        """True when the last refresh attempt succeeded."""
        return self.last_refresh is not None and self.last_error is None

    def _store(self, rows: list[tuple[str, str, str | None, int, tuple[str, ...]]]) -> None:
        kept = [row for row in rows if self.filter.accepts(row[1], row[2], row[4])]
        agents = advertise(kept)
        with self._lock:
            self.agents = agents
            self.by_id = {info.id: info for info in agents.values()}
            self.last_refresh = time.time()
            self.last_error = None

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        logger.warning("Agent discovery failed: {error}", error=self.last_error)

    def refresh(self) -> bool:
        """Blocking refresh (background thread, start-up). Returns False when Letta could not be listed."""
        self.last_attempt = time.monotonic()
        try:
            rows = [_row(agent) for agent in all_items(sync_client(self.connection).agents.list, limit=_PAGE_SIZE)]
        except Exception as exc:  # noqa: BLE001 - any failure leaves the previous catalogue in place
            self._failed(exc)
            return False
        self._store(rows)
        return True

    async def refresh_async(self) -> bool:
        """Refresh from a request handler. Returns False when Letta could not be listed."""
        self.last_attempt = time.monotonic()
        try:
            agents = await all_items_async(async_client(self.connection).agents.list, limit=_PAGE_SIZE)
            rows = [_row(agent) for agent in agents]
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return False
        self._store(rows)
        return True

    def lookup(self, model: str) -> AgentInfo | None:
        """Resolve without touching Letta: an advertised model id or a raw agent id."""
        return self.agents.get(model) or self.by_id.get(model)

    async def resolve(self, model: str) -> AgentInfo:
        """
        Resolve `model`; a miss refreshes the catalogue once, a stale hit refreshes it in the background.

        :raises OpenAIError: 404 for an unknown model, 503 when Letta was never reachable.
        """
        info = self.lookup(model)
        if info is not None:
            stale = self.last_refresh is None or time.time() - self.last_refresh > self.ttl
            if stale and (self._background is None or self._background.done()):
                self._background = asyncio.create_task(self.refresh_async())
            return info
        if time.monotonic() - self.last_attempt >= _MIN_MISS_REFRESH_SECONDS:
            self.last_attempt = time.monotonic()
            refreshed = await self.refresh_async()
            if not refreshed and self.last_refresh is None:
                raise from_letta_exception(ConnectionError(self.last_error))
            info = self.lookup(model)
        if info is None:
            raise model_not_found(model)
        return info


_SHARED: dict[tuple, AgentCatalog] = {}
_SHARED_LOCK = threading.Lock()


def _row(agent: Any) -> tuple[str, str, str | None, int, tuple[str, ...]]:
    created = getattr(agent, "created_at", None)
    agent_type = getattr(agent, "agent_type", None)
    return (
        agent.id,
        agent.name or "",
        getattr(agent_type, "value", agent_type),
        int(created.timestamp()) if created else 0,
        tuple(getattr(agent, "tags", None) or ()),
    )


@component
class AgentRouter:
    """
    Resolves the OpenAI `model` of a request to a Letta agent.

    Takes `model` (an advertised model id or a raw agent id); gives `agent_id`, `agent_name` and `agent_type`.
    The catalogue lists every agent across pages, names each by its unique name (else its id), applies the
    optional tag / name-regex / sleeptime filters, and is cached for `refresh_interval` seconds with a refresh
    on a miss. An unknown model raises a 404 `model_not_found` error.

    ### Usage example
    ```python
    router = AgentRouter(base_url="http://localhost:8283")
    out = router.run(model="my-agent")
    out["agent_id"]  # "agent-..."
    ```
    """

    def __init__(
        self,
        base_url: str = "http://localhost:8283",
        api_key: Secret = Secret.from_env_var("LETTA_API_KEY", strict=False),
        *,
        project: str | None = None,
        timeout: float = 300.0,
        connect_timeout: float = 5.0,
        tags: list[str] | None = None,
        name_regex: str | None = None,
        hide_sleeptime: bool = True,
        refresh_interval: float = 30.0,
    ) -> None:
        """
        Create the router.

        :param base_url: The Letta server.
        :param api_key: Letta API key (optional for a self-hosted server).
        :param project: Letta Cloud project, if any.
        :param timeout: Read timeout for Letta calls, in seconds.
        :param connect_timeout: Connect timeout for Letta calls, in seconds.
        :param tags: Serve only agents carrying at least one of these tags.
        :param name_regex: Serve only agents whose name matches this regular expression.
        :param hide_sleeptime: Hide Letta's internal `*sleeptime` agents.
        :param refresh_interval: Catalogue TTL in seconds.
        """
        if name_regex:
            re.compile(name_regex)
        self.base_url = base_url
        self.api_key = api_key
        self.project = project
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.tags = tags or []
        self.name_regex = name_regex
        self.hide_sleeptime = hide_sleeptime
        self.refresh_interval = refresh_interval

    @property
    def connection(self) -> LettaConnection:
        """The Letta connection this router uses."""
        return LettaConnection(self.base_url, self.api_key.resolve_value(), self.project, self.timeout,
                               self.connect_timeout)

    @property
    def catalog(self) -> AgentCatalog:
        """The shared catalogue behind this router."""
        return AgentCatalog.shared(
            self.connection,
            CatalogFilter(tuple(self.tags), self.name_regex, self.hide_sleeptime),
            self.refresh_interval,
        )

    def to_dict(self) -> dict[str, Any]:
        """Serialize this component."""
        return default_to_dict(
            self,
            base_url=self.base_url,
            api_key=self.api_key,
            project=self.project,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            tags=self.tags,
            name_regex=self.name_regex,
            hide_sleeptime=self.hide_sleeptime,
            refresh_interval=self.refresh_interval,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentRouter:
        """Deserialize this component."""
        deserialize_secrets_inplace(data["init_parameters"], keys=["api_key"])
        return default_from_dict(cls, data)

    @component.output_types(agent_id=str, agent_name=str, agent_type=str)
    def run(self, model: str) -> dict[str, Any]:
        """
        Resolve `model` (blocking).

        :param model: Advertised model id or raw agent id.
        :returns: `agent_id`, `agent_name`, `agent_type`.
        :raises OpenAIError: 404 when no served agent matches.
        """
        catalog = self.catalog
        info = catalog.lookup(model)
        if info is None:
            catalog.refresh()
            info = catalog.lookup(model)
        if info is None:
            raise model_not_found(model)
        return {"agent_id": info.id, "agent_name": info.name, "agent_type": info.agent_type or ""}

    @component.output_types(agent_id=str, agent_name=str, agent_type=str)
    async def run_async(self, model: str) -> dict[str, Any]:
        """
        Resolve `model`.

        :param model: Advertised model id or raw agent id.
        :returns: `agent_id`, `agent_name`, `agent_type`.
        :raises OpenAIError: 404 when no served agent matches.
        """
        info = await self.catalog.resolve(model)
        return {"agent_id": info.id, "agent_name": info.name, "agent_type": info.agent_type or ""}


__all__ = ["AgentCatalog", "AgentInfo", "AgentRouter", "CatalogFilter", "advertise"]
