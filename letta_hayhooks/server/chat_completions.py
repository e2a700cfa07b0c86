"""
`POST /v1/chat/completions` on the letta-hayhooks server: agents answered with exact OpenAI objects.

Hayhooks' own chat route validates a non-streaming answer against its `ChatCompletion` model, which adds
`"delta": null` to every choice; agents are answered here instead, with the same SSE framing for streams. A
pipeline of someone else's deployed beside the agents is handed to Hayhooks' app, which serves it as always.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi_openai_compat.chat_completions.streaming import event_to_sse_msg
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from letta_hayhooks.errors import invalid_request
from letta_hayhooks.openai_wire import WireChunk
from letta_hayhooks.server.access import tenant_of
from letta_hayhooks.server.agent_models import AgentModels
from letta_hayhooks.server.request_body import request_json

PATHS = ("/v1/chat/completions", "/chat/completions")


class HandOver(Response):
    """The request, body unread, to another ASGI app (Hayhooks' routes for pipelines that are not agents)."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__()
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def sse_frames(items: AsyncIterator[Any]) -> AsyncIterator[str]:
    """A chat stream's items as SSE frames; the stream's end (finish, usage, [DONE]) goes out in one write."""
    held: list[str] = []
    async for item in items:
        if isinstance(item, WireChunk):
            held.append(f"data: {item.model_dump_json()}\n\n")
            if item.more_follows:
                continue
        else:  # Open WebUI status events
            held.append(event_to_sse_msg(item.to_event_dict()))
        yield "".join(held)
        held.clear()
    if held:
        yield "".join(held)


def chat_completions_router(models: Callable[[], AgentModels], hayhooks_app: ASGIApp) -> APIRouter:
    """The chat completion routes (with and without `/v1`, as Hayhooks serves them)."""
    router = APIRouter(tags=["openai"])

    async def create_chat_completion(request: Request) -> Response:
        body = request_json(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise invalid_request("'model' is required.", param="model")
        agent_models = models()
        name = await agent_models.resolve(model, tenant_of(request.scope))
        chat = agent_models.chat_for(name)
        if chat is None:
            return HandOver(hayhooks_app)
        result = await chat.answer(name, body.get("messages"), body, Headers(scope=request.scope),
                                   tenant=tenant_of(request.scope))
        if isinstance(result, dict):
            return JSONResponse(result)
        return StreamingResponse(sse_frames(result), media_type="text/event-stream")

    for path in PATHS:
        router.add_api_route(path, create_chat_completion, methods=["POST"], include_in_schema=path.startswith("/v1"),
                             summary="Create a chat completion (one turn of a Letta agent)")
    return router
