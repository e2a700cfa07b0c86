"""
Shared fixtures: a real Letta server (started once per test session), agents, and letta-hayhooks servers.

The Letta server is Letta 0.16.8 on SQLite from the project's own kit, with the kit's scripted model behind it.
Nothing in the integration tests fakes Letta. The first run installs Letta's virtualenv (1-2 minutes).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from letta_client import Letta

from tests.support import harness
from tests.support.harness import ServerProcess
from letta_hayhooks.local.letta_server import STUB_EMBEDDING_HANDLE, STUB_MODEL_HANDLE, LocalLetta

# a failure whose traceback pytest cannot format (a CPython 3.11.7 bug) is reported, never aborts the run
pytest_plugins = ["pytester", "tests.report_guard"]

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "false")
os.environ.setdefault("HAYSTACK_DESERIALIZATION_ALLOWLIST", "letta_hayhooks.components.*")


def isolate_cli_config(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the CLI's config dir at `directory` and drop the client variables of the outside shell."""
    monkeypatch.setenv("LETTA_HAYHOOKS_CLI_CONFIG_DIR", str(directory))
    monkeypatch.delenv("LETTA_HAYHOOKS_URL", raising=False)
    monkeypatch.delenv("LETTA_HAYHOOKS_API_KEY", raising=False)
    return directory


def load_events(name: str) -> list[dict]:
    """A recorded Letta event sequence (one JSON object per line) from tests/fixtures/letta_events."""
    path = FIXTURES / "letta_events" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Backend:
    """The running Letta server and its scripted model."""

    letta: LocalLetta
    client: Letta
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    @property
    def base_url(self) -> str:
        return self.letta.base_url

    def model_requests(self) -> list[dict]:
        """What Letta sent to the model, oldest first (the last 50)."""
        with urllib.request.urlopen(f"{self.letta.stub_url}/_stub/requests", timeout=5) as response:
            return json.load(response)

    def create_agent(self, name: str | None = None, *, unique: bool = True, **kwargs) -> object:
        """A fresh agent on the scripted model; `name` gets a run suffix unless `unique=False`."""
        name = name or "agent"
        if unique:
            name = f"{name}-{self.run_id}-{uuid.uuid4().hex[:4]}"
        params = {
            "model": STUB_MODEL_HANDLE,
            "embedding": STUB_EMBEDDING_HANDLE,
            "context_window_limit": 128000,
            "memory_blocks": [
                {"label": "persona", "value": f"PERSONA-MARK of {name}"},
                {"label": "human", "value": "unknown"},
            ],
        }
        params.update(kwargs)
        return self.client.agents.create(name=name, **params)


@pytest.fixture(scope="session")
def letta_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A real Letta server for the whole test session (its own data directory, free loopback ports)."""
    with harness.scripted_letta(tmp_path_factory.mktemp("letta-home")) as letta:
        yield Backend(letta=letta, client=Letta(base_url=letta.base_url, timeout=60, max_retries=0))


Server = ServerProcess  # a letta-hayhooks server process (url, v1, log(), stop())


def start_server(
    backend_url: str, log_dir: Path, *, command: str = "app", extra_env: dict[str, str] | None = None,
    ready_path: str = "/healthz",
) -> Server:
    """Start `letta-hayhooks serve` (command="app") or `hayhooks run` (command="hayhooks") from the repo root."""
    # agents appear within a second, so tests need not wait for the 30 s refresh
    env = {"LETTA_HAYHOOKS_REFRESH_INTERVAL": "1", **(extra_env or {})}
    return harness.start_server("hayhooks" if command == "hayhooks" else "serve", backend_url, log_dir, cwd=ROOT,
                                extra_env=env, ready_path=ready_path)


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Start extra servers (custom settings); all are stopped at the end of the session."""
    started: list[Server] = []
    log_dir = tmp_path_factory.mktemp("server-logs")

    def make(backend_url: str, **kwargs) -> Server:
        server = start_server(backend_url, log_dir, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(letta_backend: Backend, server_factory: Callable[..., Server]) -> Server:
    """The letta-hayhooks server (default settings, the sessions view on) against the test Letta."""
    return server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_SESSIONS_ROUTE": "1"})


@pytest.fixture(scope="module")
def agent(request: pytest.FixtureRequest, letta_backend: Backend, server: Server):
    """A fresh agent for one test module (named after it), already served by `server`."""
    created = letta_backend.create_agent(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_"))
    wait_for_model(server.url, created.name)
    return created


def wait_for_model(base_url: str, model: str, timeout: float = 15.0, headers: dict | None = None) -> None:
    """Wait until `model` is listed by a server's /v1/models."""
    try:
        harness.wait_for_models(base_url, [model], timeout=timeout, headers=headers)
    except TimeoutError as exc:
        raise AssertionError(f"model {model} never appeared on {base_url}") from exc


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault suite's figures when it ran."""
    module = sys.modules.get("tests.integration.test_faults")
    if module is None or not module.FIGURES["requests"]:
        return
    terminalreporter.section("fault suite figures")
    for name, value in module.FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")
