"""
Unit tests of the test and benchmark harness (`tests.support.harness`) with a tiny stand-in server process:
the environment a server gets, waiting for readiness, the errors when it exits or never answers, stopping by PID,
waiting for models, and which Letta virtualenv the settings select.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from tests.support import harness
from letta_hayhooks.local.letta_server import free_port
from letta_hayhooks.settings import Settings

# Answers /healthz with its environment and cwd, /v1/models with MODELS; BEHAVIOUR=exit or mute misbehaves.
FAKE_SERVER = """
import http.server, json, os, sys
if os.environ.get("BEHAVIOUR") == "exit":
    print("boom: bad configuration", flush=True)
    sys.exit(3)
port = int(sys.argv[sys.argv.index("--port") + 1])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if os.environ.get("BEHAVIOUR") == "mute":
            self.send_response(503)
            self.end_headers()
            return
        if self.path == "/healthz":
            body = {"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv[1:]}
        else:
            body = {"data": [{"id": name} for name in os.environ.get("MODELS", "").split(",") if name]}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
print("fake server up", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@pytest.fixture
def fake_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    monkeypatch.setitem(harness.COMMANDS, "serve", [sys.executable, str(script)])
    return tmp_path


def test_a_server_gets_the_shared_settings_and_is_stopped_by_pid(fake_serve: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAYHOOKS_SHOULD_BE_DROPPED", "1")
    server = harness.start_server("serve", "http://127.0.0.1:9", fake_serve, cwd=fake_serve,
                                  base_env=harness.environ_without("HAYHOOKS_"),
                                  extra_env={"HAYSTACK_TELEMETRY_ENABLED": "override", "EXTRA": "yes"})
    try:
        seen = httpx.get(f"{server.url}/healthz", timeout=5).json()
    finally:
        server.stop()
    port = server.url.rsplit(":", 1)[1]
    assert seen["argv"] == ["--host", "127.0.0.1", "--port", port]
    assert Path(seen["cwd"]) == fake_serve
    env = seen["env"]
    assert env["LETTA_BASE_URL"] == "http://127.0.0.1:9"
    assert (env["HAYHOOKS_HOST"], env["HAYHOOKS_PORT"]) == ("127.0.0.1", port)
    assert env["HAYHOOKS_STARTUP_DEPLOY_STRATEGY"] == "sequential"
    assert env["HAYHOOKS_ADDITIONAL_PYTHON_PATH"] == str(fake_serve)
    assert env["HAYSTACK_TELEMETRY_ENABLED"] == "override" and env["EXTRA"] == "yes"  # extra_env wins
    assert "HAYHOOKS_SHOULD_BE_DROPPED" not in env
    assert server.process.poll() is not None  # stopped
    assert "fake server up" in server.log()
    assert server.v1 == f"{server.url}/v1" and server.pid == server.process.pid


def test_local_mode_gets_no_letta_url_and_a_given_port(fake_serve: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LETTA_BASE_URL", "http://from-outside:1")
    port = free_port()
    server = harness.start_server("serve", None, fake_serve, cwd=fake_serve,
                                  base_env=harness.environ_without("LETTA_"), port=port)
    try:
        env = httpx.get(f"{server.url}/healthz", timeout=5).json()["env"]
    finally:
        server.stop()
    assert server.url == f"http://127.0.0.1:{port}"
    assert "LETTA_BASE_URL" not in env


def test_a_server_that_exits_is_an_error_with_its_log(fake_serve: Path) -> None:
    with pytest.raises(RuntimeError, match=r"serve exited early \(code 3\):\nboom: bad configuration"):
        harness.start_server("serve", "http://127.0.0.1:9", fake_serve, cwd=fake_serve,
                             extra_env={"BEHAVIOUR": "exit"})


def test_a_server_that_never_gets_ready_is_stopped(fake_serve: Path) -> None:
    with pytest.raises(RuntimeError, match="did not answer /healthz within 2 s") as raised:
        harness.start_server("serve", "http://127.0.0.1:9", fake_serve, cwd=fake_serve,
                             extra_env={"BEHAVIOUR": "mute"}, timeout=2)
    assert "fake server up" in str(raised.value)
    log = next(fake_serve.glob("serve-*.log"))
    port = log.stem.removeprefix("serve-")
    with pytest.raises(httpx.ConnectError):  # nothing listens there any more
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_wait_for_models(fake_serve: Path) -> None:
    server = harness.start_server("serve", "http://127.0.0.1:9", fake_serve, cwd=fake_serve,
                                  extra_env={"MODELS": "helper,demo"})
    try:
        harness.wait_for_models(server.url, ["demo", "helper"], timeout=5)
        with pytest.raises(TimeoutError, match=r"never listed \['absent'\]"):
            harness.wait_for_models(server.url, ["demo", "absent"], timeout=1)
    finally:
        server.stop()


def test_the_letta_venv_follows_the_settings(tmp_path: Path) -> None:
    named = Settings(_env_file=None, LETTA_HAYHOOKS_LETTA_VENV=str(tmp_path / "v"))
    assert harness.letta_venv(named, install=False).path == tmp_path / "v"
    in_data = Settings(_env_file=None, LETTA_HAYHOOKS_DATA_DIR=str(tmp_path / "data"))
    assert harness.letta_venv(in_data, install=False).path == tmp_path / "data" / "letta-venv"
    assert not (tmp_path / "data").exists()  # install=False creates nothing

