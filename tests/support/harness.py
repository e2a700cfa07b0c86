"""
Starting the real thing for the test suite and the benchmarks: a Letta server with the kit's scripted model, and
letta-hayhooks server processes (`letta-hayhooks serve` or `hayhooks run`) in front of it.

Everything runs on free loopback ports, writes its output to a log file, is waited for until it answers, and is
stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from letta_hayhooks.local.letta_server import (
    LettaVenv,
    LocalLetta,
    default_data_dir,
    default_venv_dir,
    free_port,
    terminate,
)
from tests.support.topology import Topology, TopologyKit, default_kit_dir
from letta_hayhooks.settings import Settings, load_settings

BIN = Path(sys.executable).parent
# what each kind of server runs; host and port are appended
COMMANDS = {
    "serve": [str(BIN / "letta-hayhooks"), "serve"],
    "hayhooks": [str(BIN / "hayhooks"), "run"],
}


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def letta_venv(settings: Settings | None = None, *, install: bool = True) -> LettaVenv:
    """
    The Letta virtualenv local mode uses (the `letta_venv` and `data_dir` settings), installed on first use
    (1-2 minutes) unless `install` is false.
    """
    settings = settings or load_settings()
    venv = LettaVenv(default_venv_dir(settings.letta_venv, settings.data_dir))
    if install and not venv.installed():
        _say(f"installing the Letta server into {venv.path} (first run only, 1-2 minutes)")
        venv.install(progress=lambda msg: _say(f"  {msg}"))
    return venv


@contextlib.contextmanager
def scripted_letta(home: Path, *, stub_env: Mapping[str, str] | None = None, venv: LettaVenv | None = None,
                   timeout: float = 240.0) -> Iterator[LocalLetta]:
    """A Letta server with the scripted model, its data in `home`, stopped at the end."""
    letta = LocalLetta(home=home, venv=venv or letta_venv(), stub_env=dict(stub_env or {}))
    letta.start(timeout=timeout)
    try:
        yield letta
    finally:
        letta.stop()


def topology_kit(settings: Settings | None = None, venv: LettaVenv | None = None) -> TopologyKit:
    """The production-like topology's packages (Postgres, Redis, Letta's migrations), installed on first use."""
    settings = settings or load_settings()
    venv = venv or letta_venv(settings)
    kit = TopologyKit(default_kit_dir(default_data_dir(settings.data_dir)))
    if not kit.installed():
        _say(f"installing PostgreSQL, Redis and Letta's migrations into {kit.path} (first run only, about a minute)")
        kit.install(venv, progress=lambda msg: _say(f"  {msg}"))
    return kit


@contextlib.contextmanager
def scripted_topology(home: Path, *, letta_servers: int = 2, redis: bool = True,
                      stub_env: Mapping[str, str] | None = None, timeout: float = 240.0) -> Iterator[Topology]:
    """
    Postgres with pgvector, Redis (unless `redis` is false) and `letta_servers` Letta servers on that one database,
    with the scripted model, their data in `home` and a temporary directory; all stopped by PID at the end.
    """
    venv = letta_venv()
    topology = Topology(home=home, venv=venv, kit=topology_kit(venv=venv), letta_servers=letta_servers, redis=redis,
                        stub_env=dict(stub_env or {}))
    topology.start(timeout=timeout, progress=lambda msg: _say(f"topology: {msg}"))
    try:
        yield topology
    finally:
        topology.stop()


@dataclass
class ServerProcess:
    """A letta-hayhooks server process: `serve` (the production server) or `hayhooks run`."""

    kind: str
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def v1(self) -> str:
        """The OpenAI API root."""
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def stop(self) -> None:
        terminate(self.process, grace=15.0)


def environ_without(*prefixes: str) -> dict[str, str]:
    """The process environment without the variables that start with any of `prefixes`."""
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}


def start_server(kind: str, letta_url: str | None, log_dir: Path, *, cwd: Path,
                 base_env: Mapping[str, str] | None = None, extra_env: Mapping[str, str] | None = None,
                 ready_path: str = "/healthz", timeout: float = 60.0, port: int | None = None) -> ServerProcess:
    """
    Start a server (`kind` "serve" or "hayhooks") on loopback (`port`, or a free one) in `cwd`, with `base_env`
    (default: this process' environment), the settings every test and benchmark server needs, and `extra_env` on
    top; return it once `ready_path` answers 200. `letta_url` None leaves LETTA_BASE_URL out (local mode). The log
    is appended to, so a server restarted on the same port keeps one log.

    :raises RuntimeError: with the end of the server's log when it exits or does not answer in `timeout` seconds.
    """
    port = port or free_port()
    env = {
        **(os.environ if base_env is None else base_env),
        "HAYHOOKS_HOST": "127.0.0.1",
        "HAYHOOKS_PORT": str(port),
        "HAYSTACK_TELEMETRY_ENABLED": "false",
        "HAYHOOKS_STARTUP_DEPLOY_STRATEGY": "sequential",
        # `hayhooks run` imports this project's components from the checkout
        "HAYHOOKS_ADDITIONAL_PYTHON_PATH": str(cwd),
        **({"LETTA_BASE_URL": letta_url} if letta_url is not None else {}),
        **(extra_env or {}),
    }
    log_path = log_dir / f"{kind}-{port}.log"
    process = subprocess.Popen([*COMMANDS[kind], "--host", "127.0.0.1", "--port", str(port)], cwd=cwd, env=env,
                               stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    server = ServerProcess(kind=kind, url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    wait_ready(server, ready_path, timeout)
    return server


def wait_ready(server: ServerProcess, ready_path: str = "/healthz", timeout: float = 60.0) -> ServerProcess:
    """
    Wait until `ready_path` answers 200.

    :raises RuntimeError: when the server exits first, or (the server is stopped then) after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            msg = f"{server.kind} exited early (code {server.process.returncode}):\n{server.log_tail()}"
            raise RuntimeError(msg)
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + ready_path, timeout=2).status_code == 200:
                return server
        time.sleep(0.2)
    server.stop()
    msg = f"{server.kind} did not answer {ready_path} within {timeout:.0f} s:\n{server.log_tail()}"
    raise RuntimeError(msg)


def wait_for_models(base_url: str, models: Sequence[str], *, timeout: float = 60.0,
                    headers: Mapping[str, str] | None = None) -> None:
    """
    Wait until the server's /v1/models lists every one of `models`.

    :raises TimeoutError: naming the models still missing.
    """
    deadline = time.monotonic() + timeout
    missing = set(models)
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            response = httpx.get(f"{base_url}/v1/models", headers=dict(headers or {}), timeout=5)
            if response.status_code == 200:
                missing = set(models) - {m["id"] for m in response.json()["data"]}
                if not missing:
                    return
        time.sleep(0.2)
    msg = f"{base_url} never listed {sorted(missing)}"
    raise TimeoutError(msg)
