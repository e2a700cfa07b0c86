"""
The Codex CLI (npm @openai/codex) against the real server over the Responses API: `codex exec` with a model provider
whose base_url is the server's /v1 (wire_api = "responses"), in a temporary CODEX_HOME and a temporary work dir.

Codex sends its own tools with every request (`exec_command` {"cmd": ...} is its shell; also write_stdin,
view_image, goals, a `namespace` of sub-agent tools and `web_search`). The user prompt makes the scripted model call
`exec_command`; Codex runs the command (no sandbox, no approvals: only in the temporary work dir), sends the output
back as a function_call_output in the next request (`store: false`, the whole history again), and the agent answers
with it. Proves: the command ran (its file exists, its output is the shell's, not the prompt's) and Codex's final
message is the agent's answer carrying that output.

Codex is installed on first use into the data dir (clients/codex-<version>: about 424 MB with its native binary,
outside the repository) and kept there. Its config turns off everything that would leave the machine (plugins,
apps, analytics, the update check): the only address it talks to is the server on loopback.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from letta_hayhooks.local.letta_server import default_data_dir
from letta_hayhooks.settings import load_settings
from tests.conftest import Server

pytestmark = pytest.mark.integration

CODEX_VERSION = "0.171.0"
KEY_VARIABLE = "LETTA_HAYHOOKS_CODEX_KEY"
CONFIG = """\
model = "{model}"
model_provider = "letta"
check_for_update_on_startup = false

[model_providers.letta]
name = "letta-hayhooks"
base_url = "{v1}"
wire_api = "responses"
env_key = "{key_variable}"
# a failed request fails the run (Codex retries 4 times by default, which would hide a flaky answer)
request_max_retries = 0
stream_max_retries = 0

# nothing leaves the machine: no plugin marketplace sync (github.com), no apps, no analytics (chatgpt.com)
[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false
apps = false
"""


def codex_install_dir() -> Path:
    return default_data_dir(load_settings().data_dir) / "clients" / f"codex-{CODEX_VERSION}"


def install_codex(prefix: Path) -> None:
    """npm install @openai/codex (with the native binary for this platform as its optional dependency)."""
    shutil.rmtree(prefix, ignore_errors=True)
    prefix.mkdir()
    started = time.monotonic()
    done = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-save", "--no-audit", "--no-fund",
                           "--no-package-lock", f"@openai/codex@{CODEX_VERSION}"],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"npm install @openai/codex failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    print(f"npm install @openai/codex@{CODEX_VERSION}: {time.monotonic() - started:.1f} s")
    (prefix / ".installed").write_text(CODEX_VERSION)


@pytest.fixture(scope="module")
def codex() -> Path:
    """The `codex` launcher, installed on first use and kept in the data dir."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to install the Codex CLI (npm @openai/codex)")
    prefix = codex_install_dir()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with (prefix.parent / f"codex-{CODEX_VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run installing it at the same time waits
        if not (prefix / ".installed").exists():
            install_codex(prefix)
    launcher = prefix / "node_modules" / ".bin" / "codex"
    version = subprocess.run([str(launcher), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert CODEX_VERSION in version.stdout, f"codex --version: {version.stdout} {version.stderr}"
    return launcher


def run_codex(codex: Path, tmp_path: Path, server: Server, model: str, prompt: str) -> tuple[list[dict], str]:
    """`codex exec --json` in a temporary CODEX_HOME and work dir: its JSONL events and its stderr."""
    home, workdir = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    (home / "config.toml").write_text(CONFIG.format(model=model, v1=server.v1, key_variable=KEY_VARIABLE))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "CODEX_"))}
    env.update({"CODEX_HOME": str(home), KEY_VARIABLE: "unused"})
    command = [str(codex), "exec", "--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
               "-C", str(workdir), prompt]
    done = subprocess.run(command,
                          env=env, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180,
                          check=False)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, f"codex exec failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return events, done.stderr


def completed(events: list[dict], kind: str) -> list[dict]:
    return [e["item"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == kind]


def test_codex_answers_a_turn(codex: Path, tmp_path: Path, server: Server, agent) -> None:
    events, stderr = run_codex(codex, tmp_path, server, agent.name, "hello from codex")
    assert [m["text"] for m in completed(events, "agent_message")] == ["You said: hello from codex"], stderr[-3000:]
    assert events[-1]["type"] == "turn.completed"
    assert events[-1]["usage"]["input_tokens"] > 0


def test_codex_runs_its_shell_tool_and_answers_with_the_output(codex: Path, tmp_path: Path, server: Server,
                                                                 agent) -> None:
    prompt = 'CALL exec_command {"cmd": "echo codex-$((6*7)) | tee ran.txt"}'
    events, stderr = run_codex(codex, tmp_path, server, agent.name, prompt)
    (command,) = completed(events, "command_execution")
    assert command["exit_code"] == 0 and command["status"] == "completed"
    assert command["aggregated_output"] == "codex-42\n"  # the shell ran it: the prompt never says 42
    assert (tmp_path / "work" / "ran.txt").read_text() == "codex-42\n"
    (answer,) = completed(events, "agent_message")
    # the agent answered after the tool result came back: the stub's answer to a function_call_output
    assert answer["text"].startswith("Tool exec_command returned:"), stderr[-3000:]
    assert "codex-42" in answer["text"]
    assert events[-1]["type"] == "turn.completed"
