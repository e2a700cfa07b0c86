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


class _Pages:
    """The state of one walk over a paginated list: the items so far and the cursor of the next page."""

    def __init__(self, limit: int, params: dict[str, Any]) -> None:
        self.limit = limit
        self.params = params
        self.items: list[Any] = []
        self.seen: set[str] = set()
        self.after: str | None = None

    def request(self) -> dict[str, Any]:
        """The arguments of the next page's call."""
        return {"limit": self.limit, **({"after": self.after} if self.after else {}), **self.params}

    def take(self, page: Any) -> bool:
        """Keep a page's new items; True when another page may follow."""
        batch = [item for item in getattr(page, "items", page) if item.id not in self.seen]
        self.items.extend(batch)
        self.seen.update(item.id for item in batch)
        if len(batch) < self.limit:
            return False
        self.after = batch[-1].id
        return True


def all_items(list_page: Any, *, limit: int = 100, **params: Any) -> list[Any]:
    """Every item of a paginated list endpoint (blocking), following `after` cursors."""
    pages = _Pages(limit, params)
    for _ in range(_MAX_PAGES):
        if not pages.take(list_page(**pages.request())):
            break
    return pages.items


async def all_items_async(list_page: Any, *, limit: int = 100, **params: Any) -> list[Any]:
    """Every item of a paginated list endpoint, following `after` cursors."""
    pages = _Pages(limit, params)
    for _ in range(_MAX_PAGES):
        if not pages.take(await list_page(**pages.request())):
            break
    return pages.items
