"""
Shared letta-client instances.

One HTTP connection pool per (backend, credentials, event loop) instead of one per component or request. Message
POSTs are never retried by the client (`max_retries=0`): a retried POST could add a second turn. Reads are cheap
to retry and go through the same clients.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import httpx
from letta_client import AsyncLetta, DefaultAsyncHttpxClient, Letta

_LOCK = threading.Lock()
_ASYNC_CLIENTS: dict[tuple[LettaConnection, int], AsyncLetta] = {}
_SYNC_CLIENTS: dict[LettaConnection, Letta] = {}


@dataclass(frozen=True)
class LettaConnection:
    """Where Letta is and how to reach it."""

    base_url: str
    api_key: str | None = None
    project: str | None = None
    timeout: float = 300.0
    connect_timeout: float = 5.0

    def _kwargs(self) -> dict:
        return {
            "base_url": self.base_url,
            "api_key": self.api_key,
            "project": self.project,
            "timeout": httpx.Timeout(self.timeout, connect=self.connect_timeout),
            "max_retries": 0,
        }


def async_client(connection: LettaConnection) -> AsyncLetta:
    """The async client for `connection` on the running event loop (created on first use)."""
    try:
        loop_id = id(asyncio.get_running_loop())
    except RuntimeError:
        loop_id = 0
    key = (connection, loop_id)
    client = _ASYNC_CLIENTS.get(key)
    if client is None:
        with _LOCK:
            client = _ASYNC_CLIENTS.get(key)
            if client is None:
                # more pooled connections than letta-client's 100: turns in flight plus streams still being drained
                http_client = DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=512,
                                                                          max_keepalive_connections=64))
                client = AsyncLetta(**connection._kwargs(), http_client=http_client)
                _ASYNC_CLIENTS[key] = client
    return client


def sync_client(connection: LettaConnection) -> Letta:
    """The blocking client for `connection` (used by background threads and start-up)."""
    client = _SYNC_CLIENTS.get(connection)
    if client is None:
        with _LOCK:
            client = _SYNC_CLIENTS.get(connection)
            if client is None:
                client = Letta(**connection._kwargs())
                _SYNC_CLIENTS[connection] = client
    return client


# Pages are followed by cursor; a server that ignores the cursor must not make us loop forever.
_MAX_PAGES = 200


def all_items(list_page: Any, *, limit: int = 100, **params: Any) -> list[Any]:
    """Every item of a paginated list endpoint (blocking), following `after` cursors."""
    items: list[Any] = []
    seen: set[str] = set()
    after = None
    for _ in range(_MAX_PAGES):
        page = list_page(limit=limit, **({"after": after} if after else {}), **params)
        batch = [item for item in getattr(page, "items", page) if item.id not in seen]
        items.extend(batch)
        seen.update(item.id for item in batch)
        if len(batch) < limit:
            break
        after = batch[-1].id
    return items


async def all_items_async(list_page: Any, *, limit: int = 100, **params: Any) -> list[Any]:
    """Every item of a paginated list endpoint, following `after` cursors."""
    items: list[Any] = []
    seen: set[str] = set()
    after = None
    for _ in range(_MAX_PAGES):
        page = await list_page(limit=limit, **({"after": after} if after else {}), **params)
        batch = [item for item in getattr(page, "items", page) if item.id not in seen]
        items.extend(batch)
        seen.update(item.id for item in batch)
        if len(batch) < limit:
            break
        after = batch[-1].id
    return items
