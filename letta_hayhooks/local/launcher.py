"""
Local mode: no `LETTA_BASE_URL`, so letta-hayhooks brings its own Letta server.

It installs Letta 0.16.8 into its own virtualenv on first use, starts it on SQLite with its data in the per-user
data directory, makes sure a `demo` agent exists, and hands the proxy its URL. A provider key (`OPENAI_API_KEY`)
makes the local Letta use that provider; without one, the kit's scripted model answers and the banner says so.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from letta_client import Letta
from rich.console import Console
from rich.panel import Panel

from letta_hayhooks.local.letta_server import (
    STUB_EMBEDDING_HANDLE,
    STUB_MODEL_HANDLE,
    LettaVenv,
    LocalLetta,
    LocalLettaError,
    default_data_dir,
    default_venv_dir,
    free_port,
    port_in_use,
)
from letta_hayhooks.settings import Settings

DEMO_AGENT = "demo"
DEFAULT_OPENAI_MODEL = "openai/gpt-4o-mini"
DEFAULT_OPENAI_EMBEDDING = "openai/text-embedding-3-small"
STATE_FILE = "local-mode.json"
_PROVIDER_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL")


@dataclass
class LocalState:
    """What local mode runs, written to the data directory for `letta-hayhooks status`."""

    letta_url: str
    data_dir: str
    model: str
    scripted: bool
    letta_port: int
    stub_port: int
    letta_pid: int | None = None
    stub_pid: int | None = None
    proxy_pid: int | None = None
    started_at: float = 0.0


def is_local_mode(settings: Settings) -> bool:
    """Local mode applies when `LETTA_BASE_URL` was set neither in the environment nor in `.env`."""
    return "letta_base_url" not in settings.model_fields_set


def data_dir_for(settings: Settings) -> Path:
    """The data directory local mode uses."""
    return default_data_dir(settings.data_dir)


def read_state(data_dir: Path) -> LocalState | None:
    """The state the last local-mode start wrote, if any."""
    path = data_dir / STATE_FILE
    try:
        return LocalState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def pid_alive(pid: int | None) -> bool:
    """True when a process with this PID exists."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def status(settings: Settings) -> dict[str, Any]:
    """What local mode runs (or ran): Letta URL, data dir, model, and which processes are alive."""
    data_dir = data_dir_for(settings)
    state = read_state(data_dir)
    if state is None:
        return {"mode": "local" if is_local_mode(settings) else "remote", "data_dir": str(data_dir),
                "running": False, "letta_url": None if is_local_mode(settings) else settings.letta_base_url}
    return {
        "mode": "local" if is_local_mode(settings) else "remote",
        "data_dir": state.data_dir,
        "letta_url": state.letta_url,
        "model": state.model,
        "scripted_model": state.scripted,
        "running": pid_alive(state.letta_pid),
        "letta_pid_alive": pid_alive(state.letta_pid),
        "proxy_pid_alive": pid_alive(state.proxy_pid),
    }


class LocalMode:
    """Starts and stops the local Letta server around the proxy."""

    def __init__(self, settings: Settings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console(stderr=True)
        self.data_dir = data_dir_for(settings)
        self.letta: LocalLetta | None = None
        self.model = ""

    def _provider(self) -> tuple[dict[str, str] | None, str, str]:
        if os.environ.get("OPENAI_API_KEY"):
            provider = {name: os.environ[name] for name in _PROVIDER_VARS if os.environ.get(name)}
            return provider, self.settings.local_model or DEFAULT_OPENAI_MODEL, DEFAULT_OPENAI_EMBEDDING
        return None, STUB_MODEL_HANDLE, STUB_EMBEDDING_HANDLE

    def _check_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            probe = self.data_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            msg = f"the data directory {self.data_dir} is not writable ({exc.strerror or exc}); " \
                  "set LETTA_HAYHOOKS_DATA_DIR to a writable directory"
            raise LocalLettaError(msg) from None

    def _stub_port(self) -> int:
        # agents remember their model endpoint: the scripted model keeps its port across runs
        previous = read_state(self.data_dir)
        if previous is not None and previous.stub_port:
            return previous.stub_port
        preferred = self.settings.local_letta_port + 16
        return preferred if not port_in_use(preferred) else free_port()

    def start(self, proxy_port: int) -> LocalState:
        """
        Install (first run) and start Letta, then make sure the demo agent exists.

        :raises LocalLettaError: with a one-line reason for every expected failure.
        """
        self._check_data_dir()
        if port_in_use(proxy_port):
            msg = f"port {proxy_port} is already in use (choose another with --port or HAYHOOKS_PORT)"
            raise LocalLettaError(msg)
        if port_in_use(self.settings.local_letta_port):
            msg = (f"port {self.settings.local_letta_port} is already in use; stop what runs there or set "
                   "LETTA_HAYHOOKS_LOCAL_LETTA_PORT")
            raise LocalLettaError(msg)
        venv = LettaVenv(default_venv_dir(self.settings.letta_venv, self.data_dir))
        if not venv.installed():
            started = time.monotonic()
            with self.console.status("Installing the local Letta server (first run, about 2 minutes)") as spinner:
                venv.install(progress=lambda msg: spinner.update(f"Installing the local Letta server: {msg}"))
            if venv.ours:
                self.console.print(f"[green]Installed Letta into {venv.path} in {time.monotonic() - started:.0f} s")
            else:
                self.console.print(f"[green]Using the Letta {venv.letta_version()} in {venv.path}")
        provider, self.model, embedding = self._provider()
        stub_port = self._stub_port() if provider is None else 0
        self.letta = LocalLetta(home=self.data_dir / "letta-home", venv=venv,
                                letta_port=self.settings.local_letta_port, stub_port=stub_port,
                                provider_env=provider)
        with self.console.status("Starting the local Letta server") as spinner:
            self.letta.start(progress=lambda msg: spinner.update(msg.capitalize()))
            spinner.update("Preparing the demo agent")
            self._ensure_demo_agent(embedding)
        state = LocalState(
            letta_url=self.letta.base_url, data_dir=str(self.data_dir), model=self.model,
            scripted=self.letta.scripted, letta_port=self.letta.letta_port, stub_port=self.letta.stub_port,
            letta_pid=self.letta.letta_process.pid if self.letta.letta_process else None,
            stub_pid=self.letta.stub_process.pid if self.letta.stub_process else None,
            proxy_pid=os.getpid(), started_at=time.time(),
        )
        (self.data_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
        return state

    def _ensure_demo_agent(self, embedding: str) -> None:
        assert self.letta is not None
        client = Letta(base_url=self.letta.base_url, timeout=60, max_retries=2)
        if client.agents.list(name=DEMO_AGENT, limit=1).items:
            return
        client.agents.create(
            name=DEMO_AGENT,
            model=self.model,
            embedding=embedding,
            context_window_limit=128000 if self.letta.scripted else None,
            memory_blocks=[
                {"label": "persona", "value": "I am demo, a friendly Letta agent served through letta-hayhooks."},
                {"label": "human", "value": "Nothing known about the user yet."},
            ],
        )

    def banner(self, state: LocalState, proxy_url: str) -> None:
        """Tell the user what runs where."""
        lines = [
            f"OpenAI-compatible API: [bold]{proxy_url}/v1[/]   (model: [bold]{DEMO_AGENT}[/] and any other agent)",
            f"Local Letta server:    {state.letta_url}",
            f"Data directory:        {state.data_dir}",
            f"Model:                 {state.model}",
        ]
        if state.scripted:
            lines.append("[yellow]No provider key is set (OPENAI_API_KEY): answers come from a SCRIPTED model, "
                         "not an LLM (\"You said: ...\").[/]")
        lines.append("Ctrl-C stops the proxy and the local Letta server.")
        self.console.print(Panel("\n".join(lines), title="letta-hayhooks (local mode)", expand=False))

    def stop(self) -> None:
        """Stop what this run started, by PID."""
        if self.letta is not None:
            self.letta.stop()
            self.letta = None
        state = read_state(self.data_dir)
        if state is not None and state.proxy_pid == os.getpid():
            state.letta_pid = state.stub_pid = state.proxy_pid = None
            (self.data_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
