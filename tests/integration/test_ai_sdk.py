"""
The Vercel AI SDK (`ai` + `@ai-sdk/openai`, whose `openai(model)` is the Responses API) against the real server.

tests/clients/ai-sdk is a small node project with exact versions and a lockfile; `npm ci` installs it on first use
(a few seconds; kept in its node_modules while the lockfile is unchanged). check.mjs runs every flow once and prints
JSON: each flow's result or error, and the requests the SDK sent. Proves: generateText, streamText (the text in
several parts), a tool the SDK executes itself over two steps (stopWhen: stepCountIs(3)), non-stream and stream, and
a follow-up turn carrying the first turn's messages (the SDK sends the stored answer as an `item_reference`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import ROOT, Server

pytestmark = pytest.mark.integration

PROJECT = ROOT / "tests" / "clients" / "ai-sdk"
STAMP = PROJECT / "node_modules" / ".installed-lock-sha256"


def npm_ci() -> float | None:
    """Install the project's locked packages unless node_modules already holds this lockfile; the seconds it took."""
    lock_hash = hashlib.sha256((PROJECT / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == lock_hash:
        return None
    started = time.monotonic()
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=PROJECT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    STAMP.write_text(lock_hash)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def flows(server: Server, agent) -> dict:
    """check.mjs's JSON output: every flow against `server` with `agent` as the model."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the Vercel AI SDK check (Node.js >= 20)")
    seconds = npm_ci()
    if seconds is not None:
        print(f"npm ci (ai-sdk): {seconds:.1f} s")
    env = {**os.environ, "LETTA_HAYHOOKS_V1": server.v1, "LETTA_HAYHOOKS_MODEL": agent.name}
    done = subprocess.run(["node", "check.mjs"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=240,
                          check=False)
    assert done.returncode == 0, f"check.mjs failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


def result_of(flows: dict, name: str) -> dict:
    """A flow's result; a failed flow fails the test with the SDK's error, the server's answer and the requests."""
    flow = flows[name]
    assert flow["ok"], json.dumps(flow, indent=1)[:6000]
    return flow["result"]


def test_generate_text(flows: dict) -> None:
    result = result_of(flows, "text")
    assert result["text"] == "You said: hello from the ai sdk"
    assert result["finishReason"] == "stop"
    assert result["responseId"].startswith("resp_")
    assert result["usage"]["inputTokens"] > 0 and result["usage"]["outputTokens"] > 0
    (request,) = flows["text"]["requests"]
    assert request["url"].endswith("/v1/responses")
    assert "stream" not in request["body"]


def test_stream_text(flows: dict) -> None:
    result = result_of(flows, "stream")
    assert result["text"] == "You said: stream this please"
    assert "".join(result["parts"]) == result["text"]
    assert len(result["parts"]) > 1  # streamed, not one block at the end
    assert result["finishReason"] == "stop"
    (request,) = flows["stream"]["requests"]
    assert request["body"]["stream"] is True


@pytest.mark.parametrize(("flow", "city"), [("tool", "Paris"), ("streamTool", "Oslo")])
def test_tool_with_execute_over_two_steps(flows: dict, flow: str, city: str) -> None:
    result = result_of(flows, flow)
    first, second = result["steps"]
    assert first["finishReason"] == "tool-calls"
    assert [(c["toolName"], c["input"]) for c in first["toolCalls"]] == [("get_weather", {"city": city})]
    assert first["toolResults"] == [{"toolName": "get_weather", "output": f"Sunny in {city}, 21C"}]
    assert second["toolCalls"] == []
    assert second["finishReason"] == "stop"
    # the agent's answer to the tool's result (Letta hands the model the result wrapped in its status JSON)
    assert result["text"] == second["text"]
    assert result["text"].startswith("Tool get_weather returned:")
    assert f"Sunny in {city}, 21C" in result["text"]
    # the second request carried the call and the SDK's result back
    call_request = flows[flow]["requests"][1]["body"]
    assert [item.get("type") for item in call_request["input"][-2:]] == ["function_call", "function_call_output"]


def test_follow_up_turn_with_the_stored_answer_as_item_reference(flows: dict) -> None:
    result = result_of(flows, "followUp")
    assert result["first"] == "You said: remember FOLLOW-MARK"
    # the agent's context holds the first turn: the second request continued that conversation
    assert result["second"] == "RECALL:FOLLOW-MARK=yes"
    second_request = flows["followUp"]["requests"][1]["body"]
    assert {"type": "item_reference", "id": second_request["input"][1]["id"]} == second_request["input"][1]
