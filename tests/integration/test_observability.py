"""
Operators can see inside, against the real Letta: errors that say why, the server log, /metrics (also across
uvicorn workers) and one trace per request with the Letta call in it and `traceparent` sent to Letta.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import ServerProcess, wait_ready
from letta_hayhooks.local.letta_server import free_port
from tests.conftest import ROOT, Backend, Server, wait_for_model
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.integration


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# ---- errors that say why

@pytest.mark.parametrize(("directive", "error_class", "status", "code"), [
    ("FAIL:429", openai.RateLimitError, 429, "rate_limit_exceeded"),
    ("FAIL:500", openai.InternalServerError, 502, "llm_api_error"),
])
def test_provider_failures_reach_the_sdk_with_their_status_and_message(
    server: Server, agent, directive: str, error_class: type, status: int, code: str
) -> None:
    sdk = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(error_class) as failure:
        sdk.chat.completions.create(model=agent.name, messages=[{"role": "user", "content": directive}],
                                    extra_headers={"X-Session-Id": f"fail-{uuid.uuid4().hex}"})
    assert failure.value.status_code == status and failure.value.body["code"] == code
    # the provider's own words and who said them, nothing of Letta's internals
    assert f"scripted failure {directive[5:]}" in failure.value.message
    assert f"OpenAI, HTTP {directive[5:]}" in failure.value.message
    assert "127.0.0.1" not in failure.value.message and "://" not in failure.value.message


@pytest.mark.parametrize(("directive", "code"), [("FAIL:429", "rate_limit_exceeded"), ("FAIL:500", "llm_api_error")])
def test_mid_stream_the_error_event_says_the_same(server: Server, agent, directive: str, code: str) -> None:
    sdk = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.APIError) as failure:
        for _chunk in sdk.chat.completions.create(model=agent.name, stream=True,
                                                  messages=[{"role": "user", "content": directive}],
                                                  extra_headers={"X-Session-Id": f"fail-{uuid.uuid4().hex}"}):
            pass
    assert failure.value.body["code"] == code
    assert f"scripted failure {directive[5:]}" in failure.value.message


def test_a_stream_that_fails_before_any_content_gets_the_http_status(server: Server, agent) -> None:
    sdk = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.RateLimitError):
        for _chunk in sdk.chat.completions.create(model=agent.name, stream=True,
                                                  messages=[{"role": "user", "content": "FAIL:429"}],
                                                  extra_headers={"X-Session-Id": f"fail-{uuid.uuid4().hex}"}):
            pass


# ---- the server log and /metrics

def test_json_log_and_metrics_of_a_running_server(letta_backend: Backend, server_factory, agent) -> None:
    served = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_LOG_FORMAT": "json"})
    wait_for_model(served.url, agent.name)
    session = f"obs-{uuid.uuid4().hex}"
    sdk = openai.OpenAI(base_url=served.v1, api_key="unused", max_retries=0, timeout=60)
    answer = sdk.chat.completions.create(model=agent.name, extra_headers={"X-Session-Id": session},
                                         messages=[{"role": "user", "content": "hello OBS-SECRET-TEXT"}])
    assert answer.choices[0].message.content == "You said: hello OBS-SECRET-TEXT"
    scraped = httpx.get(f"{served.url}/metrics", timeout=30)
    assert scraped.status_code == 200
    assert metric(scraped.text, "letta_hayhooks_http_requests_total", route="chat", status_class="2xx") == 1
    assert metric(scraped.text, "letta_hayhooks_catalog_agents") >= 1
    assert metric(scraped.text, "letta_hayhooks_catalog_last_refresh_timestamp_seconds") > time.time() - 60

    time.sleep(0.5)  # the log is written by another process
    log = served.log()
    lines = [line for line in log.splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert len(records) > 5 and len(lines) == len([line for line in log.splitlines() if line.strip()])
    assert all({"time", "level", "logger", "message", "request_id"} <= set(record) for record in records)
    # a component's INFO line, with its fields as keys and the request's id
    (created,) = [r for r in records if "-> new conversation" in r["message"]]
    assert created["level"] == "INFO" and created["conversation_id"].startswith("conv-")
    assert created["logger"] == "letta_hayhooks.components.session_resolver" and created["request_id"]
    # one line per turn: its conversation and what happened to it, ids and numbers only
    (turn,) = [r for r in records if r.get("event") == "turn"]
    assert turn["conversation_id"] == created["conversation_id"] and turn["fate"] == "new"
    assert turn["session_source"] == "header" and turn["outcome"] == "ok" and turn["letta_run_id"].startswith("run-")
    assert turn["prompt_tokens"] > 0 and turn["seconds_total"] >= turn["seconds_at_letta"] > 0
    assert metric(scraped.text, "letta_hayhooks_turns_total", route="chat", outcome="ok") >= 1
    access = [r for r in records if r["logger"] == "uvicorn.access" and "/v1/chat/completions" in r["message"]]
    assert access and access[0]["request_id"] == created["request_id"]
    assert "OBS-SECRET-TEXT" not in log and "\x1b[" not in log


def test_metrics_of_several_uvicorn_workers_add_up(letta_backend: Backend, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LETTA_BASE_URL": letta_backend.base_url, "TMPDIR": str(tmp_path),
           "HAYSTACK_TELEMETRY_ENABLED": "false", "LETTA_HAYHOOKS_LOG_FORMAT": "json"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path / "uvicorn.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "letta_hayhooks.asgi:create_app", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    server = ServerProcess(kind="uvicorn", url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        wait_ready(server, timeout=90)
        directories = list(tmp_path.glob(f"letta-hayhooks-metrics-{process.pid}-*"))
        assert len(directories) == 1, "the workers share one directory named after uvicorn's process"
        deadline = time.monotonic() + 30
        while len({re.search(r"_(\d+)\.db$", p.name).group(1) for p in directories[0].glob("*.db")}) < 2:
            assert time.monotonic() < deadline, "both workers write their metrics there"
            time.sleep(0.2)
        before = metric(httpx.get(f"{server.url}/metrics", timeout=30).text, "letta_hayhooks_http_requests_total",
                        route="healthz")
        for _ in range(30):  # a new connection each: the kernel spreads them over both workers
            assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
        after = metric(httpx.get(f"{server.url}/metrics", timeout=30).text, "letta_hayhooks_http_requests_total",
                       route="healthz")
        assert after - before == 30  # whichever worker answers the scrape, it counts every worker's requests
    finally:
        server.stop()


# ---- traces

class HeaderRelay(TcpRelay):
    """The TCP relay, keeping what the proxy sent to Letta (request heads carry `traceparent`)."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.sent = bytearray()

    def forwarded(self, data: bytes, *, to_target: bool) -> None:
        if to_target:
            self.sent.extend(data)

    def traceparents(self) -> list[str]:
        return re.findall(r"(?im)^traceparent:\s*(\S+)\r$", self.sent.decode("latin-1"))


@pytest.fixture
def traced_app(letta_backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    """The server app built in this process with tracing on, an in-memory span exporter, Letta behind a relay."""
    from hayhooks.settings import settings as hayhooks_settings
    from haystack import tracing as haystack_tracing
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from pydantic import SecretStr

    from letta_hayhooks.server import agent_models, tracing_setup
    from letta_hayhooks.server.app import create_server_app
    from letta_hayhooks.settings import Settings

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)  # once per process: OpenTelemetry keeps the first
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(hayhooks_settings, "tracing_enabled", True)
    monkeypatch.setattr(hayhooks_settings, "tracing_token", SecretStr("unused"))  # no dashboard token file
    monkeypatch.setattr(agent_models, "_DEFAULT", None)  # this app's own agents, from these settings
    relay = HeaderRelay(letta_backend.letta.letta_port)
    relay.up()
    settings = Settings(_env_file=None, letta_base_url=relay.url, refresh_interval=1)
    app = create_server_app(settings)
    try:
        yield app, exporter, relay
    finally:
        relay.close()
        tracing_setup.uninstrument_httpx()
        haystack_tracing.disable_tracing()
        exporter.shutdown()


async def test_one_trace_per_request_with_the_letta_call_inside(traced_app, agent) -> None:
    app, exporter, relay = traced_app
    session = {"X-Session-Id": f"trace-{uuid.uuid4().hex}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy",
                                 timeout=60) as client:
        answer = await client.post("/v1/chat/completions", headers=session, json={
            "model": agent.name, "messages": [{"role": "user", "content": "hello TRACE-SECRET"}]})
        assert answer.status_code == 200, answer.text
        exporter.clear()
        sent_before = len(relay.traceparents())
        streamed = await client.post("/v1/chat/completions", headers=session, json={
            "model": agent.name, "stream": True, "messages": [
                {"role": "user", "content": "hello TRACE-SECRET"},
                {"role": "assistant", "content": "You said: hello TRACE-SECRET"},
                {"role": "user", "content": "again TRACE-SECRET"}]})
        assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    spans = exporter.get_finished_spans()
    (server_span,) = [s for s in spans if s.kind.name == "SERVER" and s.parent is None]
    request_spans = [s for s in spans if s.context.trace_id == server_span.context.trace_id]
    by_id = {s.context.span_id: s for s in request_spans}

    def ancestors(span) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    components = {s.attributes.get("haystack.component.name") for s in request_spans
                  if s.name == "haystack.component.run"}
    assert {"router", "session", "overlay", "tool_sync", "generator"} <= components
    letta_calls = [s for s in request_spans if s.kind.name == "CLIENT"
                   and "/messages" in str(s.attributes.get("url.full", s.attributes.get("http.url", "")))]
    assert letta_calls, [s.name for s in request_spans]
    generator_span = next(s for s in request_spans if s.attributes.get("haystack.component.name") == "generator")
    assert generator_span.name in ancestors(letta_calls[0]) and server_span.name in ancestors(letta_calls[0])
    assert "stream" in [s.name for s in request_spans]
    # Letta received the trace context of this very request
    trace_id = f"{server_span.context.trace_id:032x}"
    assert any(parent.split("-")[1] == trace_id for parent in relay.traceparents()[sent_before:])
    # no message text on any span
    for span in spans:
        assert "TRACE-SECRET" not in json.dumps(dict(span.attributes or {}), default=str), span.name


def test_metrics_after_a_scripted_workload(letta_backend: Backend, server_factory, agent) -> None:
    # a server of its own, so the counters start at zero: short turn timeout, no session queue (a second request on
    # a busy session is a 429 at once)
    served = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_TURN_TIMEOUT": "4",
                                                              "LETTA_HAYHOOKS_SESSION_QUEUE_DEPTH": "0"})
    wait_for_model(served.url, agent.name)

    def post(content: str, session: str, **kwargs) -> httpx.Response:
        return httpx.post(f"{served.v1}/chat/completions", timeout=60, headers={"X-Session-Id": session},
                          json={"model": agent.name, "messages": [{"role": "user", "content": content}], **kwargs})

    run = uuid.uuid4().hex[:6]
    assert post("one", f"ok-{run}").status_code == 200  # a new session
    assert post("two", f"ok2-{run}", stream=True).status_code == 200
    # a provider failure reaches the proxy after Letta's own handling (over 2 s once on a busy machine): 4 s of room
    assert post("FAIL:500", f"fail-{run}").status_code == 502  # the provider fails
    assert post("SLOW:8000:late", f"slow-{run}").status_code == 504  # past the 4 s turn timeout
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # a second request on a busy session
        busy = pool.submit(post, "SLOW:1000:busy", f"busy-{run}")
        time.sleep(0.3)
        refused = pool.submit(post, "me too", f"busy-{run}")
        assert sorted([busy.result().status_code, refused.result().status_code]) == [200, 429]
    with httpx.stream("POST", f"{served.v1}/chat/completions", timeout=60, headers={"X-Session-Id": f"gone-{run}"},
                      json={"model": agent.name, "stream": True,
                            "messages": [{"role": "user", "content": "DRIP:200:a long answer nobody reads"}]}) as gone:
        next(gone.iter_lines())  # the client hangs up after the first line
    time.sleep(1.5)  # the cancelled turn is reported when its run is closed

    text = httpx.get(f"{served.url}/metrics", timeout=30).text
    turns = {outcome: metric(text, "letta_hayhooks_turns_total", model=agent.name, outcome=outcome)
             for outcome in ("ok", "error", "timeout", "rate_limited", "cancelled")}
    assert turns == {"ok": 3, "error": 1, "timeout": 1, "rate_limited": 1, "cancelled": 1}
    assert metric(text, "letta_hayhooks_turn_duration_seconds_count", model=agent.name) == sum(turns.values())
    assert metric(text, "letta_hayhooks_time_to_first_token_seconds_count", model=agent.name) >= 1
    assert metric(text, "letta_hayhooks_turn_outside_letta_seconds_count", model=agent.name) >= 3
    assert metric(text, "letta_hayhooks_rejected_total", model=agent.name, kind="turn_timeout") == 1
    assert metric(text, "letta_hayhooks_rejected_total", model=agent.name, kind="cancelled") >= 1
    assert metric(text, "letta_hayhooks_session_turns_total", model=agent.name, fate="new") >= 3
    assert metric(text, "letta_hayhooks_letta_errors_total", model=agent.name) == 1
    assert metric(text, "letta_hayhooks_tokens_total", model=agent.name, kind="prompt") > 0
    assert metric(text, "letta_hayhooks_inflight_turns", model=agent.name) == 0
