"""The server's HTTP surface: its own routes answer the OpenAI APIs, Hayhooks' app what they leave, errors as OpenAI's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import letta_client
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hayhooks import BasePipelineWrapper
from hayhooks.server.pipelines.registry import registry as hayhooks_registry
from starlette.requests import Request

from letta_hayhooks.errors import OpenAIError
from letta_hayhooks.openai_wire import DONE, WireChunk
from letta_hayhooks.server.agent_models import AgentModels
from letta_hayhooks.server.app import create_server_app, install_error_handlers
from letta_hayhooks.server.chat_completions import sse_frames
from letta_hayhooks.server.request_body import JSON_BODY_STATE, request_json
from letta_hayhooks.settings import Settings


@pytest.fixture
def models() -> Iterator[AgentModels]:
    # a backend nobody listens on, a URL of its own so this catalogue is not the one other tests share
    settings = Settings(letta_base_url=f"http://127.0.0.1:9/{uuid.uuid4().hex}", max_body_bytes=1000)
    agent_models = AgentModels(settings)  # Hayhooks' own registry: its routes read that one
    agent_models.catalog._store([("agent-1", "writer", None, 1_700_000_000, ())])
    agent_models.apply()
    yield agent_models
    for name in list(agent_models.wrappers):
        hayhooks_registry.remove(name)


@pytest.fixture
def client(models: AgentModels) -> TestClient:
    return TestClient(create_server_app(models.settings, models), raise_server_exceptions=False)


def test_the_openapi_docs_show_the_routes_that_answer(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/conversations", "/v1/models", "/v1/models/{model}"):
        assert path in paths
    # answered by the server's route (an OpenAI body), not by Hayhooks' behind it
    answer = client.post("/v1/chat/completions", json={"model": "ghost", "messages": []})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "model_not_found"


def test_bad_bodies_are_400_or_413_on_every_turn_route(client: TestClient) -> None:
    for path in ("/v1/chat/completions", "/chat/completions", "/v1/responses", "/responses"):
        assert client.post(path, content=b"{not json").status_code == 400
        assert client.post(path, content=b"[1, 2]").status_code == 400
        assert client.post(path, content=b"").status_code == 400
        assert client.post(path, content=b'{"input": "' + b"x" * 2000 + b'"}').status_code == 413
        missing = client.post(path, json={"messages": [], "input": "hi"})
        assert missing.status_code in (400, 422) and missing.json()["error"]["type"] == "invalid_request_error"


def test_hayhooks_routes_serve_what_the_server_does_not(client: TestClient, models: AgentModels) -> None:
    assert client.get("/status").json()["status"] == "Up!"
    # the deploy routes are refused: nobody reshapes the server over HTTP
    for method, path in (("POST", "/deploy_files"), ("POST", "/deploy-yaml"), ("POST", "/undeploy/writer"),
                         ("GET", "/draw/writer")):
        answer = client.request(method, path, json={})
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    assert client.post("/v1/files").json()["error"]["code"] == "unsupported_endpoint"
    assert client.get("/nowhere").json()["error"]["message"] == "Unknown route: GET /nowhere"


class EchoPipeline(BasePipelineWrapper):
    """A pipeline someone deployed next to the agents."""

    def setup(self) -> None:
        self.pipeline = None

    def run_chat_completion(self, model: str, messages: list[dict], body: dict) -> str:
        return f"echo: {messages[-1]['content']}"


def test_another_pipeline_is_answered_by_hayhooks_route(client: TestClient, models: AgentModels) -> None:
    from hayhooks.server.utils.module_loader import create_pipeline_wrapper_instance  # noqa: PLC0415

    name = f"echo-{uuid.uuid4().hex[:6]}"
    module = type("Module", (), {"PipelineWrapper": EchoPipeline})
    hayhooks_registry.add(name, create_pipeline_wrapper_instance(module))  # type: ignore[arg-type]
    try:
        answer = client.post("/v1/chat/completions", json={"model": name, "messages": [
            {"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == "echo: hi"
        # the Responses API needs an agent: another pipeline is not one of its models
        assert client.post("/v1/responses", json={"model": name, "input": "hi"}).status_code == 404
    finally:
        hayhooks_registry.remove(name)


def _request(body: Any) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": [], "state": {JSON_BODY_STATE: body}})


def test_explicit_nulls_are_absent_fields() -> None:
    assert request_json(_request({"model": "m", "stream": None, "input": "hi"})) == {"model": "m", "input": "hi"}
    assert request_json(_request(None), required=False) == {}
    with pytest.raises(OpenAIError) as refused:
        request_json(_request(None))
    assert refused.value.status == 400


def test_failures_are_openai_errors() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("bug")

    @app.get("/letta-down")
    async def letta_down() -> None:
        raise letta_client.APIConnectionError(request=None)  # type: ignore[arg-type]

    @app.get("/refused")
    async def refused() -> None:
        raise OpenAIError(429, "slow down", type="rate_limit_exceeded", headers={"Retry-After": "3"})

    client = TestClient(app, raise_server_exceptions=False)
    bug_answer = client.get("/bug")
    assert bug_answer.status_code == 500 and bug_answer.json()["error"]["code"] == "internal_error"
    assert "bug" not in bug_answer.text
    assert client.get("/letta-down").status_code == 503
    slow = client.get("/refused")
    assert slow.status_code == 429 and slow.headers["retry-after"] == "3"
    assert client.post("/bug").json()["error"]["code"] == "method_not_allowed"


def test_a_streams_end_goes_out_in_one_write() -> None:
    # finish, usage and [DONE] come together: one write, so the client does not wake three times for them
    async def items() -> Any:
        yield WireChunk.of({"n": 1})
        yield WireChunk.of({"n": 2})
        yield WireChunk.of({"finish": True}, more_follows=True)
        yield WireChunk.of({"usage": True}, more_follows=True)
        yield WireChunk.of(DONE)

    async def frames() -> list[str]:
        return [frame async for frame in sse_frames(items())]

    assert asyncio.run(frames()) == ['data: {"n":1}\n\n', 'data: {"n":2}\n\n',
                                     'data: {"finish":true}\n\ndata: {"usage":true}\n\ndata: [DONE]\n\n']
