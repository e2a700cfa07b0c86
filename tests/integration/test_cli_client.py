"""
The terminal client against a running letta-hayhooks and the real Letta server.

CliRunner drives `models`, `ask`, `health`, the error paths and the saved settings; pexpect drives the `chat` REPL
in a pseudo-terminal (two turns, the session mapping, the system prompt, Ctrl-C, /new, /model, /quit).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pexpect
import pytest
from click.testing import CliRunner, Result

from letta_hayhooks.cli_client import cli
from letta_hayhooks.local.letta_server import free_port
from tests.conftest import ROOT, Backend, Server, isolate_cli_config, wait_for_model
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.integration

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


@pytest.fixture(scope="module")
def agents(letta_backend: Backend, server: Server) -> SimpleNamespace:
    main = letta_backend.create_agent("cli-main").name
    other = letta_backend.create_agent("cli-other").name
    tools = letta_backend.create_agent("cli-tools").name
    for name in (main, other, tools):
        wait_for_model(server.url, name)
    return SimpleNamespace(main=main, other=other, tools=tools)


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_cli_config(tmp_path / "cli-config", monkeypatch)


def run(server: Server | None, *args: str, input: str | None = None) -> Result:  # noqa: A002 - CliRunner's name
    """Invoke the CLI in-process (with --base-url when a server is given)."""
    prefix = ["--base-url", server.v1] if server is not None else []
    return CliRunner().invoke(cli, [*prefix, *args], input=input)


def assert_one_line_error(result: Result) -> str:
    """A failed run: exit 1, a single `Error: ...` line on stderr, no traceback anywhere."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("Error: ")
    assert result.stderr.strip().count("\n") == 0, result.stderr
    return result.stderr


def saved(config_dir: Path) -> dict[str, Any]:
    return json.loads((config_dir / "cli.json").read_text())


# ------------------------------------------------------------------------------------------------ models / ask


def test_models_table_lists_the_agents(server: Server, agents: SimpleNamespace) -> None:
    result = run(server, "models")
    assert result.exit_code == 0, result.output
    assert agents.main in result.stdout
    assert agents.other in result.stdout
    assert "created" in result.stdout
    assert DATE.search(result.stdout)


def test_models_json_is_the_raw_list(server: Server, agents: SimpleNamespace) -> None:
    result = run(server, "models", "--json")
    assert result.exit_code == 0, result.output
    models = json.loads(result.stdout)
    by_id = {model["id"]: model for model in models}
    assert {agents.main, agents.other} <= set(by_id)
    assert isinstance(by_id[agents.main]["created"], int)


@pytest.mark.parametrize("mode", ["--stream", "--no-stream"])
def test_ask_answers_on_stdout_with_reasoning_on_stderr(server: Server, agents: SimpleNamespace, mode: str) -> None:
    result = run(server, "ask", agents.main, f"THINK:hello {mode}", mode)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"You said: hello {mode}\n"  # pipeable: nothing but the answer
    assert f"Thinking about: hello {mode}" in result.stderr


@pytest.mark.parametrize("mode", ["--stream", "--no-stream"])
def test_ask_json_is_one_chat_completion(server: Server, agents: SimpleNamespace, mode: str) -> None:
    # what `ask --json | jq -r '.choices[0].message.content'` relies on, streamed or not
    result = run(server, "ask", agents.main, f"THINK:json please {mode}", mode, "--json")
    assert result.exit_code == 0, result.output
    completion = json.loads(result.stdout)
    assert completion["object"] == "chat.completion"
    assert completion["model"] == agents.main and completion["id"]
    choice = completion["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == f"You said: json please {mode}"
    assert choice["message"]["reasoning_content"] == f"Thinking about: json please {mode}"
    assert choice["finish_reason"] == "stop"


def test_ask_raw_chunks_is_the_list_of_chunks(server: Server, agents: SimpleNamespace) -> None:
    result = run(server, "ask", agents.main, "THINK:chunks please", "--raw-chunks")
    assert result.exit_code == 0, result.output
    chunks = json.loads(result.stdout)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "You said: chunks please"
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Thinking about: chunks please"


def test_ask_reads_the_message_from_stdin(server: Server, agents: SimpleNamespace) -> None:
    result = run(server, "ask", agents.main, "-", "--no-stream", input="from a pipe\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "You said: from a pipe\n"


def test_ask_shows_the_agents_tool_activity_on_stderr(server: Server, agents: SimpleNamespace) -> None:
    call = 'CALL memory_insert {"label": "human", "new_string": "likes tea", "insert_line": 0}'
    result = run(server, "ask", agents.tools, call)
    assert result.exit_code == 0, result.output
    assert "⚙ running memory_insert" in result.stderr
    assert "✓ memory_insert" in result.stderr
    assert result.stdout.startswith("Tool memory_insert returned:")  # the answer only: status lines stay off stdout
    assert "⚙" not in result.stdout
    assert "✓" not in result.stdout


def test_ask_session_continue_and_system_prompt(server: Server, agents: SimpleNamespace, config_dir: Path) -> None:
    session = f"cli-session-{time.monotonic_ns()}"
    assert run(server, "ask", agents.other, "remember BLUEBIRD", "--session", session).exit_code == 0
    other = run(server, "ask", agents.other, "RECALL?BLUEBIRD", "--session", f"{session}-b", "--no-stream")
    assert other.stdout == "RECALL:BLUEBIRD=no\n"  # another session is another conversation
    same = run(server, "ask", agents.other, "RECALL?BLUEBIRD", "--session", session, "--no-stream")
    assert same.stdout == "RECALL:BLUEBIRD=yes\n"
    assert saved(config_dir)["session"] == session
    continued = run(server, "ask", agents.other, "RECALL?BLUEBIRD", "-c", "--no-stream")
    assert continued.stdout == "RECALL:BLUEBIRD=yes\n"  # -c continued the last saved session
    system = run(server, "ask", agents.other, "SYSTEM?SYSMARK-7", "--system", "Be terse. SYSMARK-7",
                 "--session", session, "--no-stream")
    assert system.stdout == "SYSTEM_HAS:SYSMARK-7=yes\n"


# ------------------------------------------------------------------------------------------------ health


def test_health_ok(server: Server) -> None:
    result = run(server, "health")
    assert result.exit_code == 0, result.output
    assert "letta.reachable" in result.stdout
    assert re.search(r"status\s+ok", result.stdout)
    body = json.loads(run(server, "health", "--json").stdout)
    assert body["status"] == "ok"
    assert body["letta"]["reachable"] is True


def test_health_fails_when_letta_is_down(letta_backend: Backend, server_factory) -> None:
    relay = TcpRelay(letta_backend.letta.letta_port)
    relay.up()
    try:
        relayed = server_factory(relay.url)
        assert run(relayed, "health").exit_code == 0
        relay.down()
        result = run(relayed, "health")
        assert result.exit_code == 1
        assert re.search(r"status\s+degraded", result.stdout)
        assert re.search(r"letta\.reachable\s+false", result.stdout)
        assert "Letta is not reachable" in result.stderr
        assert "Traceback" not in result.output
        as_json = run(relayed, "health", "--json")
        assert as_json.exit_code == 1
        assert json.loads(as_json.stdout)["status"] == "degraded"
    finally:
        relay.close()


# ------------------------------------------------------------------------------------------------ errors


def test_unreachable_server(config_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["models"], ["ask", "m", "hi"], ["health"], ["chat", "m"]):
        message = assert_one_line_error(CliRunner().invoke(cli, ["--base-url", url, *args]))
        assert f"cannot reach letta-hayhooks at {url}" in message
        assert "letta-hayhooks serve" in message
    assert not (config_dir / "cli.json").exists()  # a URL that never answered is not remembered


def test_api_key_required(letta_backend: Backend, server_factory, agents: SimpleNamespace,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    keyed = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_API_KEYS": "k1"})
    missing = assert_one_line_error(run(keyed, "models"))
    assert "401" in missing
    assert "--api-key" in missing
    wrong = assert_one_line_error(run(keyed, "--api-key", "nope", "models"))
    assert "rejected" in wrong
    ok = run(keyed, "--api-key", "k1", "ask", agents.main, "with a key", "--no-stream")
    assert ok.stdout == "You said: with a key\n"
    monkeypatch.setenv("LETTA_HAYHOOKS_API_KEY", "k1")
    from_env = run(keyed, "models", "--json")
    assert from_env.exit_code == 0, from_env.output
    assert agents.main in {m["id"] for m in json.loads(from_env.stdout)}


def test_unknown_model_suggests_close_matches(server: Server, agents: SimpleNamespace) -> None:
    typo = agents.main[:-1]
    for args in (["ask", typo, "hi"], ["ask", typo, "hi", "--no-stream"], ["chat", typo]):
        message = assert_one_line_error(run(server, *args))
        assert f"unknown model '{typo}'" in message
        assert f"Did you mean: {agents.main}" in message


@pytest.mark.parametrize("mode", ["--stream", "--no-stream"])
def test_a_failing_turn_is_a_one_line_error(server: Server, agents: SimpleNamespace, mode: str) -> None:
    message = assert_one_line_error(run(server, "ask", agents.other, "FAIL:500", mode))
    assert "Letta" in message or "server" in message


# ------------------------------------------------------------------------------------------------ saved settings


def test_base_url_model_and_session_are_saved_and_reused(server: Server, agents: SimpleNamespace,
                                                         config_dir: Path) -> None:
    assert run(server, "models").exit_code == 0
    assert saved(config_dir)["base_url"] == server.url  # saved without the /v1
    reused = run(None, "models")  # no flag: the saved URL
    assert reused.exit_code == 0, reused.output
    assert agents.main in reused.stdout

    assert run(None, "ask", agents.other, "pick this model").exit_code == 0
    assert saved(config_dir)["model"] == agents.other

    first = run(None, "chat", input="remember KINGFISHER\n/quit\n")  # no MODEL: the saved one
    assert first.exit_code == 0, first.output
    assert f"Chatting with {agents.other}" in first.stdout
    assert "You said: remember KINGFISHER" in first.stdout
    session = re.search(rf"session ({UUID})", first.stdout).group(1)
    assert saved(config_dir)["session"] == session

    resumed = run(None, "chat", "--resume", input="RECALL?KINGFISHER\n/quit\n")
    assert resumed.exit_code == 0, resumed.output
    assert f"session {session}" in resumed.stdout
    assert "RECALL:KINGFISHER=yes" in resumed.stdout

    fresh = run(None, "chat", input="RECALL?KINGFISHER\n/quit\n")
    assert "RECALL:KINGFISHER=no" in fresh.stdout  # without --resume: a new session
    assert saved(config_dir)["session"] != session


# ------------------------------------------------------------------------------------------------ the REPL in a pty


def _default_sigint() -> None:
    # a test run started in the background inherits SIGINT ignored; a user's terminal delivers Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn_chat(server: Server, model: str, config_dir: Path, *extra: str) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETTA_HAYHOOKS_")}
    env.update(LETTA_HAYHOOKS_CLI_CONFIG_DIR=str(config_dir), TERM="dumb", COLUMNS="120", LINES="40")
    child = pexpect.spawn(sys.executable, [str(ROOT / "cli_client.py"), "--base-url", server.url, "chat", model,
                                           *extra], env=env, cwd=str(ROOT), encoding="utf-8", timeout=30,
                          dimensions=(40, 120), preexec_fn=_default_sigint)
    child.logfile_read = (config_dir.parent / "pty.log").open("a", encoding="utf-8")
    return child


def turn(child: pexpect.spawn, text: str, answer: str) -> None:
    child.expect_exact("> ")
    child.sendline(text)
    child.expect_exact(answer)


def test_repl_two_turns_system_prompt_and_ctrl_c(server: Server, agents: SimpleNamespace, config_dir: Path) -> None:
    child = spawn_chat(server, agents.main, config_dir)
    try:
        child.expect(rf"session ({UUID})")
        session = child.match.group(1)
        turn(child, "first message", "You said: first message")
        turn(child, "RECALL?first message", "RECALL:first message=yes")  # same session, same conversation
        turn(child, "/system Answer briefly. SYSMARK-PTY", "System prompt set")
        turn(child, "SYSTEM?SYSMARK-PTY", "SYSTEM_HAS:SYSMARK-PTY=yes")
        child.expect_exact("> ")
        child.sendline("DRIP:250:" + "z" * 60)  # about 17 s of streaming
        # a dumb terminal shows the answer only when it is complete, so wait a while instead: mid-stream
        time.sleep(3)
        child.sendintr()
        child.expect_exact("(answer cancelled)")
        turn(child, "still here", "You said: still here")  # Ctrl-C did not leave the chat
        child.expect_exact("> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    sessions = httpx.get(f"{server.v1}/letta/sessions", params={"model": agents.main}, timeout=30).json()["data"]
    assert session in {row["session_key"] for row in sessions}  # X-Session-Id became the Letta session


def test_repl_new_session_switch_model_and_quit(server: Server, agents: SimpleNamespace, config_dir: Path) -> None:
    child = spawn_chat(server, agents.main, config_dir)
    try:
        child.expect(rf"session ({UUID})")
        first = child.match.group(1)
        turn(child, "remember OSPREY", "You said: remember OSPREY")
        child.expect_exact("> ")
        child.sendline("/new")
        child.expect(rf"New session ({UUID})")
        second = child.match.group(1)
        assert second != first
        turn(child, "RECALL?OSPREY", "RECALL:OSPREY=no")  # a new Letta conversation
        turn(child, "/model no-such-model", "unknown model 'no-such-model'")
        turn(child, f"/model {agents.other}", f"Now chatting with {agents.other}")
        turn(child, "hello other", "You said: hello other")
        child.expect_exact("> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert saved(config_dir) == {"base_url": server.url, "model": agents.other, "session": second}
