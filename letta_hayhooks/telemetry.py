"""
What operators see of each turn: one INFO log line and the turn metrics (Prometheus), from one `TurnReport`.

The chat orchestration builds a `TurnReport` when a turn ends (however it ends) and calls `report_turn`; the load
control calls `set_queue` and `count_rejected`; the prompt overlay calls `count_overlay_write`; the agent catalogue
calls `catalog_refreshed`. Every metric of the server is declared here, so `/metrics`, the Grafana dashboard and the
README name the same series (`METRIC_NAMES`).

Nothing here carries message text or keys: a report holds ids, counts, durations and codes only.

Metrics go to prometheus_client's default registry. Under several uvicorn workers its multiprocess mode must be
switched on before this module is imported (`letta_hayhooks.server.multiprocess` does it for the entry points).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any, Literal

from loguru import logger
from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

try:  # traces are optional: without OpenTelemetry the span attributes are skipped
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - opentelemetry-api comes with the tracing extra and letta-client's deps
    _otel_trace = None

Route = Literal["chat", "responses"]
SessionSource = Literal["header", "openwebui", "user", "transcript", "none"]
Fate = Literal["new", "continued", "branched", "replayed", "throwaway"]
Outcome = Literal["ok", "error", "cancelled", "timeout", "rate_limited"]

PREFIX = "letta_hayhooks_"
# the `_created` series would double every counter's output and serve no query here
disable_created_metrics()
# A turn takes from tens of milliseconds (a replayed answer) to the 600 s turn timeout.
_TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The proxy's own share of a turn: a few milliseconds when healthy.
_OUTSIDE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

HTTP_REQUESTS = Counter(
    PREFIX + "http_requests", "HTTP requests answered, by route, model and status class (2xx, 4xx, ...).",
    ["route", "model", "status_class"],
)
TURNS = Counter(PREFIX + "turns", "Turns finished, by model, API route and outcome.", ["model", "route", "outcome"])
TURN_SECONDS = Histogram(
    PREFIX + "turn_duration_seconds", "Whole turn, request to last byte, seconds.", ["model", "route"],
    buckets=_TURN_BUCKETS,
)
TTFT_SECONDS = Histogram(
    PREFIX + "time_to_first_token_seconds", "Streams: request to first content, seconds.", ["model"],
    buckets=_TTFT_BUCKETS,
)
OUTSIDE_LETTA_SECONDS = Histogram(
    PREFIX + "turn_outside_letta_seconds", "Time of a turn not spent waiting for Letta (the proxy's share), seconds.",
    ["model"], buckets=_OUTSIDE_BUCKETS,
)
INFLIGHT = Gauge(PREFIX + "inflight_turns", "Letta turns in flight, per model (agent).", ["model"],
                 multiprocess_mode="livesum")
QUEUED = Gauge(PREFIX + "queued_requests", "Requests waiting for their session or a turn slot, per model (agent).",
               ["model"], multiprocess_mode="livesum")
REJECTED = Counter(
    PREFIX + "rejected", "Requests refused or ended early, by model and kind "
    "(queue_full, queue_timeout, turn_timeout, cancelled, shutting_down).", ["model", "kind"],
)
LETTA_ERRORS = Counter(PREFIX + "letta_errors", "Turns Letta failed, by model and stop reason (or error code).",
                       ["model", "stop_reason"])
SESSIONS = Counter(PREFIX + "session_turns", "Turns by what happened to the session: new, continued, branched, "
                   "replayed, throwaway.", ["model", "fate"])
TOKENS = Counter(PREFIX + "tokens", "Tokens Letta reported, by model and kind (prompt, completion).", ["model", "kind"])
OVERLAY_WRITES = Counter(PREFIX + "overlay_block_writes", "System-prompt block writes to Letta, by model and action "
                         "(created, updated, touched, deleted).", ["model", "action"])
CATALOG_AGENTS = Gauge(PREFIX + "catalog_agents", "Agents the catalogue serves.", multiprocess_mode="mostrecent")
CATALOG_REFRESHED = Gauge(PREFIX + "catalog_last_refresh_timestamp_seconds",
                          "Unix time of the last successful catalogue refresh (age: time() - this).",
                          multiprocess_mode="max")
CATALOG_FAILURES = Counter(PREFIX + "catalog_refresh_failures",
                           "Catalogue refreshes that could not list Letta's agents.")

_METRICS = (HTTP_REQUESTS, TURNS, TURN_SECONDS, TTFT_SECONDS, OUTSIDE_LETTA_SECONDS, INFLIGHT, QUEUED, REJECTED,
            LETTA_ERRORS, SESSIONS, TOKENS, OVERLAY_WRITES, CATALOG_AGENTS, CATALOG_REFRESHED, CATALOG_FAILURES)
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
# every series name /metrics can show (the dashboard test checks its queries against these)
METRIC_NAMES = frozenset(
    metric._name + suffix for metric in _METRICS for suffix in _SUFFIXES[metric._type]
)

_state = {"metrics": True}


def enable_metrics(enabled: bool) -> None:
    """Switch metric updates on or off (LETTA_HAYHOOKS_METRICS); the turn log line is written either way."""
    _state["metrics"] = enabled


@dataclass(frozen=True, slots=True)
class TurnReport:
    """
    One finished turn, as operators see it. No message text: ids, counts, durations, codes.

    `request_id` is the id the chat service knows the request by (its completion id is fine): when the request came
    through the server, the log line carries the request's X-Request-Id as `request_id` (as every other line of the
    request does) and this id as `completion_id`.

    `model` is the served model id (the agent's name when unique); it labels the metrics. `seconds_at_letta` is the
    time spent waiting for Letta when known; `ttft_seconds` is None for non-stream answers and streams that sent no
    content.
    """

    request_id: str
    agent_id: str
    model: str
    route: Route = "chat"
    session_source: SessionSource = "none"
    conversation_id: str | None = None
    fate: Fate | None = None
    letta_run_id: str | None = None
    stop_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds_at_letta: float | None = None
    seconds_total: float = 0.0
    ttft_seconds: float | None = None
    outcome: Outcome = "ok"
    error_code: str | None = None


# (dataclasses.asdict deep-copies every value: a third of a report's cost)
_REPORT_FIELDS = tuple(field.name for field in fields(TurnReport))


def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: prometheus_client looks children up under a lock each time."""
    key = (metric, labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


_CHILDREN: dict[tuple, Any] = {}


def outcome_of(status: int | None, code: str | None = None) -> Outcome:
    """The outcome of a turn that ended with an error of this HTTP status and code (None: no error)."""
    if status is None:
        return "ok"
    if status == 429:
        return "rate_limited"
    if status == 504 or code in ("letta_timeout", "llm_timeout"):
        return "timeout"
    if status == 499 or code == "cancelled":
        return "cancelled"
    return "error"


def _summary(report: TurnReport) -> str:
    parts = [f"Turn {report.outcome}: {report.model} {report.route}"]
    if report.fate:
        parts.append(f"{report.fate} session")
    parts.append(f"in {report.seconds_total * 1000:.0f} ms")
    if report.seconds_at_letta is not None:
        parts.append(f"(Letta {report.seconds_at_letta * 1000:.0f} ms)")
    if report.error_code:
        parts.append(f"error {report.error_code}")
    return " ".join(parts)


def report_turn(report: TurnReport) -> None:
    """Write the turn's INFO line (its fields as structured data) and update the turn metrics and the span."""
    fields = {name: value for name in _REPORT_FIELDS if (value := getattr(report, name)) is not None}
    labels = REQUEST_LABELS.get()
    http_id = labels.request_id() if labels is not None else None
    if http_id and http_id != report.request_id:
        # the line joins the request's other lines by its X-Request-Id; the service's own id stays beside it
        fields["completion_id"] = report.request_id
        fields["request_id"] = http_id
    logger.bind(event="turn", **fields).info(_summary(report))
    _annotate_span(report)
    if not _state["metrics"]:
        return
    model = report.model
    _child(TURNS, model, report.route, report.outcome).inc()
    _child(TURN_SECONDS, model, report.route).observe(report.seconds_total)
    if report.ttft_seconds is not None:
        _child(TTFT_SECONDS, model).observe(report.ttft_seconds)
    if report.seconds_at_letta is not None:
        _child(OUTSIDE_LETTA_SECONDS, model).observe(max(report.seconds_total - report.seconds_at_letta, 0.0))
    if report.fate is not None:
        _child(SESSIONS, model, report.fate).inc()
    if report.prompt_tokens:
        _child(TOKENS, model, "prompt").inc(report.prompt_tokens)
    if report.completion_tokens:
        _child(TOKENS, model, "completion").inc(report.completion_tokens)
    if report.outcome == "error":
        _child(LETTA_ERRORS, model, report.stop_reason or report.error_code or "unknown").inc()
    _request_model(model)


def count_rejected(kind: str, model: str) -> None:
    """
    Count a request refused or ended early, where it happens: `queue_full` (429, the session queue is full),
    `queue_timeout` (429, no slot in time), `turn_timeout` (504), `cancelled` (the client went away),
    `shutting_down` (503). `model` is the served model id.
    """
    if _state["metrics"]:
        REJECTED.labels(model, kind).inc()
        _request_model(model)


def set_queue(model: str, queued: int, inflight: int) -> None:
    """The load of one model (agent) now: requests waiting for a slot, and Letta turns in flight."""
    if _state["metrics"]:
        QUEUED.labels(model).set(queued)
        INFLIGHT.labels(model).set(inflight)


def count_overlay_write(model: str, action: str) -> None:
    """
    One write of a session's system-prompt block: `created`, `updated`, `touched` or `deleted`. `model` is the
    served model id, or the agent id where only that is known (the prompt overlay component).
    """
    if _state["metrics"]:
        OVERLAY_WRITES.labels(model, action).inc()


def catalog_refreshed(agents: int | None, at: float | None) -> None:
    """A catalogue refresh: the number of agents served and its time; `agents` None for a failed refresh."""
    if not _state["metrics"]:
        return
    if agents is None:
        CATALOG_FAILURES.inc()
        return
    CATALOG_AGENTS.set(agents)
    if at is not None:
        CATALOG_REFRESHED.set(at)


# ---- the HTTP request a turn belongs to: the metrics middleware labels its request count with the turn's model
class RequestLabels:
    """What only the chat path knows of an HTTP request (its model); the middleware reads it once answered."""

    __slots__ = ("model", "scope")

    def __init__(self, scope: dict | None = None) -> None:
        self.model = ""
        self.scope = scope

    def request_id(self) -> str | None:
        """The X-Request-Id Hayhooks gave the request (its middleware runs inside the metrics middleware)."""
        state = (self.scope or {}).get("state") or {}
        return state.get("request_id") if isinstance(state, dict) else None


REQUEST_LABELS: ContextVar[RequestLabels | None] = ContextVar("letta_hayhooks_request_labels", default=None)


def _request_model(model: str) -> None:
    labels = REQUEST_LABELS.get()
    if labels is not None:
        labels.model = model


def _annotate_span(report: TurnReport) -> None:
    """The turn's ids and counts on the current span (the request's server span), when tracing is on."""
    if _otel_trace is None:
        return
    span = _otel_trace.get_current_span()
    if not span.is_recording():
        return
    attributes = {
        "letta.agent_id": report.agent_id,
        "letta.model": report.model,
        "letta.conversation_id": report.conversation_id,
        "letta.session.fate": report.fate,
        "letta.session.source": report.session_source,
        "letta.run_id": report.letta_run_id,
        "letta.stop_reason": report.stop_reason,
        "letta.outcome": report.outcome,
        "letta.error_code": report.error_code,
        "gen_ai.usage.input_tokens": report.prompt_tokens,
        "gen_ai.usage.output_tokens": report.completion_tokens,
    }
    span.set_attributes({key: value for key, value in attributes.items() if value is not None})
