"""The chat gate answers agents' chat completions and Responses requests itself; everything else goes on."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse

from letta_hayhooks.openai_wire import DONE, WireChunk
from letta_hayhooks.server.app import ChatRequestGate, answer_agent_chat
from letta_hayhooks.server.request_body import RequestBodyMiddleware


class Endpoint:
    def __init__(self) -> None:
        self.bodies: list[Any] = []

    async def respond(self, body: dict, scope: dict) -> JSONResponse:
        self.bodies.append(body)
        return JSONResponse({"object": "response"})


def call(gate: ChatRequestGate, method: str, path: str, body: bytes = b"{}", max_body_bytes: int = 1000
         ) -> tuple[int | None, bytes]:
    """The gate behind the body middleware, as the server stacks them."""
    sent: list[dict] = []
    app = RequestBodyMiddleware(gate, max_body_bytes=max_body_bytes)

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_responses_are_answered_by_the_endpoint_without_the_route_table() -> None:
    inner: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        inner.append(scope["path"])
        await JSONResponse({"inner": True})(scope, receive, send)

    endpoint = Endpoint()
    gate = ChatRequestGate(app, models=lambda: None, responses=endpoint)  # type: ignore[arg-type]
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

    gate = ChatRequestGate(lambda *a: None, models=lambda: None, responses=Broken())  # type: ignore[arg-type]
    status, body = call(gate, "POST", "/v1/responses")
    assert status == 500
    assert b'"internal_error"' in body


def test_a_responses_body_is_checked_like_a_chat_body() -> None:
    endpoint = Endpoint()
    gate = ChatRequestGate(lambda *a: None, models=lambda: None, responses=endpoint)  # type: ignore[arg-type]
    assert call(gate, "POST", "/v1/responses", b"{not json")[0] == 400
    assert call(gate, "POST", "/v1/responses", b"[1, 2]")[0] == 400
    assert call(gate, "POST", "/v1/responses", b'{"input": "' + b"x" * 200 + b'"}', max_body_bytes=100)[0] == 413
    assert call(gate, "POST", "/v1/responses", b"")[0] == 400
    assert endpoint.bodies == []


def test_explicit_nulls_are_absent_fields() -> None:
    endpoint = Endpoint()
    gate = ChatRequestGate(lambda *a: None, models=lambda: None, responses=endpoint)  # type: ignore[arg-type]
    assert call(gate, "POST", "/v1/responses", b'{"model": "m", "stream": null, "input": "hi"}')[0] == 200
    assert endpoint.bodies == [{"model": "m", "input": "hi"}]


def test_a_streams_end_goes_out_in_one_write() -> None:
    # finish, usage and [DONE] come together: one write, so the client does not wake three times for them
    class Chat:
        class shared:  # noqa: N801 - the attribute path the gate reads
            class drain:  # noqa: N801
                draining = False

        async def answer(self, *args: Any, **kwargs: Any) -> Any:
            async def items() -> Any:
                yield WireChunk.of({"n": 1})
                yield WireChunk.of({"n": 2})
                yield WireChunk.of({"finish": True}, more_follows=True)
                yield WireChunk.of({"usage": True}, more_follows=True)
                yield WireChunk.of(DONE)

            return items()

    sent: list[dict] = []

    async def receive() -> dict:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b"",
             "asgi": {"spec_version": "2.4"}}
    asyncio.run(answer_agent_chat(Chat(), "m", {"messages": []}, scope, receive, send))  # type: ignore[arg-type]
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body" and m.get("body")]
    assert bodies == [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n',
                      b'data: {"finish":true}\n\ndata: {"usage":true}\n\ndata: [DONE]\n\n']
