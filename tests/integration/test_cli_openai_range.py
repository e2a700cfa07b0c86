"""
The terminal client in its own process, on the locked openai SDK and on the oldest one pyproject.toml allows.

openai 3.5x moved the SDK onto httpx2, which refuses httpx objects; the CLI must hand the SDK only its own types on
both sides of that move. The oldest release is installed from requirements/openai-oldest.lock (hashed) into a
directory put in front of the locked one on the child's path. `scripts/check-latest` runs this module on the newest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pexpect
import pytest

from tests.conftest import ROOT, Backend, Server, wait_for_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def oldest_openai(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("openai-oldest")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--require-hashes",
                    "--no-deps", "--target", str(target), "-r", str(ROOT / "requirements" / "openai-oldest.lock")],
                   check=True, timeout=300)
    return target


@pytest.fixture(scope="module", params=["locked", "oldest"])
def sdk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The child's environment for one openai SDK, and the version it really imports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETTA_HAYHOOKS_")}
    env.update(LETTA_HAYHOOKS_CLI_CONFIG_DIR=str(tmp_path_factory.mktemp("cli-config")), TERM="dumb",
               COLUMNS="120", LINES="40")
    if request.param == "oldest":
        env["PYTHONPATH"] = str(request.getfixturevalue("oldest_openai"))
    version = subprocess.run([sys.executable, "-c", "import openai; print(openai.__version__)"], env=env,
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    expected = (ROOT / "requirements" / "openai-oldest.lock").read_text().split("==")[1].split()[0]
    if request.param == "oldest":
        assert version == expected
    return SimpleNamespace(env=env, version=version)


@pytest.fixture(scope="module")
def model(letta_backend: Backend, server: Server) -> str:
    name = letta_backend.create_agent("cli-range").name
    wait_for_model(server.url, name)
    return name


def cli(sdk: SimpleNamespace, server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, str(ROOT / "cli_client.py"), "--base-url", server.url, *args],
                            env=sdk.env, cwd=str(ROOT), capture_output=True, text=True, timeout=120, check=False)
    # no traceback at all: not from a command, not from the SDK's finalizers at exit
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, (sdk.version, result.stderr)
    return result


def test_models(sdk: SimpleNamespace, server: Server, model: str) -> None:
    result = cli(sdk, server, "models", "--json")
    assert result.returncode == 0, (sdk.version, result.stderr)
    assert model in {entry["id"] for entry in json.loads(result.stdout)}
    table = cli(sdk, server, "models")
    assert table.returncode == 0 and model in table.stdout


@pytest.mark.parametrize("mode", ["--stream", "--no-stream"])
def test_ask(sdk: SimpleNamespace, server: Server, model: str, mode: str) -> None:
    result = cli(sdk, server, "ask", model, f"THINK:range {mode}", mode)
    assert result.returncode == 0, (sdk.version, result.stderr)
    assert result.stdout == f"You said: range {mode}\n"
    assert f"Thinking about: range {mode}" in result.stderr


@pytest.mark.parametrize("mode", ["--stream", "--no-stream"])
def test_ask_json(sdk: SimpleNamespace, server: Server, model: str, mode: str) -> None:
    result = cli(sdk, server, "ask", model, f"json range {mode}", mode, "--json")
    assert result.returncode == 0, (sdk.version, result.stderr)
    completion = json.loads(result.stdout)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == f"You said: json range {mode}"


def test_an_unreachable_server_is_one_line(sdk: SimpleNamespace) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "cli_client.py"), "--base-url", "http://127.0.0.1:9",
                             "models"], env=sdk.env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot reach letta-hayhooks"), (sdk.version, result.stderr)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def test_chat_two_turns_in_one_session(sdk: SimpleNamespace, server: Server, model: str) -> None:
    child = pexpect.spawn(sys.executable, [str(ROOT / "cli_client.py"), "--base-url", server.url, "chat", model],
                          env=sdk.env, cwd=str(ROOT), encoding="utf-8", timeout=30, dimensions=(40, 120))
    try:
        child.expect_exact("> ")
        child.sendline(f"range chat on {sdk.version}")
        child.expect_exact(f"You said: range chat on {sdk.version}")
        child.expect_exact("> ")
        child.sendline(f"RECALL?range chat on {sdk.version}")
        child.expect_exact(f"RECALL:range chat on {sdk.version}=yes")
        child.expect_exact("> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
        output = child.before or ""
    finally:
        child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in output
