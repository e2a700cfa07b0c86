"""The chat gate answers agents' chat completions and Responses requests itself; everything else goes on."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse

from letta_hayhooks.server.app import ChatRequestGate


class Endpoint:
    def __init__(self) -> None:
        self.bodies: list[Any] = []

    async def respond(self, body: dict, scope: dict) -> JSONResponse:
        self.bodies.append(body)
        return JSONResponse({"object": "response"})


def call(gate: ChatRequestGate, method: str, path: str, body: bytes = b"{}") -> tuple[int | None, bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    asyncio.run(gate(scope, receive, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_responses_are_answered_by_the_endpoint_without_the_route_table() -> None:
    inner: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        inner.append(scope["path"])
        await JSONResponse({"inner": True})(scope, receive, send)

    endpoint = Endpoint()
    gate = ChatRequestGate(app, models=lambda: None, max_body_bytes=1000, responses=endpoint)  # type: ignore[arg-type]
    for path in ("/v1/responses", "/responses"):
        assert call(gate, "POST", path, b'{"model": "m"}') == (200, b'{"object":"response"}')
    assert endpoint.bodies == [{"model": "m"}, {"model": "m"}]
    assert inner == []
    assert call(gate, "GET", "/v1/responses/resp_1")[0] == 200  # stored responses stay on their routes
    assert call(gate, "POST", "/v1/conversations")[0] == 200
    assert inner == ["/v1/responses/resp_1", "/v1/conversations"]


def test_a_failing_endpoint_still_answers_an_openai_error() -> None:
    class Broken:
        async def respond(self, body: dict, scope: dict) -> JSONResponse:
            raise RuntimeError("bug")

    gate = ChatRequestGate(lambda *a: None, models=lambda: None, max_body_bytes=1000,  # type: ignore[arg-type]
                           responses=Broken())  # type: ignore[arg-type]
    status, body = call(gate, "POST", "/v1/responses")
    assert status == 500
    assert b'"internal_error"' in body


def test_a_responses_body_is_checked_like_a_chat_body() -> None:
    endpoint = Endpoint()
    gate = ChatRequestGate(lambda *a: None, models=lambda: None, max_body_bytes=100,  # type: ignore[arg-type]
                           responses=endpoint)  # type: ignore[arg-type]
    assert call(gate, "POST", "/v1/responses", b"{not json")[0] == 400
    assert call(gate, "POST", "/v1/responses", b"[1, 2]")[0] == 400
    assert call(gate, "POST", "/v1/responses", b'{"input": "' + b"x" * 200 + b'"}')[0] == 413
    assert endpoint.bodies == []
