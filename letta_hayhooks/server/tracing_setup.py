"""
OpenTelemetry traces: one trace per request when Hayhooks tracing is on (`HAYHOOKS_TRACING_ENABLED=true`) and an
OpenTelemetry SDK tracer provider is set (Hayhooks sets one up from `OTEL_EXPORTER_OTLP_ENDPOINT`).

The trace: the server span (Hayhooks' FastAPI instrumentation), a span per pipeline component (Haystack's tracer),
the Letta HTTP calls (httpx instrumentation, which also sends `traceparent` to Letta), the `stream` span of a
streamed answer (server/metrics.py), and the turn's ids and counts on the server span (`telemetry.report_turn`).
No message text: Haystack's content tracing stays off unless `LETTA_HAYHOOKS_DEBUG_INCLUDE_TEXT` is on, and query
strings on spans are redacted like the access log's.

The server's own app is instrumented here (Hayhooks instruments only its app, which the server mounts behind its own
routes), so with tracing off no request pays for spans nobody records.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from hayhooks import log
from haystack.tracing import Span, Tracer
from haystack.tracing import tracer as haystack_tracer

from letta_hayhooks.server.access_log import redact_query
from letta_hayhooks.settings import Settings

SERVICE_NAME = "letta-hayhooks"
_state = {"httpx": False}


def tracing_active() -> bool:
    """True when Hayhooks tracing is on and an OpenTelemetry SDK tracer provider records spans."""
    from hayhooks.settings import settings as hayhooks_settings  # noqa: PLC0415 - read after the defaults

    if not hayhooks_settings.tracing_enabled:
        return False
    try:
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    except ImportError:
        return False
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def _redact_span_urls(span: Any, scope: dict[str, Any]) -> None:
    """Server-span hook: the query string as the access log shows it (secret-looking values redacted)."""
    query = scope.get("query_string", b"").decode("latin-1")
    if not query or not span.is_recording():
        return
    redacted = redact_query(f"{scope.get('path', '')}?{query}")
    span.set_attribute("url.query", redacted.partition("?")[2])
    span.set_attribute("http.target", redacted)
    span.set_attribute("url.full", redacted)
    span.set_attribute("http.url", redacted)


def configure_tracing(app: FastAPI, settings: Settings) -> Any:
    """Set up (or take off) the app's tracing; returns a tracer for the server's own spans, None when off."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: PLC0415
    except ImportError:
        FastAPIInstrumentor = None  # noqa: N806 - the class, when the tracing extra is installed
    if not tracing_active():
        return None
    from haystack import tracing  # noqa: PLC0415
    from opentelemetry import trace  # noqa: PLC0415

    if FastAPIInstrumentor is not None:
        # again, with the query strings redacted; send/receive spans per chunk would cost latency
        FastAPIInstrumentor.instrument_app(app, server_request_hook=_redact_span_urls,
                                           exclude_spans=["send", "receive"])
    else:
        log.warning("Tracing is on but opentelemetry-instrumentation-fastapi is missing: no server spans "
                    "(install letta-hayhooks[tracing])")
    if not tracing.is_tracing_enabled():
        try:
            from haystack_integrations.tracing.opentelemetry import OpenTelemetryTracer  # noqa: PLC0415
        except ImportError:
            log.warning("Tracing is on but opentelemetry-haystack is missing: no component spans")
        else:
            tracing.enable_tracing(OpenTelemetryTracer(trace.get_tracer(SERVICE_NAME)))
    if tracing.is_tracing_enabled() and not isinstance(tracing.tracer.actual_tracer, ContentFreeTracer):
        tracing.enable_tracing(ContentFreeTracer(tracing.tracer.actual_tracer))
    # component inputs and outputs are message text
    tracing.tracer.is_content_tracing_enabled = settings.debug_include_text
    _instrument_httpx()
    return trace.get_tracer(SERVICE_NAME)


# Haystack tags every pipeline run with its whole input (the request's messages) whatever its content switch says
_CONTENT_TAGS = frozenset({"haystack.pipeline.input_data", "haystack.pipeline.output_data",
                           "haystack.component.input", "haystack.component.output"})


class ContentFreeTracer(Tracer):
    """Haystack's tracer without content tags, unless Haystack's content tracing is on."""

    def __init__(self, delegate: Tracer) -> None:
        self.delegate = delegate

    @contextlib.contextmanager
    def trace(
        self, operation_name: str, tags: dict[str, Any] | None = None, parent_span: Span | None = None
    ) -> Iterator[Span]:
        """A span of the delegate, its content tags left out."""
        if tags and not haystack_tracer.is_content_tracing_enabled:
            tags = {key: value for key, value in tags.items() if key not in _CONTENT_TAGS}
        with self.delegate.trace(operation_name, tags=tags, parent_span=parent_span) as span:
            yield span

    def current_span(self) -> Span | None:
        """The delegate's current span."""
        return self.delegate.current_span()


def _instrument_httpx() -> None:
    if _state["httpx"]:
        return
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor  # noqa: PLC0415
    except ImportError:
        log.warning("Tracing is on but opentelemetry-instrumentation-httpx is missing: no Letta call spans")
        return
    HTTPXClientInstrumentor().instrument()  # letta-client talks httpx: spans and `traceparent` for every Letta call
    _state["httpx"] = True


def uninstrument_httpx() -> None:
    """Undo `_instrument_httpx` (tests)."""
    if _state["httpx"]:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor  # noqa: PLC0415

        HTTPXClientInstrumentor().uninstrument()
        _state["httpx"] = False
