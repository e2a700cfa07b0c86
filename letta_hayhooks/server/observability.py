"""
What `create_server_app` adds for operators, in one call: metrics (the request middleware and `GET /metrics`),
traces (server/tracing_setup.py) and the stdlib loggers taken back from Hayhooks (server/logging_setup.py).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from letta_hayhooks import telemetry
from letta_hayhooks.server import logging_setup
from letta_hayhooks.server.metrics import RequestMetrics, install_metrics_route
from letta_hayhooks.server.tracing_setup import configure_tracing
from letta_hayhooks.settings import Settings


def install_observability(
    app: FastAPI, settings: Settings, tenant_of: Callable[[MutableMapping[str, Any]], Any]
) -> None:
    """Metrics and traces for `app`, as the settings say; its last middleware, so the outermost."""
    telemetry.enable_metrics(settings.metrics)
    if logging_setup.is_configured():
        # Hayhooks' create_app() just routed uvicorn's loggers through its own handler (which keeps ANSI colours)
        logging_setup.route_stdlib_logging(settings)
    tracer = configure_tracing(app, settings)
    if settings.metrics:
        install_metrics_route(app, tenant_of)
    if settings.metrics or tracer is not None:
        # outermost of the app's middleware: it sees every answer, the API key middleware's 401s included
        app.add_middleware(RequestMetrics, count=settings.metrics,
                           public_metrics=settings.metrics and settings.metrics_public, tracer=tracer)
