"""
The production server (`letta-hayhooks serve`): exact wire format, OpenAI errors, auth, health, debug tracing.

Every check is a real request to a real server process backed by the real Letta server.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ROOT, Backend, Server, wait_for_model
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.integration


def sse_payloads(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE response, in order."""
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


def test_raw_sse_stream_is_exact(server: Server, agent) -> None:
    body = {"model": agent.name, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "THINK:raw bytes please"}]}
    with httpx.stream("POST", f"{server.v1}/chat/completions", json=body, timeout=60,
                      headers={"X-Session-Id": f"raw-{uuid.uuid4().hex}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers.get("x-request-id")
        payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == agent.name for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0].get("role") == "assistant"
    assert all("role" not in d for d in deltas[1:])
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Thinking about: raw bytes please"
    assert "".join(d.get("content") or "" for d in deltas) == "You said: raw bytes please"
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks.index(finish[0]) == len(chunks) - 2
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_stream_without_usage_option_has_no_usage_chunk(server: Server, agent) -> None:
    body = {"model": agent.name, "stream": True, "messages": [{"role": "user", "content": "no usage"}]}
    with httpx.stream("POST", f"{server.v1}/chat/completions", json=body, timeout=60,
                      headers={"X-Session-Id": f"nousage-{uuid.uuid4().hex}"}) as response:
        payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    assert all(json.loads(p)["choices"] for p in payloads[:-1])


def test_models_carry_agent_creation_times_and_can_be_retrieved(server: Server, agent) -> None:
    """Proves `/v1/models` shows when each agent was created (not the request time) and `models.retrieve` works."""
    created = int(agent.created_at.timestamp())
    time.sleep(max(0.0, created + 1.5 - time.time()))  # so "now" can no longer pass for the creation time
    sdk = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)
    listed = {model.id: model for model in sdk.models.list()}
    assert listed[agent.name].created == created and listed[agent.name].owned_by == "letta"
    assert listed[agent.name].model_extra["letta_agent_id"] == agent.id
    by_name, by_id = sdk.models.retrieve(agent.name), sdk.models.retrieve(agent.id)
    assert by_name.id == by_id.id == agent.name and by_name.created == by_id.created == created
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.models.retrieve("ghost-agent")
    assert missing.value.body["code"] == "model_not_found" and "ghost-agent" in missing.value.body["message"]
    assert httpx.get(f"{server.url}/models/{agent.name}", timeout=30).json()["id"] == agent.name


def test_sampling_parameters_are_accepted_and_left_to_the_agent(server: Server, agent) -> None:
    """Proves what the SDKs and chat UIs send by default does not turn a turn into an error (the README's promise)."""
    sdk = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)
    reply = sdk.chat.completions.create(
        model=agent.name, messages=[{"role": "user", "content": "with knobs"}], temperature=0.2, top_p=0.9,
        max_tokens=64, max_completion_tokens=64, stop=["\n\n"], seed=7, presence_penalty=0.1, frequency_penalty=0.1,
        response_format={"type": "text"}, logprobs=False, parallel_tool_calls=False,
        extra_headers={"X-Session-Id": f"knobs-{uuid.uuid4().hex}"},
    )
    assert reply.choices[0].message.content == "You said: with knobs" and reply.choices[0].finish_reason == "stop"


def test_file_upload_is_refused_clearly(server: Server, agent) -> None:
    """Proves a file upload is not answered with a made-up file id (the Responses API is served: test_responses.py)."""
    sdk = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.NotFoundError) as upload:
        sdk.files.create(file=("notes.txt", b"remember this"), purpose="assistants")
    assert upload.value.body["code"] == "unsupported_endpoint" and "image_url" in upload.value.body["message"]


def test_error_classes_match_the_openai_sdk(letta_backend: Backend, server: Server, server_factory, agent) -> None:
    sdk = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.NotFoundError) as not_found:
        sdk.chat.completions.create(model="ghost-agent", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=agent.name, messages=[])
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=agent.name, messages=[{"role": "user", "content": "x"}], n=3)
    with pytest.raises(openai.APIStatusError) as large:
        sdk.chat.completions.create(model=agent.name, messages=[{"role": "system", "content": "x" * 1_100_000},
                                                                 {"role": "user", "content": "x"}])
    assert large.value.status_code == 413
    with pytest.raises(openai.InternalServerError) as llm_failure:  # the model behind Letta fails: 502
        sdk.chat.completions.create(model=agent.name, messages=[{"role": "user", "content": "FAIL:500"}],
                                    extra_headers={"X-Session-Id": f"fail-{uuid.uuid4().hex}"})
    assert llm_failure.value.status_code == 502
    assert llm_failure.value.body["code"] == "llm_api_error"

    strict = server_factory(letta_backend.base_url, extra_env={
        "LETTA_HAYHOOKS_SESSION_QUEUE_DEPTH": "0", "LETTA_HAYHOOKS_TURN_TIMEOUT": "3"})
    wait_for_model(strict.url, agent.name)
    strict_sdk = openai.OpenAI(base_url=strict.v1, api_key="unused", max_retries=0, timeout=60)
    session = {"X-Session-Id": f"busy-{uuid.uuid4().hex}"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(strict_sdk.chat.completions.create, model=agent.name, extra_headers=session,
                           messages=[{"role": "user", "content": "SLOW:1500:slow one"}])
        time.sleep(0.6)
        with pytest.raises(openai.RateLimitError) as busy:
            strict_sdk.chat.completions.create(model=agent.name, extra_headers=session,
                                               messages=[{"role": "user", "content": "second"}])
        assert busy.value.response.headers.get("retry-after")
        assert slow.result().choices[0].message.content == "You said: slow one"
    with pytest.raises(openai.InternalServerError) as timeout:
        strict_sdk.chat.completions.create(model=agent.name, messages=[{"role": "user", "content": "SLOW:6000:late"}],
                                           extra_headers={"X-Session-Id": f"late-{uuid.uuid4().hex}"})
    assert timeout.value.status_code == 504

    relay = TcpRelay(letta_backend.letta.letta_port)
    relay.up()
    try:
        cut = server_factory(relay.url)
        wait_for_model(cut.url, agent.name)
        relay.down()
        with pytest.raises(openai.APIStatusError) as unavailable:
            openai.OpenAI(base_url=cut.v1, api_key="unused", max_retries=0, timeout=30).chat.completions.create(
                model=agent.name, messages=[{"role": "user", "content": "anyone?"}])
        assert unavailable.value.status_code == 503
        assert unavailable.value.body["type"] == "server_error"
        assert "127.0.0.1" not in json.dumps(unavailable.value.body)  # the backend's address is not leaked
    finally:
        relay.close()


def test_every_error_body_is_an_openai_error(server: Server, agent) -> None:
    cases = [
        ("POST", "/v1/chat/completions", b"{not json", 400),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400),
        ("POST", "/v1/chat/completions", json.dumps({"messages": []}).encode(), 400),
        ("POST", "/v1/chat/completions", json.dumps({"model": agent.name}).encode(), 400),
        ("GET", "/v1/nothing-here", b"", 404),
        ("POST", "/deploy_files", b"{}", 404),
        ("POST", "/undeploy/letta_agents", b"", 404),
        ("GET", "/v1/chat/completions", b"", 405),
    ]
    for method, path, content, status in cases:
        response = httpx.request(method, server.url + path, content=content, timeout=30,
                                 headers={"content-type": "application/json"})
        assert response.status_code == status, (path, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}


def test_stream_cut_mid_way_ends_with_an_error_event_and_done(letta_backend: Backend, server_factory, agent) -> None:
    relay = TcpRelay(letta_backend.letta.letta_port)
    relay.up()
    try:
        proxy = server_factory(relay.url)
        wait_for_model(proxy.url, agent.name)
        body = {"model": agent.name, "stream": True,
                "messages": [{"role": "user", "content": "DRIP:100:" + "a long answer " * 20}]}
        started = time.monotonic()
        payloads = []
        with httpx.stream("POST", f"{proxy.v1}/chat/completions", json=body, timeout=60,
                          headers={"X-Session-Id": f"cut-{uuid.uuid4().hex}"}) as response:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                payloads.append(line[6:])
                if len(payloads) == 3:
                    relay.down()
        assert time.monotonic() - started < 15
        assert payloads[-1] == "[DONE]"
        error = json.loads(payloads[-2])
        assert set(error) == {"error"} and error["error"]["type"] == "server_error"
        assert any(json.loads(p)["choices"][0]["delta"].get("content") for p in payloads[1:-2])
        relay.up()
        sdk = openai.OpenAI(base_url=proxy.v1, api_key="unused", max_retries=0, timeout=60)
        again = sdk.chat.completions.create(model=agent.name, messages=[{"role": "user", "content": "recovered"}],
                                            extra_headers={"X-Session-Id": f"cut2-{uuid.uuid4().hex}"})
        assert again.choices[0].message.content == "You said: recovered"
    finally:
        relay.close()


def test_api_keys(letta_backend: Backend, server_factory, agent) -> None:
    secured = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_API_KEYS": "key-one,key-two"},
                             ready_path="/health")
    url = f"{secured.v1}/chat/completions"
    body = {"model": agent.name, "messages": [{"role": "user", "content": "authorised?"}]}
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{secured.v1}/models", timeout=30).status_code == 401
    assert httpx.get(f"{secured.url}/status", timeout=30).status_code == 401
    wait_for_model(secured.url, agent.name, headers={"Authorization": "Bearer key-two"})
    ok = httpx.post(url, json=body, headers={"Authorization": "Bearer key-one",
                                             "X-Session-Id": f"auth-{uuid.uuid4().hex}"}, timeout=60)
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "You said: authorised?"
    assert httpx.get(f"{secured.v1}/models", headers={"X-API-Key": "key-two"}, timeout=30).status_code == 200
    assert httpx.get(f"{secured.url}/health", timeout=30).status_code == 200
    assert httpx.get(f"{secured.url}/docs", timeout=30).status_code == 200
    for path in ("/deploy_files", "/deploy-yaml", "/undeploy/letta_agents"):
        assert httpx.post(secured.url + path, json={}, headers={"X-API-Key": "key-one"}, timeout=30).status_code == 404
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=secured.v1, api_key="wrong", max_retries=0).models.list()
    assert "key-one" not in secured.log() and "key-two" not in secured.log()


def test_health_follows_letta(letta_backend: Backend, server_factory) -> None:
    relay = TcpRelay(letta_backend.letta.letta_port)
    relay.up()
    try:
        proxy = server_factory(relay.url, extra_env={"LETTA_API_KEY": "secret-letta-key"})
        up = httpx.get(f"{proxy.url}/health", timeout=30)
        assert up.status_code == 200
        health = up.json()
        assert health["status"] == "ok" and health["letta"]["reachable"] is True
        assert health["letta"]["version"] == "0.16.8" and health["models"] >= 1 and health["last_refresh"]
        relay.down()
        down = httpx.get(f"{proxy.url}/health", timeout=30)
        assert down.status_code == 503 and down.json()["status"] == "degraded"
        assert httpx.get(f"{proxy.url}/healthz", timeout=30).status_code == 200
        for text in (up.text, down.text):
            assert "secret-letta-key" not in text and str(relay.port) not in text
    finally:
        relay.close()


def test_debug_trace_is_redacted_unless_allowed(letta_backend: Backend, server_factory, agent,
                                                tmp_path: Path) -> None:
    for allow_text in (False, True):
        trace_file = tmp_path / f"trace-{allow_text}.log"
        proxy = server_factory(letta_backend.base_url, extra_env={
            "LETTA_HAYHOOKS_DEBUG_EVENTS": "1", "LETTA_HAYHOOKS_DEBUG_FILE": str(trace_file),
            "LETTA_HAYHOOKS_DEBUG_INCLUDE_TEXT": "1" if allow_text else "0"})
        wait_for_model(proxy.url, agent.name)
        secret = f"PINEAPPLE-{uuid.uuid4().hex[:6]}"
        with httpx.stream("POST", f"{proxy.v1}/chat/completions", timeout=60,
                          headers={"X-Session-Id": f"dbg-{uuid.uuid4().hex}"},
                          json={"model": agent.name, "stream": True,
                                "messages": [{"role": "user", "content": f"THINK:{secret}"}]}) as response:
            request_id = response.headers["x-request-id"]
            list(response.iter_lines())
        proxy.stop()
        lines = [line for line in trace_file.read_text().splitlines() if request_id in line]
        kinds = {json.loads(line.split(" ", 2)[2])["kind"] for line in lines}
        assert {"letta_event", "openai_chunk"} <= kinds
        assert any('"reasoning_message"' in line for line in lines)
        records = [json.loads(line.split(" ", 2)[2]) for line in lines]
        streamed = "".join(
            r["data"]["choices"][0]["delta"].get("reasoning_content", "") for r in records
            if r["kind"] == "openai_chunk" and r["data"].get("choices"))
        if allow_text:
            assert streamed == f"Thinking about: {secret}"
        else:
            assert "PINEAPPLE" not in "\n".join(lines) and "<redacted" in streamed


def test_think_tags_and_status_events(letta_backend: Backend, server_factory, agent) -> None:
    proxy = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_THINK_TAGS": "1",
                                                              "LETTA_HAYHOOKS_TOOL_ACTIVITY": "status"})
    wait_for_model(proxy.url, agent.name)
    reply = httpx.post(f"{proxy.v1}/chat/completions", timeout=60, headers={"X-Session-Id": uuid.uuid4().hex},
                       json={"model": agent.name, "messages": [{"role": "user", "content": "THINK:tagged"}]}).json()
    assert reply["choices"][0]["message"]["content"] == "<think>Thinking about: tagged</think>You said: tagged"
    body = {"model": agent.name, "stream": True, "messages": [
        {"role": "user", "content": 'CALL memory_insert {"label": "human", "new_string": "x", "insert_line": 0}'}]}
    with httpx.stream("POST", f"{proxy.v1}/chat/completions", json=body, timeout=60,
                      headers={"X-Session-Id": uuid.uuid4().hex}) as response:
        payloads = [json.loads(p) for p in sse_payloads(response)[:-1]]
    events = [p["event"] for p in payloads if "event" in p]
    assert [e["type"] for e in events] == ["status", "status"]
    assert "memory_insert" in events[0]["data"]["description"] and events[1]["data"]["done"] is True


def test_bad_configuration_fails_at_startup_naming_the_variable() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "letta-hayhooks"), "serve"], cwd=ROOT, capture_output=True, text=True,
        check=False,
        timeout=60, env={"PATH": "/usr/bin:/bin", "LETTA_BASE_URL": "http://127.0.0.1:9",
                         "LETTA_HAYHOOKS_REFRESH_INTERVAL": "soon"})
    assert result.returncode != 0
    assert "LETTA_HAYHOOKS_REFRESH_INTERVAL" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_message_text_or_key_in_the_log_at_default_settings(letta_backend: Backend, server_factory,
                                                                 agent) -> None:
    marker = f"MARMALADE{uuid.uuid4().hex[:6]}"
    key = f"sk-test-{uuid.uuid4().hex}"
    proxy = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_API_KEYS": key})
    wait_for_model(proxy.url, agent.name, headers={"Authorization": f"Bearer {key}"})
    client = openai.OpenAI(base_url=proxy.v1, api_key=key, max_retries=0, timeout=60,
                           default_headers={"X-Session-Id": f"log-{uuid.uuid4().hex}"})
    system = {"role": "system", "content": f"Persona {marker}"}
    client.chat.completions.create(model=agent.name, messages=[system, {"role": "user", "content": f"hi {marker}"}])
    list(client.chat.completions.create(model=agent.name, stream=True,
                                        messages=[system, {"role": "user", "content": f"THINK:{marker}"}]))
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    client.chat.completions.create(model=agent.name, tools=[tool],
                                   messages=[{"role": "user", "content": f'CALL lookup {{"q": "{marker}"}}'}])
    failures = [
        # the model provider fails (Letta reports an LLM error)
        {"messages": [{"role": "user", "content": f"FAIL:500 {marker}"}]},
        # a tool result nobody asked for, in a session's own conversation
        {"messages": [{"role": "user", "content": marker}, {"role": "assistant", "content": "x"},
                      {"role": "tool", "tool_call_id": f"call_{marker}", "content": marker}],
         "extra_headers": {"X-Session-Id": f"log-tool-{uuid.uuid4().hex}"}},
        # bad input, echoed nowhere
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"http://{marker}"}}]}]},
    ]
    for extra in failures:
        with pytest.raises(openai.APIError):
            client.chat.completions.create(model=agent.name, **extra)
    httpx.get(f"{proxy.v1}/models?api_key={key}", timeout=10)  # a key in a query string is refused, not logged
    proxy.stop()
    log = proxy.log()
    assert "Chat" in log or "POST" in log  # the log is really captured
    assert marker not in log
    assert key not in log
