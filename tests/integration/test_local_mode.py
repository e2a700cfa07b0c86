"""
Local mode: `letta-hayhooks serve` without LETTA_BASE_URL brings up its own Letta server.

Proves the whole flow (start, chat, stop, start again, the agent still has the earlier turn, nothing left
running) and that the expected failures give one clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import openai
import pytest
from letta_client import Letta

from tests.support import harness
from tests.support.harness import ServerProcess
from letta_hayhooks.local.launcher import pid_alive
from letta_hayhooks.local.letta_server import LettaVenv, free_port
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent


def local_env(data_dir: Path, letta_port: int, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LETTA_", "OPENAI_", "HAYHOOKS_", "PIP_"))}
    env.update({
        "LETTA_HAYHOOKS_DATA_DIR": str(data_dir),
        "LETTA_HAYHOOKS_LETTA_VENV": str(harness.letta_venv(install=False).path),
        "LETTA_HAYHOOKS_LOCAL_LETTA_PORT": str(letta_port),
        **extra,
    })
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "letta-hayhooks"), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def start(env: dict[str, str], cwd: Path, port: int, log_dir: Path) -> ServerProcess:
    """`letta-hayhooks serve` in local mode (no LETTA_BASE_URL), once it serves the demo agent."""
    server = harness.start_server("serve", None, log_dir, cwd=cwd, base_env=env, port=port, ready_path="/v1/models",
                                  timeout=240)
    try:
        harness.wait_for_models(server.url, ["demo"], timeout=60)
    except TimeoutError:
        server.stop()
        raise AssertionError(f"local mode never served the demo agent:\n{server.log_tail()}") from None
    return server


def stop(server: ServerProcess) -> None:
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0  # a clean exit: local mode stopped what it started


@pytest.fixture(scope="module")
def installed_venv() -> LettaVenv:
    return harness.letta_venv()


def test_local_mode_round_trip(installed_venv: LettaVenv, tmp_path: Path) -> None:
    data_dir, letta_port, port = tmp_path / "data", free_port(), free_port()
    env = local_env(data_dir, letta_port)
    fact = f"BANANA-{uuid.uuid4().hex[:6]}"
    headers = {"X-Session-Id": "local-mode-chat"}

    server = start(env, tmp_path, port, tmp_path)
    state = json.loads((data_dir / "local-mode.json").read_text())
    assert state["scripted"] is True and state["letta_url"] == f"http://127.0.0.1:{letta_port}"
    assert "SCRIPTED" in server.log()
    status = json.loads(run_cli(["status", "--json"], env, tmp_path).stdout)
    assert status["mode"] == "local" and status["running"] is True and status["data_dir"] == str(data_dir)
    asked = subprocess.run([sys.executable, str(ROOT / "cli_client.py"), "--base-url", f"http://127.0.0.1:{port}",
                            "ask", "demo", "hello"], capture_output=True, text=True, timeout=60, check=False,
                           env={**env, "LETTA_HAYHOOKS_CLI_CONFIG_DIR": str(tmp_path / "cli")})
    assert asked.returncode == 0 and asked.stdout.strip() == "You said: hello", asked.stderr
    sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    first = sdk.chat.completions.create(model="demo", extra_headers=headers,
                                        messages=[{"role": "user", "content": f"remember {fact}"}])
    assert first.choices[0].message.content == f"You said: remember {fact}"
    demo_id = Letta(base_url=state["letta_url"], timeout=30).agents.list(name="demo").items[0].id
    stop(server)
    assert not pid_alive(state["letta_pid"]) and not pid_alive(state["stub_pid"])

    server = start(env, tmp_path, port, tmp_path)
    second_state = json.loads((data_dir / "local-mode.json").read_text())
    letta = Letta(base_url=second_state["letta_url"], timeout=30)
    assert [a.id for a in letta.agents.list(name="demo")] == [demo_id]  # reused, not recreated
    again = sdk.chat.completions.create(model="demo", extra_headers=headers, messages=[
        {"role": "user", "content": f"remember {fact}"},
        {"role": "assistant", "content": f"You said: remember {fact}"},
        {"role": "user", "content": f"RECALL?{fact}"}])
    assert again.choices[0].message.content == f"RECALL:{fact}=yes"
    stop(server)
    for pid in (second_state["letta_pid"], second_state["stub_pid"], second_state["proxy_pid"]):
        assert not pid_alive(pid)
    assert not run_cli(["status", "--json"], env, tmp_path).stdout.count('"running": true')


def test_busy_port_is_one_clear_error(installed_venv: LettaVenv, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli(["serve", "--port", str(free_port())], local_env(tmp_path / "d", port), tmp_path)
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unwritable_data_dir_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli(["serve", "--port", str(free_port())], local_env(blocker / "data", free_port()), tmp_path)
    assert result.returncode == 1
    assert "is not writable" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_failed_install_is_one_clear_error(tmp_path: Path) -> None:
    env = local_env(tmp_path / "data", free_port(), LETTA_HAYHOOKS_LETTA_VENV=str(tmp_path / "venv"),
                    PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_CONFIG_FILE=os.devnull, PIP_RETRIES="0",
                    PIP_TIMEOUT="2", PIP_NO_CACHE_DIR="1")
    result = run_cli(["serve", "--port", str(free_port())], env, tmp_path, timeout=300)
    assert result.returncode == 1
    assert "failed" in result.stderr and "Error:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # progress lines off a terminal are timestamped; the error itself is one short message
    problem = [line for line in result.stderr.strip().splitlines() if not line[:4].isdigit()]
    assert len(problem) <= 3, result.stderr


def test_remote_mode_never_starts_letta(tmp_path: Path) -> None:
    env = local_env(tmp_path / "data", free_port(), LETTA_BASE_URL="http://127.0.0.1:9")
    status = json.loads(run_cli(["status", "--json"], env, ROOT).stdout)
    assert status["mode"].startswith("remote") and status["letta_url"] == "http://127.0.0.1:9"
    assert not (tmp_path / "data").exists()
