"""
The letta-hayhooks server: Hayhooks' app and OpenAI routes, plus what a production endpoint needs.

Built with `hayhooks.create_app()` over the same `pipelines/` folder as `hayhooks run`, it adds:
OpenAI error bodies for every failure, optional API keys, the deploy routes removed, `/health` that probes Letta,
`/healthz` for liveness, `/v1/models` with the agents' creation times plus `/v1/models/{model}`, the Responses API
(`/v1/responses`, `/v1/conversations`) on the agents' pipelines, a clear 404 for the file-upload route (which Hayhooks
fakes), a body-size limit, model resolution
for raw agent ids and newly created agents, and an optional `/v1/letta/sessions` view.
Hayhooks internals are not patched: everything is middleware and routes.

Run it with `letta-hayhooks serve` (or `uvicorn --factory letta_hayhooks.server.app:create_server_app`).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi_openai_compat.chat_completions.streaming import event_to_sse_msg
from hayhooks import create_app, log
from hayhooks.server.routers import deploy_router, draw_router, undeploy_router
from hayhooks.server.utils.deploy_utils import rebuild_openapi
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

from letta_hayhooks import __version__
from letta_hayhooks.chat.drain import DRAIN_STATE, shutting_down
from letta_hayhooks.chat.service import AgentChat
from letta_hayhooks.errors import (
    OpenAIError,
    from_letta_exception,
    invalid_request,
    model_not_found,
    upstream_unavailable,
)
from letta_hayhooks.openai_wire import WireChunk
from letta_hayhooks.server.access import TENANT_STATE, Agent, OperatorRoute, may_reach, tenant_of
from letta_hayhooks.server.agent_models import AgentModels, agent_model_object, default_models, use_settings
from letta_hayhooks.server.maintenance import list_sessions
from letta_hayhooks.server.observability import install_observability
from letta_hayhooks.server.request_body import RequestBodyMiddleware, json_body_of
from letta_hayhooks.server.responses import RESPONSES_PATHS, ResponsesEndpoint, install_responses_routes
from letta_hayhooks.settings import Settings, get_settings
from letta_hayhooks.tenants import KeyPolicy, Tenant

ASGIApp = Callable[[MutableMapping[str, Any], Callable, Callable], Awaitable[None]]

# Routes that stay open when API keys are required.
OPEN_PATHS = frozenset({"/health", "/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
# Hayhooks' status routes name every deployed pipeline, so every agent: only for keys that may use them all.
STATUS_PATH = "/status"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An OpenAI error envelope for `status`."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


async def _send_json(send: Callable, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


def _header(scope: MutableMapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value.decode("latin-1")
    return None


class ApiKeyMiddleware:
    """
    Requires `Authorization: Bearer <key>` or `X-API-Key` on every route but the open ones, and records the key's
    `Tenant` in the ASGI scope (`tenant_of`) for the routes: which agents it may use, whose sessions are its own.
    """

    def __init__(self, app: ASGIApp, policy: KeyPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not self.policy or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        auth = _header(scope, b"authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        api_key = _header(scope, b"x-api-key")
        # never log the presented values: only the tenant's name
        tenant = self.policy.tenant_for(token) or self.policy.tenant_for(api_key)
        if tenant is None:
            message = "Missing API key." if not (token or api_key) else "Invalid API key."
            await _send_json(send, 401, error_body(401, message, code="invalid_api_key"),
                             {"WWW-Authenticate": "Bearer"})
            return
        path = scope["path"]
        if (path == STATUS_PATH or path.startswith(STATUS_PATH + "/")) and \
                not may_reach(tenant, OperatorRoute("status")):
            # answered like a route that does not exist, as other keys' agents are
            message = f"Unknown route: {scope['method']} {path}"
            await _send_json(send, 404, error_body(404, message, code="not_found"))
            return
        scope.setdefault("state", {})[TENANT_STATE] = tenant
        await self.app(scope, receive, send)


async def refuse_when_shutting_down(chat: AgentChat, send: Callable) -> bool:
    """Once the server has begun to stop, answer a new turn 503 `server_shutting_down`; True when it did."""
    if not chat.shared.drain.draining:
        return False
    error = shutting_down()
    await _send_json(send, error.status, error.body(), error.headers)
    return True


async def answer_agent_chat(
    chat: AgentChat, model: str, body: dict[str, Any], scope: MutableMapping[str, Any], receive: Callable,
    send: Callable,
) -> None:
    """
    Answer a chat completion for an agent with exact OpenAI objects.

    Hayhooks' own chat route validates a non-streaming answer against its `ChatCompletion` model, which adds
    `"delta": null` to every choice; agents are answered here instead, with the same SSE framing for streams.
    """
    if await refuse_when_shutting_down(chat, send):
        return
    try:
        result = await chat.answer(model, body.get("messages"), body, Headers(scope=scope), tenant=tenant_of(scope))
    except OpenAIError as error:
        await _send_json(send, error.status, error.body(), error.headers)
        return
    except Exception as exc:  # noqa: BLE001 - a bug must still answer with an OpenAI error body
        log.opt(exception=exc).error("Unhandled error")
        await _send_json(send, 500, error_body(500, "Internal error in the proxy.", code="internal_error"))
        return
    if isinstance(result, dict):
        await _send_json(send, 200, result)
        return

    async def frames() -> AsyncIterator[str]:
        held: list[str] = []  # the stream's end (finish, usage, [DONE]) goes out in one write
        async for item in result:
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

    # Starlette's own: a custom writer saved nothing measurable (benchmarks/RESULTS.md, "Custom pieces")
    await StreamingResponse(frames(), media_type="text/event-stream")(scope, receive, send)


class ChatRequestGate:
    """
    Checks chat requests before Hayhooks routes them, and answers those for agents.

    It takes the body `RequestBodyMiddleware` parsed, and resolves `model`: an advertised model id
    passes, a raw agent id or an agent created since the last refresh is resolved through the catalogue, anything
    else is a 404 `model_not_found`. Agents are answered by `answer_agent_chat`; other pipelines deployed beside them
    go on to Hayhooks' route (with the body's `model` rewritten to the advertised id).

    `POST /v1/responses` is answered here too, by the same endpoint as its route (which stays for the OpenAPI docs):
    a turn should not pay for the route table and FastAPI's request handling on one wire and not the other.
    """

    def __init__(self, app: ASGIApp, models: Callable[[], AgentModels],
                 responses: ResponsesEndpoint | None = None) -> None:
        self.app = app
        self.models = models
        self.responses = responses

    async def __call__(  # noqa: PLR0911 - one early answer per kind of bad request
        self, scope: MutableMapping[str, Any], receive: Callable, send: Callable
    ) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        responses = self.responses is not None and scope["path"] in RESPONSES_PATHS
        if scope["path"] not in CHAT_PATHS and not responses:
            await self.app(scope, receive, send)
            return
        body = json_body_of(scope)  # read, bounded and checked by RequestBodyMiddleware
        if body is None:
            await _send_json(send, 400, invalid_request("The request body is not valid JSON.").body())
            return
        # an explicit null is an absent field, as OpenAI (and SDKs generated from its spec) read it
        body = {key: value for key, value in body.items() if value is not None}
        if responses:
            await self._answer_response(body, scope, receive, send)
            return
        if not isinstance(body.get("stream", False), bool):
            # Hayhooks' request model would read "yes" as true: OpenAI takes only JSON booleans
            await _send_json(send, 400, invalid_request("'stream' must be a boolean.", param="stream").body())
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            await _send_json(send, 400, invalid_request("'model' is required.", param="model").body())
            return
        resolved = await self._resolve(model, tenant_of(scope))
        if resolved is None:
            await _send_json(send, 404, model_not_found(model).body())
            return
        wrapper = self.models().wrappers.get(resolved)
        if wrapper is not None:
            await answer_agent_chat(wrapper.chat, resolved, body, scope, receive, send)
            return
        if resolved == model:
            await self.app(scope, receive, send)  # the body as it came (RequestBodyMiddleware replays it)
            return
        body["model"] = resolved
        raw = json.dumps(body).encode()
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-length"] + [
            (b"content-length", str(len(raw)).encode())
        ]
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                await receive()  # the original body, replaced by this one
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _answer_response(self, body: dict[str, Any], scope: MutableMapping[str, Any], receive: Callable,
                               send: Callable) -> None:
        assert self.responses is not None
        try:
            response = await self.responses.respond(body, scope)
        except Exception as exc:  # noqa: BLE001 - a bug must still answer with an OpenAI error body
            log.opt(exception=exc).error("Unhandled error")
            await _send_json(send, 500, error_body(500, "Internal error in the proxy.", code="internal_error"))
            return
        await response(scope, receive, send)

    async def _resolve(self, model: str, tenant: Tenant | None) -> str | None:
        """The registered model id for `model`; None when unknown or not one the tenant may use (both a 404)."""
        models = self.models()
        if model in models.wrappers:
            resolved = model
        else:
            try:
                info = await models.catalog.resolve(model)
            except OpenAIError:
                return None
            models.apply()
            resolved = info.model_id if info.model_id in models.wrappers else None
        if resolved is None or tenant is None:
            return resolved
        if not may_reach(tenant, Agent(models.subject(resolved))):
            log.info("Key '{}' may not use model '{}'", tenant.name, resolved)
            return None
        return resolved


def _remove_routes(app: FastAPI, routers: tuple[Any, ...]) -> None:
    """Drop included routers (FastAPI keeps them as lazy entries holding `.original_router`)."""
    paths = {route.path for router in routers for route in router.routes}
    for route in list(app.router.routes):
        if getattr(route, "original_router", None) in routers or getattr(route, "path", None) in paths:
            app.router.routes.remove(route)
    rebuild_openapi(app)


def _install_error_handlers(app: FastAPI) -> None:
    # `model_not_found` is kept for unknown models; other statuses get a code of their own
    status_codes = {404: "not_found", 405: "method_not_allowed"}
    pipeline_prefix, pipeline_miss = "Pipeline '", "' not found"

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        headers = getattr(exc, "headers", None)
        if isinstance(detail, dict) and isinstance(detail.get("error"), dict):
            return _json_response(exc.status_code, detail, headers)
        message = detail if isinstance(detail, str) else json.dumps(detail)
        code = status_codes.get(exc.status_code)
        if exc.status_code == 404:
            if message.startswith(pipeline_prefix) and pipeline_miss in message:
                # Hayhooks' own miss for a model that is not (or no longer) registered
                model = message[len(pipeline_prefix):message.rindex(pipeline_miss)]
                return _json_response(404, model_not_found(model).body(), headers)
            if message == "Not Found":  # Starlette's answer for a path no route serves
                message = f"Unknown route: {request.method} {request.url.path}"
        if exc.status_code == 500:
            message = "Internal error in the proxy."
        return _json_response(exc.status_code, error_body(exc.status_code, message, code=code), headers)

    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", []) if part != "body"]
        message = f"Invalid request: {first.get('msg', 'malformed body')}" + (f" at {'.'.join(loc)}" if loc else "")
        return _json_response(400, error_body(400, message, param=".".join(loc) or None))

    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, RecursionError):
            # a body nested just below the gate's limit can still overflow the deeper stack of a later parse
            log.warning("Request refused: nested too deeply for the parser")
            return _json_response(400, error_body(400, "The request body is nested too deeply.",
                                                  code="nested_too_deeply"))
        log.opt(exception=exc).error("Unhandled error")
        return _json_response(500, error_body(500, "Internal error in the proxy.", code="internal_error"))

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)


async def probe_letta(settings: Settings) -> dict[str, Any]:
    """Ask Letta's health route; report reachability, latency and version (never URLs or credentials)."""
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {settings.letta_api_key}"} if settings.letta_api_key else {}
    try:
        async with httpx.AsyncClient(timeout=settings.letta_connect_timeout) as client:
            response = await client.get(f"{settings.letta_base_url}/v1/health/", headers=headers)
        latency = round((time.perf_counter() - started) * 1000, 1)
        if response.status_code != 200:
            return {"reachable": False, "latency_ms": latency, "error": f"HTTP {response.status_code}"}
        version = response.json().get("version") if "json" in response.headers.get("content-type", "") else None
        return {"reachable": True, "latency_ms": latency, "version": version}
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return {"reachable": False, "latency_ms": None, "error": type(exc).__name__}


# Hayhooks' OpenAI routes that Letta agents cannot serve: its file upload answers 200 without storing the file. It
# gets a plain 404 with the reason instead.
_UNSUPPORTED = {
    "/v1/files": "File uploads are not supported: send images inline as `image_url` content parts.",
}


def _install_openai_routes(app: FastAPI, current_models: Callable[[], AgentModels]) -> ResponsesEndpoint:
    """
    `GET /v1/models` with the agents' real creation times, `GET /v1/models/{model}` (the openai SDK's
    `models.retrieve`), which Hayhooks lacks, the Responses and Conversations routes (`server/responses.py`), and
    clear refusals for the routes in `_UNSUPPORTED`.

    They go first in the route table, ahead of Hayhooks' own routes for the same paths.
    """
    router = APIRouter(tags=["openai"])

    def refuse(message: str) -> Callable[[], Awaitable[JSONResponse]]:
        async def unsupported() -> JSONResponse:
            return _json_response(404, error_body(404, message, code="unsupported_endpoint"))

        return unsupported

    for path, message in _UNSUPPORTED.items():
        for alias in (path, path.removeprefix("/v1")):
            router.add_api_route(alias, refuse(message), methods=["POST"], include_in_schema=False)
    # the Responses API (and the Conversations API it stores into) on the agents' own pipelines
    responses = install_responses_routes(router, current_models)

    @router.get("/v1/models", summary="List models (one per served Letta agent)")
    @router.get("/models", include_in_schema=False)
    async def list_models(request: Request) -> JSONResponse:
        data = current_models().model_objects(tenant_of(request.scope))
        return _json_response(200, {"object": "list", "data": data})

    @router.get("/v1/models/{model:path}", summary="Retrieve a model (an agent name or a raw agent id)")
    @router.get("/models/{model:path}", include_in_schema=False)
    async def retrieve_model(model: str, request: Request) -> JSONResponse:
        tenant = tenant_of(request.scope)
        agent_models = current_models()
        found = agent_models.model_object(model, tenant)
        if found is None:
            try:
                info = await agent_models.catalog.resolve(model)  # a raw agent id, or an agent created just now
            except OpenAIError as error:
                return _json_response(error.status, error.body())
            if not may_reach(tenant, Agent(info)):
                return _json_response(404, model_not_found(model).body())  # as if it did not exist
            agent_models.apply()  # served from now on
            found = agent_model_object(info)
        return _json_response(200, found)

    before = len(app.router.routes)
    app.include_router(router)
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[:0] = added
    return responses


def create_server_app(  # noqa: PLR0915 - one place that assembles the server
    settings: Settings | None = None, models: AgentModels | None = None
) -> FastAPI:
    """Build the server app (Hayhooks' app plus the production pieces)."""
    settings = settings or get_settings()
    use_settings(settings)  # the agents' pipelines are built from these settings, not the environment's
    app = create_app()
    _remove_routes(app, (deploy_router, undeploy_router, draw_router))
    _install_error_handlers(app)
    install_observability(app, settings, tenant_of)  # metrics middleware, GET /metrics, traces

    def current_models() -> AgentModels:
        return models or default_models()

    hayhooks_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI):
        async with hayhooks_lifespan(application):  # deploys pipelines/ (agent discovery starts there)
            current_models().apply()
            # what start-up made (modules, routes, pipelines) lives as long as the process: out of the collector's
            # sight, a full collection scans only what turns leave behind (it took 47 ms: a stall for the turns in
            # flight)
            gc.collect()
            gc.freeze()
            drain = current_models().shared.drain
            # the lifespan state reaches the HTTP protocol (server/http_guard.py), which begins the drain as soon as
            # the server starts to stop; under another protocol it begins here, once the connections have closed
            yield {DRAIN_STATE: drain}
            await drain.finish()
            await current_models().close()

    app.router.lifespan_context = lifespan
    app.state.letta_settings = settings
    responses = _install_openai_routes(app, current_models)

    @app.get("/healthz", tags=["status"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health", tags=["status"], summary="Readiness: probes Letta")
    async def health() -> JSONResponse:
        letta = await probe_letta(settings)
        agent_models = current_models()
        refreshed = agent_models.catalog.last_refresh
        body = {
            "status": "ok" if letta["reachable"] else "degraded",
            "version": __version__,
            "letta": letta,
            "models": len(agent_models.wrappers),
            "last_refresh": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(refreshed)) if refreshed else None,
            "inflight_turns": agent_models.shared.load.inflight,
        }
        return _json_response(200 if letta["reachable"] else 503, body)

    key_policy = KeyPolicy.load(settings.api_keys, settings.api_keys_file)
    if key_policy:
        log.info("API keys required: {}", ", ".join(
            f"{t.name}{' (admin)' if t.admin else ''}" for t in key_policy.tenants))

    if settings.sessions_route:

        @app.get("/v1/letta/sessions", tags=["operators"], summary="Proxy sessions of an agent (admin keys)")
        async def sessions(model: str, request: Request) -> JSONResponse:
            tenant = tenant_of(request.scope)
            if not may_reach(tenant, OperatorRoute("sessions")):
                # it shows every key's session keys: only admin keys (or keys granted `sessions_route`)
                log.info("Key '{}' refused the sessions view (not an admin key)", tenant.name)
                body = error_body(403, "This API key may not use the sessions view: it needs an admin key.",
                                  code="admin_key_required")
                return _json_response(403, body)
            agent_models = current_models()
            try:
                try:
                    info = await agent_models.catalog.resolve(model)
                except OpenAIError as error:
                    if error.status == 404 and agent_models.catalog.last_refresh is None:
                        # Letta was never listed: whether the model exists is unknown, Letta is what is missing
                        raise upstream_unavailable() from None
                    raise
                if not may_reach(tenant, Agent(info)):
                    return _json_response(404, model_not_found(model).body())
                rows = await list_sessions(agent_models.catalog.async_client, info.id, key_policy.tenants)
            except Exception as exc:  # noqa: BLE001 - Letta down is a 503, not the proxy's 500
                error = from_letta_exception(exc)
                if error.status == 500:
                    log.opt(exception=exc).error("Sessions view failed")
                return _json_response(error.status, error.body(), error.headers)
            return _json_response(200, {"object": "list", "model": info.model_id, "agent_id": info.id, "data": rows})

    # innermost, so Hayhooks' request-id and CORS middleware also wrap these answers
    if key_policy:
        app.user_middleware.append(Middleware(ApiKeyMiddleware, policy=key_policy))
    # every body read once, bounded and checked, before the gate or any route sees it
    app.user_middleware.append(Middleware(RequestBodyMiddleware, max_body_bytes=settings.max_body_bytes))
    app.user_middleware.append(Middleware(ChatRequestGate, models=current_models, responses=responses))
    return app
