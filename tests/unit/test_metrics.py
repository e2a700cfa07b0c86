"""
`GET /metrics`, the request-counting middleware, the multiprocess directory and the Grafana dashboard's queries.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import re
import uuid
from pathlib import Path

import httpx
import pytest
from hayhooks.server.pipelines.registry import registry as hayhooks_registry
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from letta_hayhooks import telemetry
from letta_hayhooks.server import multiprocess
from letta_hayhooks.server.agent_models import AgentModels
from letta_hayhooks.server.app import create_server_app
from letta_hayhooks.server.metrics import RequestMetrics, route_of
from letta_hayhooks.settings import Settings
from tests.conftest import ROOT

DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def server_app(**settings: object):
    """The real server app over a catalogue of one agent (no Letta needed for these routes)."""
    config = Settings(_env_file=None, letta_base_url=f"http://127.0.0.1:9/{uuid.uuid4().hex}", **settings)
    models = AgentModels(config, registry=type(hayhooks_registry)())
    models.catalog._store([("agent-1", "writer", None, 1_700_000_000, ())])
    models.apply()
    return create_server_app(config, models=models)


async def get(app, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
        return await client.get(path, headers=headers)


def test_route_labels_are_a_fixed_set() -> None:
    assert route_of("/v1/chat/completions") == route_of("/chat/completions") == "chat"
    assert route_of("/v1/models/some-agent") == "model"
    assert {route_of(f"/random/{uuid.uuid4().hex}") for _ in range(5)} == {"other"}


async def test_metrics_route_serves_the_series_and_counts_requests() -> None:
    app = server_app()
    before = sample("letta_hayhooks_http_requests_total", route="models", model="", status_class="2xx")
    assert (await get(app, "/v1/models")).status_code == 200
    assert (await get(app, "/no/such/route")).status_code == 404
    response = await get(app, "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"letta_hayhooks_http_requests", "letta_hayhooks_turns", "letta_hayhooks_turn_duration_seconds"} <= families
    assert sample("letta_hayhooks_http_requests_total", route="models", model="", status_class="2xx") - before == 1
    assert sample("letta_hayhooks_http_requests_total", route="other", model="", status_class="4xx") >= 1


async def test_metrics_need_a_key_that_may_read_them(tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[[keys]]\nkey = "sk-ops"\nname = "ops"\nmetrics = true\n')
    app = server_app(api_keys=["sk-plain"], api_keys_file=str(keys))
    assert (await get(app, "/metrics")).status_code == 401
    refused = await get(app, "/metrics", {"Authorization": "Bearer sk-plain"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "metrics_not_allowed"
    allowed = await get(app, "/metrics", {"Authorization": "Bearer sk-ops"})
    assert allowed.status_code == 200 and "letta_hayhooks_http_requests_total" in allowed.text
    # the 401 above was counted too: the middleware sits outside the key check
    assert sample("letta_hayhooks_http_requests_total", route="metrics", model="", status_class="4xx") >= 2


async def test_public_metrics_skip_the_key_check_and_metrics_off_removes_the_route() -> None:
    public = server_app(api_keys=["sk-plain"], metrics_public=True)
    assert (await get(public, "/metrics")).status_code == 200
    assert (await get(public, "/v1/models")).status_code == 401  # only the metrics are public
    try:
        off = server_app(metrics=False)
        assert (await get(off, "/metrics")).status_code == 404
        assert not telemetry._state["metrics"]
    finally:
        telemetry.enable_metrics(True)  # the switch is process-wide: one server per process


async def test_a_request_is_counted_under_the_model_of_its_turn() -> None:
    async def chat(_request):
        telemetry.report_turn(telemetry.TurnReport(request_id="r", agent_id="agent-1", model="writer-mw",
                                                   seconds_total=0.1))
        return PlainTextResponse("ok")

    app = RequestMetrics(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
        assert (await client.post("/v1/chat/completions")).status_code == 200
    assert sample("letta_hayhooks_http_requests_total", route="chat", model="writer-mw", status_class="2xx") == 1


async def test_the_turn_line_carries_the_requests_x_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[dict] = []
    monkeypatch.setattr(telemetry, "logger", type("L", (), {"bind": staticmethod(
        lambda **fields: lines.append(fields) or type("B", (), {"info": staticmethod(lambda _m: None)}))}))

    async def chat(request):
        request.scope["state"] = {**request.scope.get("state", {}), "request_id": "abcd1234"}  # as Hayhooks does
        telemetry.report_turn(telemetry.TurnReport(request_id="chatcmpl-1", agent_id="a", model="writer-id"))
        return PlainTextResponse("ok")

    app = RequestMetrics(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
        await client.post("/v1/chat/completions")
    assert (lines[0]["request_id"], lines[0]["completion_id"]) == ("abcd1234", "chatcmpl-1")


async def test_a_streamed_answer_gets_a_stream_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def chunks():
        for part in ("data: 1\n\n", "data: [DONE]\n\n"):
            yield part

    async def stream(_request):
        return StreamingResponse(chunks(), media_type="text/event-stream")

    app = RequestMetrics(Starlette(routes=[Route("/v1/chat/completions", stream, methods=["POST"]),
                                           Route("/v1/models", lambda _r: PlainTextResponse("[]"))]),
                         tracer=provider.get_tracer("test"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
        assert (await client.post("/v1/chat/completions")).text == "data: 1\n\ndata: [DONE]\n\n"
        await client.get("/v1/models")
    assert [span.name for span in exporter.get_finished_spans()] == ["stream"]


def _prepare_in_worker(queue) -> None:
    environ: dict[str, str] = {}
    queue.put((multiprocess.prepare(environ), os.getppid()))


def test_workers_share_a_directory_named_after_their_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert multiprocess.prepare({}) is None  # one process: metrics in memory
    assert multiprocess.prepare({multiprocess.ENV: "/chosen"}) == "/chosen"  # the operator's directory wins
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    stale = tmp_path / "letta-hayhooks-metrics-999999999-1"  # a server that no longer runs
    stale.mkdir()
    context = multiprocessing.get_context("spawn")  # how uvicorn starts its workers
    queue = context.Queue()
    workers = [context.Process(target=_prepare_in_worker, args=(queue,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
    (first, parent), (second, _) = results
    assert first == second and Path(first).parent == tmp_path and Path(first).is_dir()
    assert Path(first).name.startswith(f"letta-hayhooks-metrics-{parent}-") and parent == os.getpid()
    assert not stale.exists()


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    return queries


def test_the_dashboard_queries_only_exported_series() -> None:
    queries = _dashboard_queries()
    used = {name for query in queries for name in re.findall(r"\b(letta_hayhooks_[a-z0-9_]+)\b", query)}
    assert used, "the dashboard has no queries"
    assert used <= telemetry.METRIC_NAMES, sorted(used - telemetry.METRIC_NAMES)
    # and it shows every metric the server exports
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in telemetry.METRIC_NAMES}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert families <= shown, sorted(families - shown)


def test_the_exported_names_are_what_prometheus_sees() -> None:
    exposed = {sample.name for family in REGISTRY.collect() for sample in family.samples
               if sample.name.startswith(telemetry.PREFIX)}
    assert exposed <= telemetry.METRIC_NAMES


async def test_start_up_puts_its_objects_out_of_the_collectors_sight() -> None:
    # a full collection would otherwise scan every module and pipeline object (47 ms, measured) during some turn
    app = server_app()
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
