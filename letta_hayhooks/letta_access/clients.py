"""
How to reach Letta, and letta-client instances built for it.

Nothing here is cached process-wide: each owner (a pipeline component, the agent catalogue, the operator views)
builds its own client from a `LettaConnection` and closes it when it shuts down. Message POSTs are never retried by
the client (`max_retries=0`): a retried POST could add a second turn. Reads go through the same clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from letta_client import AsyncLetta, DefaultAsyncHttpxClient, Letta


@dataclass(frozen=True)
class LettaConnection:
    """Where Letta is and how to reach it."""

    base_url: str
    api_key: str | None = None
    project: str | None = None
    timeout: float = 300.0
    connect_timeout: float = 5.0

    @classmethod
    def from_settings(cls, settings: Any) -> LettaConnection:
        """The connection a `Settings` object describes."""
        return cls(settings.letta_base_url, settings.letta_api_key, settings.letta_project, settings.letta_timeout,
                   settings.letta_connect_timeout)

    def _kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "api_key": self.api_key,
            "project": self.project,
            "timeout": httpx.Timeout(self.timeout, connect=self.connect_timeout),
            "max_retries": 0,
        }

    def __repr__(self) -> str:
        # never show the API key (dataclass reprs end up in logs and tracebacks)
        return f"LettaConnection(base_url={self.base_url!r}, project={self.project!r})"

    def async_client(self) -> AsyncLetta:
        """A new async client with its own connection pool; the caller closes it (`await client.close()`)."""
        # more pooled connections than letta-client's 100: turns in flight plus streams still being drained
        http_client = DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))
        return AsyncLetta(**self._kwargs(), http_client=http_client)

    def sync_client(self) -> Letta:
        """A new blocking client (background threads, start-up); the caller closes it (`client.close()`)."""
        return Letta(**self._kwargs())
