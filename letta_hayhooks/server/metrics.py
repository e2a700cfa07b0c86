"""
`GET /metrics` (Prometheus text format) and the middleware that counts every HTTP request.

The series are declared in `letta_hayhooks.telemetry`. The middleware labels each request with a route from a fixed
set (never the raw path: clients choose paths), the model of the turn it carried (set by `report_turn`, so only
served models, never a client's string) and its status class. It also opens a `stream` span around a streamed
answer when tracing is on.

`/metrics` needs an API key that may read metrics (admin, or `metrics = true`) when keys are configured, unless
`LETTA_HAYHOOKS_METRICS_PUBLIC` is set: then the middleware answers it before the key check.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from letta_hayhooks import telemetry
from letta_hayhooks.server.access import OperatorRoute, may_reach
from letta_hayhooks.server.multiprocess import ENV as MULTIPROC_ENV

ASGIApp = Callable[[MutableMapping[str, Any], Callable, Callable], Awaitable[None]]
METRICS_PATH = "/metrics"
# path -> route label; anything else is "other"
_ROUTES = {
    "/v1/chat/completions": "chat", "/chat/completions": "chat",
    "/v1/responses": "responses", "/responses": "responses",
    "/v1/models": "models", "/models": "models",
    "/health": "health", "/healthz": "healthz", METRICS_PATH: "metrics",
    "/v1/letta/sessions": "sessions",
}
_STATUS_CLASSES = {code: f"{code}xx" for code in range(1, 6)}


def route_of(path: str) -> str:
    """The route label of a request path (a fixed set, so a client cannot grow the series)."""
    route = _ROUTES.get(path)
    if route is not None:
        return route
    if path.startswith(("/v1/models/", "/models/")):
        return "model"
    return "other"


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format: this process', or every worker's in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


async def _send_metrics(send: Callable) -> None:
    body, content_type = render()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Counts requests by route, model and status class; answers a public `/metrics`; spans a streamed answer."""

    def __init__(self, app: ASGIApp, *, count: bool = True, public_metrics: bool = False, tracer: Any = None) -> None:
        self.app = app
        self.count = count
        self.public_metrics = public_metrics
        self.tracer = tracer  # an OpenTelemetry tracer when tracing is on

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if self.public_metrics and path == METRICS_PATH and scope["method"] == "GET":
            await _send_metrics(send)
            telemetry.HTTP_REQUESTS.labels("metrics", "", "2xx").inc()
            return
        labels = telemetry.RequestLabels(scope)
        token = telemetry.REQUEST_LABELS.set(labels)
        status = 500  # what the server answers when the app raises before it starts a response
        span = None

        async def observed_send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, span
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.tracer is not None and _is_event_stream(message):
                    span = self.tracer.start_span("stream", attributes={"http.response.status_code": status})
            elif span is not None and message["type"] == "http.response.body" and not message.get("more_body"):
                span.end()
                span = None
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            telemetry.REQUEST_LABELS.reset(token)
            if span is not None:  # the client went away mid-stream
                span.set_attribute("letta.stream.interrupted", True)
                span.end()
            if self.count:
                status_class = _STATUS_CLASSES.get(status // 100, "other")
                telemetry._child(telemetry.HTTP_REQUESTS, route_of(path), labels.model, status_class).inc()


def _is_event_stream(message: MutableMapping[str, Any]) -> bool:
    return any(key == b"content-type" and value.startswith(b"text/event-stream") for key, value in message["headers"])


def install_metrics_route(app: FastAPI, tenant_of: Callable[[MutableMapping[str, Any]], Any]) -> None:
    """`GET /metrics` for keys that may read metrics (every caller when no API keys are configured)."""

    @app.get(METRICS_PATH, tags=["operators"], summary="Prometheus metrics (admin keys, or keys granted metrics)")
    async def metrics(request: Request) -> Response:
        tenant = tenant_of(request.scope)
        if not may_reach(tenant, OperatorRoute("metrics")):
            body = {"error": {"message": "This API key may not read metrics: it needs an admin key or `metrics`.",
                              "type": "permission_error", "param": None, "code": "metrics_not_allowed"}}
            return JSONResponse(body, status_code=403)
        content, content_type = render()
        return Response(content, media_type=content_type)
