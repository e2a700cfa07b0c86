"""
Every request body is read once, here: bounded by `LETTA_HAYHOOKS_MAX_BODY_BYTES` (413), and a JSON body parsed and
checked by the one parser (`letta_hayhooks.json_body`: 400 for bad JSON, deep nesting, non-finite numbers, lone
surrogates). The parsed object waits in the ASGI scope for the routes (`json_body_of`); the bytes go on unchanged,
so Hayhooks' own routes read them as before. A route added later gets the same checks without asking for them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request

from letta_hayhooks.errors import OpenAIError, invalid_request, too_large
from letta_hayhooks.json_body import parse_json_object

ASGIApp = Callable[[MutableMapping[str, Any], Callable, Callable], Awaitable[None]]

JSON_BODY_STATE = "letta_hayhooks_json_body"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Bodies up to this size are parsed on the event loop (well under a millisecond); larger ones in a thread, so
# parsing megabytes holds up no other request.
_INLINE_PARSE_BYTES = 64 * 1024


def json_body_of(scope: MutableMapping[str, Any]) -> dict[str, Any] | None:
    """The request's parsed JSON object; None for a request without a JSON body."""
    return (scope.get("state") or {}).get(JSON_BODY_STATE)


def request_json(request: Request, *, required: bool = True) -> dict[str, Any]:
    """
    The route's JSON object, with explicit nulls dropped: OpenAI (and SDKs generated from its spec) read a null as an
    absent field. A request without a body is an empty object unless `required`.

    :raises OpenAIError: 400 when a body is required and there is none.
    """
    body = json_body_of(request.scope)
    if body is None:
        if required:
            raise invalid_request("The request body is not valid JSON.")
        return {}
    return {key: value for key, value in body.items() if value is not None}


async def send_error(send: Callable, error: OpenAIError) -> None:
    """Answer with an OpenAI error body (before any route ran)."""
    raw = json.dumps(error.body()).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


def _is_json(scope: MutableMapping[str, Any]) -> bool:
    """A JSON body, or one that does not say (chat clients do not always send a content type)."""
    for key, value in scope.get("headers") or []:
        if key == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json") or not kind
    return True


class RequestBodyMiddleware:
    """Reads, bounds and (for JSON) parses every request body once; see the module docstring."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before its request arrived
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await send_error(send, too_large(f"The request body is larger than {self.max_body_bytes} bytes."))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        if raw.strip() and _is_json(scope):
            try:
                body = parse_json_object(raw) if len(raw) < _INLINE_PARSE_BYTES else \
                    await asyncio.to_thread(parse_json_object, raw)
            except OpenAIError as error:
                await send_error(send, error)
                return
            scope.setdefault("state", {})[JSON_BODY_STATE] = body
        delivered = False

        async def replay() -> dict[str, Any]:
            # the body once, then what the client does next (a disconnect, which streams watch for)
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
