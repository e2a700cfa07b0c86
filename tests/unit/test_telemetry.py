"""
The turn report (one INFO line, the turn metrics, the span's attributes) and the server's one logging setup.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from haystack import logging as haystack_logging
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from letta_hayhooks import telemetry
from letta_hayhooks.server import logging_setup
from letta_hayhooks.settings import Settings
from letta_hayhooks.telemetry import TurnReport, report_turn


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Log(io.StringIO):
    """A log stream that is not a terminal."""

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


@pytest.fixture
def server_log() -> Iterator[callable]:
    """Set up the server's logging into a buffer (as the entry points do); put loguru back afterwards."""
    streams: list[Log] = []

    def configure(**settings: object) -> Log:
        stream = Log()
        streams.append(stream)
        logging_setup.configure_logging(Settings(_env_file=None, **settings), stream=stream)
        return stream

    yield configure
    if logging_setup._state["handler"] is not None:
        logger.remove(logging_setup._state["handler"])
        logging_setup._state["handler"] = None
    logger.add(__import__("sys").stderr, level="INFO")
    for name in logging_setup.ROUTED_LOGGERS:
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True


def report(**overrides: object) -> TurnReport:
    fields = {
        "request_id": "req-1", "agent_id": "agent-7", "model": "writer-telemetry", "route": "chat",
        "session_source": "header", "conversation_id": "conv-9", "fate": "new", "letta_run_id": "run-3",
        "stop_reason": "end_turn", "prompt_tokens": 120, "completion_tokens": 30, "seconds_at_letta": 0.25,
        "seconds_total": 0.4, "ttft_seconds": 0.3, "outcome": "ok",
    }
    return TurnReport(**{**fields, **overrides})


def test_a_turn_writes_one_info_line_with_its_fields(server_log) -> None:
    log = server_log(LETTA_HAYHOOKS_LOG_FORMAT="json")
    report_turn(report())
    (line,) = [r for r in log.records() if r.get("event") == "turn"]
    assert line["level"] == "INFO" and line["request_id"] == "req-1"
    assert line["message"] == "Turn ok: writer-telemetry chat new session in 400 ms (Letta 250 ms)"
    assert {key: line[key] for key in ("agent_id", "model", "route", "session_source", "conversation_id", "fate",
                                        "letta_run_id", "stop_reason", "prompt_tokens", "completion_tokens",
                                        "seconds_at_letta", "seconds_total", "ttft_seconds", "outcome")} == {
        "agent_id": "agent-7", "model": "writer-telemetry", "route": "chat", "session_source": "header",
        "conversation_id": "conv-9", "fate": "new", "letta_run_id": "run-3", "stop_reason": "end_turn",
        "prompt_tokens": 120, "completion_tokens": 30, "seconds_at_letta": 0.25, "seconds_total": 0.4,
        "ttft_seconds": 0.3, "outcome": "ok",
    }
    assert "error_code" not in line  # fields without a value are left out
    assert line["time"].endswith("Z") and line["logger"]


def test_a_turn_updates_the_turn_metrics() -> None:
    model = "writer-metrics"
    before = {
        "turns": sample("letta_hayhooks_turns_total", model=model, route="chat", outcome="ok"),
        "duration": sample("letta_hayhooks_turn_duration_seconds_count", model=model, route="chat"),
        "outside": sample("letta_hayhooks_turn_outside_letta_seconds_sum", model=model),
        "ttft": sample("letta_hayhooks_time_to_first_token_seconds_count", model=model),
        "new": sample("letta_hayhooks_session_turns_total", model=model, fate="new"),
        "prompt": sample("letta_hayhooks_tokens_total", model=model, kind="prompt"),
        "completion": sample("letta_hayhooks_tokens_total", model=model, kind="completion"),
    }
    report_turn(report(model=model))
    report_turn(report(model=model, fate="continued", ttft_seconds=None, seconds_at_letta=None))
    assert sample("letta_hayhooks_turns_total", model=model, route="chat", outcome="ok") - before["turns"] == 2
    assert sample("letta_hayhooks_turn_duration_seconds_count", model=model, route="chat") - before["duration"] == 2
    # time outside Letta is known for the first turn only: 0.4 s - 0.25 s
    assert sample("letta_hayhooks_turn_outside_letta_seconds_sum", model=model) - before["outside"] == \
        pytest.approx(0.15)
    assert sample("letta_hayhooks_time_to_first_token_seconds_count", model=model) - before["ttft"] == 1
    assert sample("letta_hayhooks_session_turns_total", model=model, fate="new") - before["new"] == 1
    assert sample("letta_hayhooks_session_turns_total", model=model, fate="continued") == 1
    assert sample("letta_hayhooks_tokens_total", model=model, kind="prompt") - before["prompt"] == 240
    assert sample("letta_hayhooks_tokens_total", model=model, kind="completion") - before["completion"] == 60
    assert sample("letta_hayhooks_turn_duration_seconds_bucket", model=model, route="chat", le="0.5") == 2


def test_a_failed_turn_counts_as_a_letta_error_by_stop_reason(server_log) -> None:
    log = server_log(LETTA_HAYHOOKS_LOG_FORMAT="json")
    model = "writer-errors"
    report_turn(report(model=model, outcome="error", stop_reason="llm_api_error", error_code="rate_limit_exceeded"))
    report_turn(report(model=model, outcome="timeout", stop_reason=None, error_code="letta_timeout"))
    assert sample("letta_hayhooks_letta_errors_total", model=model, stop_reason="llm_api_error") == 1
    assert sample("letta_hayhooks_turns_total", model=model, route="chat", outcome="timeout") == 1
    assert sample("letta_hayhooks_letta_errors_total", model=model, stop_reason="letta_timeout") == 0
    first = next(r for r in log.records() if r.get("event") == "turn")
    assert first["error_code"] == "rate_limit_exceeded" and "error rate_limit_exceeded" in first["message"]


def test_load_events_and_the_catalogue() -> None:
    model = "writer-load"
    telemetry.count_rejected("queue_full", model)
    telemetry.count_rejected("queue_full", model)
    telemetry.set_queue(model, queued=3, inflight=2)
    telemetry.count_overlay_write(model, "created")
    failures = sample("letta_hayhooks_catalog_refresh_failures_total")
    telemetry.catalog_refreshed(5, 1_700_000_000.0)
    telemetry.catalog_refreshed(None, None)
    assert sample("letta_hayhooks_rejected_total", model=model, kind="queue_full") == 2
    assert sample("letta_hayhooks_queued_requests", model=model) == 3
    assert sample("letta_hayhooks_inflight_turns", model=model) == 2
    assert sample("letta_hayhooks_overlay_block_writes_total", model=model, action="created") == 1
    assert sample("letta_hayhooks_catalog_agents") == 5
    assert sample("letta_hayhooks_catalog_last_refresh_timestamp_seconds") == 1_700_000_000.0
    assert sample("letta_hayhooks_catalog_refresh_failures_total") - failures == 1


def test_metrics_off_still_logs_the_turn(server_log) -> None:
    log = server_log(LETTA_HAYHOOKS_LOG_FORMAT="json")
    telemetry.enable_metrics(False)
    try:
        report_turn(report(model="writer-off"))
        telemetry.count_rejected("queue_full", "writer-off")
    finally:
        telemetry.enable_metrics(True)
    assert sample("letta_hayhooks_turns_total", model="writer-off", route="chat", outcome="ok") == 0
    assert sample("letta_hayhooks_rejected_total", model="writer-off", kind="queue_full") == 0
    assert [r["model"] for r in log.records() if r.get("event") == "turn"] == ["writer-off"]


def test_the_turn_lands_on_the_current_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("POST /v1/chat/completions"):
        report_turn(report(model="writer-span"))
    (span,) = exporter.get_finished_spans()
    assert span.attributes["letta.conversation_id"] == "conv-9" and span.attributes["letta.run_id"] == "run-3"
    assert span.attributes["letta.stop_reason"] == "end_turn" and span.attributes["gen_ai.usage.input_tokens"] == 120
    assert "letta.error_code" not in span.attributes


def test_component_logs_reach_the_server_log_with_their_fields(server_log) -> None:
    log = server_log(LETTA_HAYHOOKS_LOG_FORMAT="json")
    component_logger = haystack_logging.getLogger("letta_hayhooks.components.session_resolver")
    component_logger.info("Session {scope} of agent {agent_id} -> new conversation {conversation_id}",
                          scope="s1", agent_id="agent-1", conversation_id="conv-1")
    component_logger.debug("below the level")
    (line,) = log.records()
    assert line["message"] == "Session s1 of agent agent-1 -> new conversation conv-1"
    assert line["logger"] == "letta_hayhooks.components.session_resolver" and line["level"] == "INFO"
    assert (line["scope"], line["agent_id"], line["conversation_id"]) == ("s1", "agent-1", "conv-1")


def test_text_format_has_no_colour_codes_off_a_terminal(server_log) -> None:
    log = server_log()
    haystack_logging.getLogger("haystack.core.pipeline").warning("Component {component} is slow", component="router")
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:1",
                                            extra={"color_message": "Uvicorn running on \x1b[1m%s\x1b[0m"})
    report_turn(report(model="writer-text"))
    text = log.getvalue()
    assert "\x1b[" not in text
    assert "Component router is slow | component='router'" in text
    assert "Uvicorn running on http://127.0.0.1:1" in text
    assert "Turn ok: writer-text chat" in text and "conversation_id='conv-9'" in text


def test_exceptions_show_type_and_frames_but_not_their_message(server_log) -> None:
    log = server_log(LETTA_HAYHOOKS_LOG_FORMAT="json")

    def fail() -> None:
        secret_prompt = "the user's SECRET text"
        raise ValueError(secret_prompt)

    try:
        fail()
    except ValueError:
        logger.exception("Unhandled error")
    (line,) = log.records()
    assert "ValueError" in line["exception"] and "in fail" in line["exception"]
    assert "SECRET" not in log.getvalue()
    shown = server_log(LETTA_HAYHOOKS_LOG_FORMAT="json", LETTA_HAYHOOKS_DEBUG_INCLUDE_TEXT="true")
    try:
        fail()
    except ValueError:
        logger.exception("Unhandled error")
    assert "ValueError: the user's SECRET text" in shown.records()[0]["exception"]


def test_haystacks_per_turn_info_lines_only_at_debug(server_log) -> None:
    log = server_log(LETTA_HAYHOOKS_LOG_FORMAT="json")
    pipeline_logger = haystack_logging.getLogger("haystack.core.pipeline.base")
    pipeline_logger.info("Running component {component_name}", component_name="router")
    assert log.records() == []
    verbose = server_log(LETTA_HAYHOOKS_LOG_FORMAT="json", LETTA_HAYHOOKS_LOG_LEVEL="DEBUG")
    pipeline_logger.info("Running component {component_name}", component_name="router")
    assert [r["message"] for r in verbose.records()] == ["Running component router"]


def test_the_level_setting_applies(server_log) -> None:
    log = server_log(LETTA_HAYHOOKS_LOG_FORMAT="json", LETTA_HAYHOOKS_LOG_LEVEL="warning")
    report_turn(report(model="writer-quiet"))
    logger.warning("kept")
    assert [r["message"] for r in log.records()] == ["kept"]


def test_outcomes_of_errors() -> None:
    assert telemetry.outcome_of(None) == "ok"
    assert telemetry.outcome_of(429, "rate_limit_exceeded") == "rate_limited"
    assert telemetry.outcome_of(504, "letta_timeout") == telemetry.outcome_of(504) == "timeout"
    assert telemetry.outcome_of(499, "cancelled") == "cancelled"
    assert telemetry.outcome_of(502, "llm_api_error") == telemetry.outcome_of(400, "context_length_exceeded") == "error"
