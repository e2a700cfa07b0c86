"""
Shared fixtures: a real Letta server (started once per test session), agents, and letta-hayhooks servers.

The Letta server is Letta 0.16.8 on SQLite from the project's own kit, with the kit's scripted model behind it.
Nothing in the integration tests fakes Letta. The first run installs Letta's virtualenv (1-2 minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from letta_client import Letta

from letta_hayhooks.local.letta_server import (
    STUB_EMBEDDING_HANDLE,
    STUB_MODEL_HANDLE,
    LettaVenv,
    LocalLetta,
    free_port,
    terminate,
)

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
    venv = LettaVenv()
    if not venv.installed():
        print(f"\ninstalling the Letta server into {venv.path} (first run only)", file=sys.stderr)
        venv.install(progress=lambda msg: print(f"  {msg}", file=sys.stderr))
    letta = LocalLetta(home=tmp_path_factory.mktemp("letta-home"), venv=venv)
    letta.start(timeout=240)
    client = Letta(base_url=letta.base_url, timeout=60, max_retries=0)
    try:
        yield Backend(letta=letta, client=client)
    finally:
        letta.stop()


@dataclass
class Server:
    """A letta-hayhooks server process."""

    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.process, grace=15.0)


def start_server(
    backend_url: str, log_dir: Path, *, command: str = "app", extra_env: dict[str, str] | None = None,
    ready_path: str = "/healthz",
) -> Server:
    """Start `letta-hayhooks serve` (command="app") or `hayhooks run` (command="hayhooks") from the repo root."""
    port = free_port()
    env = {
        **os.environ,
        "LETTA_BASE_URL": backend_url,
        "HAYHOOKS_HOST": "127.0.0.1",
        "HAYHOOKS_PORT": str(port),
        "HAYSTACK_TELEMETRY_ENABLED": "false",
        "HAYHOOKS_STARTUP_DEPLOY_STRATEGY": "sequential",
        "HAYHOOKS_ADDITIONAL_PYTHON_PATH": str(ROOT),
        "LETTA_HAYHOOKS_REFRESH_INTERVAL": "1",
        **(extra_env or {}),
    }
    bin_dir = Path(sys.executable).parent
    if command == "hayhooks":
        cmd = [str(bin_dir / "hayhooks"), "run", "--host", "127.0.0.1", "--port", str(port)]
    else:
        cmd = [str(bin_dir / "letta-hayhooks"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    log_path = log_dir / f"{command}-{port}.log"
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    server = Server(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()[-3000:]}")
        try:
            if httpx.get(server.url + ready_path, timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not start:\n{server.log()[-3000:]}")


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{base_url}/v1/models", headers=headers, timeout=5)
        if response.status_code == 200 and model in {m["id"] for m in response.json()["data"]}:
            return
        time.sleep(0.2)
    raise AssertionError(f"model {model} never appeared on {base_url}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault suite's figures when it ran."""
    module = sys.modules.get("tests.integration.test_faults")
    if module is None or not module.FIGURES["requests"]:
        return
    terminalreporter.section("fault suite figures")
    for name, value in module.FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")
