"""
`GET /v1/models` (every served agent, with its creation time) and `GET /v1/models/{model}` (the openai SDK's
`models.retrieve`, which Hayhooks lacks), for the models the request's key may use.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request

from letta_hayhooks.server.access import tenant_of
from letta_hayhooks.server.agent_models import AgentModels


def models_router(models: Callable[[], AgentModels]) -> APIRouter:
    """The model routes (with and without `/v1`)."""
    router = APIRouter(tags=["openai"])

    @router.get("/v1/models", summary="List models (one per served Letta agent)")
    @router.get("/models", include_in_schema=False)
    async def list_models(request: Request) -> dict:
        return {"object": "list", "data": models().model_objects(tenant_of(request.scope))}

    @router.get("/v1/models/{model:path}", summary="Retrieve a model (an agent name or a raw agent id)")
    @router.get("/models/{model:path}", include_in_schema=False)
    async def retrieve_model(model: str, request: Request) -> dict:
        tenant = tenant_of(request.scope)
        agent_models = models()
        name = await agent_models.resolve(model, tenant)  # a raw agent id, or an agent created just now
        found = agent_models.model_object(name, tenant)
        assert found is not None  # resolve() checked the key may use it
        return found

    return router
