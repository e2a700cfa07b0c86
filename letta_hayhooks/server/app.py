"""
The letta-hayhooks server: its own routes for the OpenAI APIs, with Hayhooks' app behind them for the rest.

The server's FastAPI app holds one module per API, ordinary routes that the OpenAPI docs show as they run:
Chat Completions (`chat_completions.py`), Responses (`responses.py`), Conversations (`conversations_api.py`), models
(`models_api.py`); plus `/health` (probes Letta), `/healthz` (liveness), the optional `/v1/letta/sessions` view and
a 404 for the file-upload route (which Hayhooks fakes). Around them: OpenAI error bodies for every failure, optional
API keys and a body-size limit (middleware).

Hayhooks' app (`hayhooks.create_app()` over the same `pipelines/` folder as `hayhooks run`) is mounted behind those
routes: its lifespan deploys the folder (agent discovery starts there), and it serves what the server does not
(`/status`, other pipelines deployed beside the agents). Its deploy, undeploy and draw routes are refused: nobody
should reshape a production server over HTTP without a key.

Run it with `letta-hayhooks serve` (or `uvicorn --factory letta_hayhooks.asgi:create_app`).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from hayhooks import create_app, log
from hayhooks.server.logger import RequestIdMiddleware
from hayhooks.server.routers import deploy_router, draw_router, undeploy_router
from hayhooks.settings import settings as hayhooks_settings
from starlette.exceptions import HTTPException as StarletteHTTPException

from letta_hayhooks import __version__
from letta_hayhooks.chat.drain import DRAIN_STATE
from letta_hayhooks.errors import OpenAIError, from_letta_exception, model_not_found, upstream_unavailable
from letta_hayhooks.server.access import TENANT_STATE, OperatorRoute, may_reach, tenant_of
from letta_hayhooks.server.agent_models import AgentModels, default_models, use_settings
from letta_hayhooks.server.chat_completions import chat_completions_router
from letta_hayhooks.server.maintenance import list_sessions
from letta_hayhooks.server.models_api import models_router
from letta_hayhooks.server.observability import install_observability
from letta_hayhooks.server.request_body import RequestBodyMiddleware, send_error
from letta_hayhooks.server.responses import responses_router
from letta_hayhooks.settings import Settings, get_settings
from letta_hayhooks.tenants import KeyPolicy

ASGIApp = Callable[..., Any]

# Routes that stay open when API keys are required.
OPEN_PATHS = frozenset({"/health", "/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# Hayhooks' status routes name every deployed pipeline, so every agent: only for keys that may use them all.
STATUS_PATH = "/status"
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 409: "conflict_error",
                429: "rate_limit_exceeded"}
_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def http_failure(status: int, message: str, *, code: str | None = None, param: str | None = None) -> OpenAIError:
    """An HTTP status that is not the proxy's own error kind (Starlette's, Hayhooks') as an OpenAI error."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return OpenAIError(status, message, type=kind, code=code, param=param)


def _answer(error: OpenAIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers or None)


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
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        auth = _header(scope, b"authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        api_key = _header(scope, b"x-api-key")
        # never log the presented values: only the tenant's name
        tenant = self.policy.tenant_for(token) or self.policy.tenant_for(api_key)
        if tenant is None:
            message = "Missing API key." if not (token or api_key) else "Invalid API key."
            refusal = http_failure(401, message, code="invalid_api_key")
            refusal.headers = {"WWW-Authenticate": "Bearer"}
            await send_error(send, refusal)
            return
        path = scope["path"]
        if (path == STATUS_PATH or path.startswith(STATUS_PATH + "/")) and \
                not may_reach(tenant, OperatorRoute("status")):
            # answered like a route that does not exist, as other keys' agents are
            await send_error(send, http_failure(404, f"Unknown route: {scope['method']} {path}", code="not_found"))
            return
        scope.setdefault("state", {})[TENANT_STATE] = tenant
        await self.app(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """OpenAI error bodies for every failure of `app`'s routes (the proxy's own, Starlette's, Hayhooks')."""
    pipeline_prefix, pipeline_miss = "Pipeline '", "' not found"

    async def openai_error(_request: Request, exc: OpenAIError) -> JSONResponse:
        return _answer(exc)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        headers = getattr(exc, "headers", None)
        if isinstance(detail, dict) and isinstance(detail.get("error"), dict):
            return JSONResponse(detail, status_code=exc.status_code, headers=headers)
        message = detail if isinstance(detail, str) else json.dumps(detail)
        if exc.status_code == 404:
            if message.startswith(pipeline_prefix) and pipeline_miss in message:
                # Hayhooks' own miss for a model that is not (or no longer) registered
                return _answer(model_not_found(message[len(pipeline_prefix):message.rindex(pipeline_miss)]))
            if message == "Not Found":  # Starlette's answer for a path no route serves
                message = f"Unknown route: {request.method} {request.url.path}"
        if exc.status_code == 500:
            message = "Internal error in the proxy."
        error = http_failure(exc.status_code, message, code=_ERROR_CODES.get(exc.status_code))
        return JSONResponse(error.body(), status_code=exc.status_code, headers=headers)

    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", []) if part != "body"]
        message = f"Invalid request: {first.get('msg', 'malformed body')}" + (f" at {'.'.join(loc)}" if loc else "")
        return _answer(http_failure(400, message, param=".".join(loc) or None))

    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, RecursionError):
            # a body nested just below the parser's limit can still overflow the deeper stack of a later parse
            log.warning("Request refused: nested too deeply for the parser")
            return _answer(http_failure(400, "The request body is nested too deeply.", code="nested_too_deeply"))
        error = from_letta_exception(exc)  # Letta down is a 503, not the proxy's 500
        if error.status == 500:
            log.opt(exception=exc).error("Unhandled error")
        return _answer(error)

    app.add_exception_handler(OpenAIError, openai_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
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


def _install_status_routes(app: FastAPI, settings: Settings, models: Callable[[], AgentModels],
                           key_policy: KeyPolicy) -> None:
    @app.get("/healthz", tags=["status"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health", tags=["status"], summary="Readiness: probes Letta")
    async def health() -> JSONResponse:
        letta = await probe_letta(settings)
        agent_models = models()
        refreshed = agent_models.catalog.last_refresh
        body = {
            "status": "ok" if letta["reachable"] else "degraded",
            "version": __version__,
            "letta": letta,
            "models": len(agent_models.wrappers),
            "last_refresh": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(refreshed)) if refreshed else None,
            "inflight_turns": agent_models.shared.load.inflight,
        }
        return JSONResponse(body, status_code=200 if letta["reachable"] else 503)

    if not settings.sessions_route:
        return

    @app.get("/v1/letta/sessions", tags=["operators"], summary="Proxy sessions of an agent (admin keys)")
    async def sessions(model: str, request: Request) -> dict:
        tenant = tenant_of(request.scope)
        if not may_reach(tenant, OperatorRoute("sessions")):
            # it shows every key's session keys: only admin keys (or keys granted `sessions_route`)
            log.info("Key '{}' refused the sessions view (not an admin key)", tenant.name)
            raise http_failure(403, "This API key may not use the sessions view: it needs an admin key.",
                               code="admin_key_required")
        agent_models = models()
        try:
            name = await agent_models.resolve(model, tenant)
        except OpenAIError as error:
            if error.status == 404 and agent_models.catalog.last_refresh is None:
                # Letta was never listed: whether the model exists is unknown, Letta is what is missing
                raise upstream_unavailable() from None
            raise
        info = agent_models.subject(name)
        if info is None or agent_models.chat_for(info.model_id) is None:
            raise model_not_found(model)
        rows = await list_sessions(agent_models.catalog.async_client, info.id, key_policy.tenants)
        return {"object": "list", "model": info.model_id, "agent_id": info.id, "data": rows}


def create_server_app(settings: Settings | None = None, models: AgentModels | None = None) -> FastAPI:
    """Build the server app: its own routes, with Hayhooks' app mounted behind them."""
    settings = settings or get_settings()
    use_settings(settings)  # the agents' pipelines are built from these settings, not the environment's
    hayhooks_app = create_app()
    install_error_handlers(hayhooks_app)

    def current_models() -> AgentModels:
        return models or default_models()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        async with hayhooks_app.router.lifespan_context(hayhooks_app):  # deploys pipelines/ (agent discovery)
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

    app = FastAPI(title="letta-hayhooks", version=__version__, lifespan=lifespan,
                  description="Letta agents as OpenAI models (Chat Completions, Responses, Conversations).")
    app.state.letta_settings = settings
    install_error_handlers(app)
    key_policy = KeyPolicy.load(settings.api_keys, settings.api_keys_file)
    if key_policy:
        log.info("API keys required: {}", ", ".join(
            f"{t.name}{' (admin)' if t.admin else ''}" for t in key_policy.tenants))

    app.include_router(chat_completions_router(current_models, hayhooks_app))
    app.include_router(responses_router(current_models))
    app.include_router(models_router(current_models))
    _install_status_routes(app, settings, current_models, key_policy)

    async def unsupported_upload() -> JSONResponse:
        # Hayhooks' file upload answers 200 without storing the file
        return _answer(http_failure(404, "File uploads are not supported: send images inline as `image_url` "
                                         "content parts.", code="unsupported_endpoint"))

    for path in ("/v1/files", "/files"):
        app.add_api_route(path, unsupported_upload, methods=["POST"], include_in_schema=False)

    async def unknown_route(request: Request) -> JSONResponse:
        return _answer(http_failure(404, f"Unknown route: {request.method} {request.url.path}", code="not_found"))

    for router in (deploy_router, undeploy_router, draw_router):
        for route in router.routes:
            app.add_api_route(route.path, unknown_route, methods=list(route.methods), include_in_schema=False)

    # from the innermost out: every body read once, bounded and checked; the key's tenant; request ids, CORS (as
    # Hayhooks configures them for its own app); metrics and traces outermost
    app.add_middleware(RequestBodyMiddleware, max_body_bytes=settings.max_body_bytes)
    if key_policy:
        app.add_middleware(ApiKeyMiddleware, policy=key_policy)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(CORSMiddleware, allow_origins=hayhooks_settings.cors_allow_origins,
                       allow_methods=hayhooks_settings.cors_allow_methods,
                       allow_headers=hayhooks_settings.cors_allow_headers,
                       allow_credentials=hayhooks_settings.cors_allow_credentials,
                       allow_origin_regex=hayhooks_settings.cors_allow_origin_regex,
                       expose_headers=hayhooks_settings.cors_expose_headers,
                       max_age=hayhooks_settings.cors_max_age)
    install_observability(app, settings, tenant_of)  # GET /metrics, and the outermost middleware
    app.mount("", hayhooks_app)  # last: what no route above serves
    return app
