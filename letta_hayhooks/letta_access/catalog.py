"""
Every agent on the Letta server that this proxy serves, cached and refreshed: the model catalogue.

The catalogue owns its clients (a blocking one for the background refresh, an async one for request handlers); its
owner closes them (`close`).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from haystack import logging
from letta_client import AsyncLetta, Letta

from letta_hayhooks import telemetry
from letta_hayhooks.errors import describe_exception, from_letta_exception, model_not_found
from letta_hayhooks.letta_access.clients import LettaConnection
from letta_hayhooks.letta_access.paging import all_items, all_items_async

logger = logging.getLogger(__name__)

# Letta's list endpoint caps page sizes; 100 keeps each page cheap and the number of round trips small.
_PAGE_SIZE = 100
# Letta lists agents without their tags unless asked (tag filters and per-key tag policies need them).
_INCLUDE = ["agent.tags"]
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

    _sync_client: Letta | None = field(default=None, repr=False)
    _async_client: AsyncLetta | None = field(default=None, repr=False)

    @property
    def sync_client(self) -> Letta:
        """The blocking client of the background refresh."""
        if self._sync_client is None:
            self._sync_client = self.connection.sync_client()
        return self._sync_client

    @property
    def async_client(self) -> AsyncLetta:
        """The async client of request handlers."""
        if self._async_client is None:
            self._async_client = self.connection.async_client()
        return self._async_client

    async def close(self) -> None:
        """Release both clients."""
        sync, self._sync_client = self._sync_client, None
        client, self._async_client = self._async_client, None
        if sync is not None:
            sync.close()
        if client is not None:
            await client.close()

    def _store(self, rows: list[tuple[str, str, str | None, int, tuple[str, ...]]]) -> None:
        kept = [row for row in rows if self.filter.accepts(row[1], row[2], row[4])]
        agents = advertise(kept)
        with self._lock:
            self.agents = agents
            self.by_id = {info.id: info for info in agents.values()}
            self.last_refresh = time.time()
            self.last_error = None
        telemetry.catalog_refreshed(len(agents), self.last_refresh)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = describe_exception(exc)
        telemetry.catalog_refreshed(None, None)
        logger.warning("Agent discovery failed: {error}", error=self.last_error)

    def refresh(self) -> bool:
        """Blocking refresh (background thread, start-up). Returns False when Letta could not be listed."""
        self.last_attempt = time.monotonic()
        try:
            agents = all_items(self._raw_agents_page, limit=_PAGE_SIZE, include=_INCLUDE)
            rows = [_row(agent) for agent in agents]
        except Exception as exc:  # noqa: BLE001 - any failure leaves the previous catalogue in place
            self._failed(exc)
            return False
        self._store(rows)
        return True

    async def refresh_async(self) -> bool:
        """Refresh from a request handler. Returns False when Letta could not be listed."""
        self.last_attempt = time.monotonic()
        try:
            agents = await all_items_async(self._raw_agents_page_async, limit=_PAGE_SIZE, include=_INCLUDE)
            rows = [_row(agent) for agent in agents]
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return False
        self._store(rows)
        return True

    # The listing is read as plain JSON: letta-client's objects for a page of full agent states cost 9 ms of CPU for
    # 15 agents (a Python walk per field), held from the refresh thread every 30 s against the event loop's turns;
    # the catalogue needs five fields of each.
    def _raw_agents_page(self, **params: Any) -> list[dict[str, Any]]:
        return self.sync_client.agents.with_raw_response.list(**params).http_response.json()

    async def _raw_agents_page_async(self, **params: Any) -> list[dict[str, Any]]:
        return (await self.async_client.agents.with_raw_response.list(**params)).http_response.json()

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


def _row(agent: dict[str, Any]) -> tuple[str, str, str | None, int, tuple[str, ...]]:
    """The catalogue's fields of one agent of a raw listing."""
    created = agent.get("created_at")
    return (
        agent["id"],
        agent.get("name") or "",
        agent.get("agent_type"),
        int(datetime.fromisoformat(created).timestamp()) if created else 0,
        tuple(agent.get("tags") or ()),
    )
