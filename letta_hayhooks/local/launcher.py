"""
Local mode: no `LETTA_BASE_URL`, so letta-hayhooks brings its own Letta server.

It installs Letta 0.16.8 into its own virtualenv on first use, starts it on SQLite with its data in the per-user
data directory, makes sure a `demo` agent exists, and hands the proxy its URL. A provider key (`OPENAI_API_KEY`)
makes the local Letta use that provider; without one, the kit's scripted model answers and the banner says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
from letta_client import Letta
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from letta_hayhooks import __version__
from letta_hayhooks.local.letta_server import (
    LETTA_VERSION,
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
    proxy_url: str | None = None
    letta_version: str | None = None


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
        raw = json.loads(path.read_text())
        known = {field.name for field in fields(LocalState)}
        return LocalState(**{key: value for key, value in raw.items() if key in known})  # older or newer files
    except (OSError, ValueError, TypeError, AttributeError):
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


def _get_json(url: str, headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    try:
        response = httpx.get(url, headers=headers, timeout=2.0)
        return response.json() if response.status_code in (200, 503) else None
    except (httpx.HTTPError, ValueError):
        return None


def _served_models(proxy_url: str) -> list[str] | None:
    # the chat client's key variable: /v1/models needs a key when the server requires them
    key = os.environ.get("LETTA_HAYHOOKS_API_KEY")
    listing = _get_json(f"{proxy_url}/v1/models", {"Authorization": f"Bearer {key}"} if key else None)
    if not listing or not isinstance(listing.get("data"), list):
        return None
    return [str(model.get("id")) for model in listing["data"] if isinstance(model, dict)]


def status(settings: Settings, *, probe: bool = True) -> dict[str, Any]:
    """
    What local mode runs (or ran), from the state file in the data directory: the proxy's and Letta's URLs, ports,
    versions and PIDs, the model, and (`probe`) what the running proxy serves.
    """
    data_dir = data_dir_for(settings)
    state = read_state(data_dir)
    local = is_local_mode(settings)
    info: dict[str, Any] = {
        "mode": "local" if local else f"remote (LETTA_BASE_URL={settings.letta_base_url})",
        "data_dir": str(data_dir),
        "state_file": str(data_dir / STATE_FILE) if state is not None else None,
        "letta_hayhooks_version": __version__,
    }
    if state is None:
        info.update({"running": False, "letta_url": None if local else settings.letta_base_url})
    else:
        proxy_alive = pid_alive(state.proxy_pid)
        info.update({
            "running": pid_alive(state.letta_pid),
            "proxy_url": state.proxy_url,
            "proxy_port": int(state.proxy_url.rsplit(":", 1)[1]) if state.proxy_url else None,
            "proxy_pid": state.proxy_pid,
            "proxy_pid_alive": proxy_alive,
            "letta_url": state.letta_url,
            "letta_port": state.letta_port,
            "letta_version": state.letta_version,
            "letta_pid": state.letta_pid,
            "letta_pid_alive": pid_alive(state.letta_pid),
            "scripted_model_pid": state.stub_pid,
            "model": state.model,
            "scripted_model": state.scripted,
            "started_at": datetime.fromtimestamp(state.started_at, UTC).isoformat(timespec="seconds")
            if state.started_at else None,
        })
        if probe and proxy_alive and state.proxy_url:
            health = _get_json(f"{state.proxy_url}/health") or {}
            info["letta_version"] = (health.get("letta") or {}).get("version") or state.letta_version
            info["served_models"] = _served_models(state.proxy_url)
    info["hint"] = (f"looked in {data_dir}; set LETTA_HAYHOOKS_DATA_DIR to look at another data directory "
                    "(the one the server was started with)")
    return info


def _stamped(message: str) -> str:
    return f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')} local mode: {message}"


class _PlainProgress:
    """Progress on an output that is not a terminal (a log file): one timestamped line per step, not a spinner."""

    def __init__(self, message: str, stream: TextIO) -> None:
        self._last = ""
        self._stream = stream
        self.update(message)

    def update(self, message: str) -> None:
        if message != self._last:
            self._last = message
            print(_stamped(message), file=self._stream, flush=True)


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

    def _say(self, markup: str) -> None:
        """A line for the user: styled on a terminal, plain and timestamped in a log."""
        if self.console.is_terminal:
            self.console.print(markup)
        else:
            print(_stamped(Text.from_markup(markup).plain), file=self.console.file, flush=True)

    @contextlib.contextmanager
    def _progress(self, message: str) -> Iterator[Any]:
        if self.console.is_terminal:
            with self.console.status(message) as spinner:
                yield spinner
        else:  # a spinner shows nothing in a log file
            yield _PlainProgress(message, self.console.file)

    def start(self, proxy_port: int, proxy_url: str | None = None) -> LocalState:
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
            with self._progress("Installing the local Letta server (first run, about 2 minutes)") as spinner:
                venv.install(progress=lambda msg: spinner.update(f"Installing the local Letta server: {msg}"))
            if venv.ours:
                self._say(f"[green]Installed Letta into {venv.path} in {time.monotonic() - started:.0f} s")
            else:
                self._say(f"[green]Using the Letta {venv.letta_version()} in {venv.path}")
        provider, self.model, embedding = self._provider()
        stub_port = self._stub_port() if provider is None else 0
        self.letta = LocalLetta(home=self.data_dir / "letta-home", venv=venv,
                                letta_port=self.settings.local_letta_port, stub_port=stub_port,
                                provider_env=provider)
        with self._progress("Starting the local Letta server") as spinner:
            self.letta.start(progress=lambda msg: spinner.update(msg.capitalize()))
            spinner.update("Preparing the demo agent")
            self._ensure_demo_agent(embedding)
        state = LocalState(
            letta_url=self.letta.base_url, data_dir=str(self.data_dir), model=self.model,
            scripted=self.letta.scripted, letta_port=self.letta.letta_port, stub_port=self.letta.stub_port,
            letta_pid=self.letta.letta_process.pid if self.letta.letta_process else None,
            stub_pid=self.letta.stub_process.pid if self.letta.stub_process else None,
            proxy_pid=os.getpid(), started_at=time.time(),
            proxy_url=proxy_url or f"http://localhost:{proxy_port}",
            # our own install has the pinned version; asking another venv's python costs seconds, once
            letta_version=LETTA_VERSION if venv.ours else venv.letta_version(),
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
        if self.console.is_terminal:
            self.console.print(Panel("\n".join(lines), title="letta-hayhooks (local mode)", expand=False))
        else:
            for line in lines:
                self._say(line)

    def stop(self) -> None:
        """Stop what this run started, by PID."""
        if self.letta is not None:
            self.letta.stop()
            self.letta = None
        state = read_state(self.data_dir)
        if state is not None and state.proxy_pid == os.getpid():
            state.letta_pid = state.stub_pid = state.proxy_pid = None
            (self.data_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
