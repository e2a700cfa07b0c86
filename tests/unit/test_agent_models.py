"""The registry of agent models: what `/v1/models` shows for agents and for other pipelines deployed beside them."""

from __future__ import annotations

import uuid

from hayhooks import BasePipelineWrapper
from hayhooks.server.pipelines.registry import registry as hayhooks_registry

from letta_hayhooks.server.agent_models import AgentModels
from letta_hayhooks.settings import Settings


class OtherPipeline(BasePipelineWrapper):
    """A pipeline someone deployed next to the agents."""

    def setup(self) -> None:
        self.pipeline = None


def agent_models(rows: list[tuple]) -> AgentModels:
    # a backend URL of its own, so this catalogue is not the one other tests share
    settings = Settings(letta_base_url=f"http://127.0.0.1:9/{uuid.uuid4().hex}")
    models = AgentModels(settings, registry=type(hayhooks_registry)())  # an empty registry of Hayhooks' own kind
    models.catalog._store(rows)  # what a refresh from Letta stores
    models.apply()
    return models


def test_agents_are_listed_with_their_creation_time_and_agent_id() -> None:
    models = agent_models([("agent-1", "writer", "letta_v1_agent", 1_700_000_000, ()),
                           ("agent-2", "twin", None, 1_700_000_100, ()), ("agent-3", "twin", None, 0, ())])
    listed = {obj["id"]: obj for obj in models.model_objects()}
    assert set(listed) == {"writer", "agent-2", "agent-3"}  # a shared name is not a usable model id
    assert listed["writer"] == {"id": "writer", "object": "model", "created": 1_700_000_000, "owned_by": "letta",
                                "name": "writer", "letta_agent_id": "agent-1",
                                "supported_endpoints": ["/v1/chat/completions", "/v1/responses"]}
    assert listed["agent-2"]["name"] == "twin" and listed["agent-2"]["created"] == 1_700_000_100


def test_other_pipelines_stay_listed_and_unknown_names_are_none() -> None:
    models = agent_models([("agent-1", "writer", None, 1_700_000_000, ())])
    models.registry.add("summariser", OtherPipeline())
    assert [obj["id"] for obj in models.model_objects()] == ["writer", "summariser"]
    assert models.model_object("summariser") == {"id": "summariser", "object": "model", "created": 0,
                                                 "owned_by": "hayhooks", "name": "summariser"}
    assert models.model_object("ghost") is None


def test_a_deleted_agent_leaves_the_list() -> None:
    models = agent_models([("agent-1", "writer", None, 1, ()), ("agent-2", "reader", None, 2, ())])
    models.catalog._store([("agent-2", "reader", None, 2, ())])
    models.apply()
    assert [obj["id"] for obj in models.model_objects()] == ["reader"] and models.model_object("writer") is None


def test_the_letta_api_key_from_settings_reaches_every_component() -> None:
    settings = Settings(letta_base_url=f"http://127.0.0.1:9/{uuid.uuid4().hex}", letta_api_key="sk-from-settings")
    models = AgentModels(settings, registry=type(hayhooks_registry)())
    models.catalog._store([("agent-1", "writer", None, 0, ())])
    models.apply()
    pipeline = models.wrappers["writer"].chat.pipeline
    letta_components = [name for name, instance in pipeline.walk() if hasattr(instance, "connection")]
    assert letta_components == ["router", "session", "overlay", "tool_sync", "generator", "recorder"]
    for name in letta_components:
        connection = pipeline.get_component(name).connection
        assert (connection.api_key, connection.base_url) == ("sk-from-settings", settings.letta_base_url), name
    assert models.catalog.connection.api_key == "sk-from-settings"
    assert "sk-from-settings" not in repr(models.catalog.connection)


def test_create_server_app_builds_the_agents_from_the_settings_it_is_given(monkeypatch) -> None:
    from letta_hayhooks.server import agent_models as agent_models_module
    from letta_hayhooks.server.app import create_server_app

    monkeypatch.setattr(agent_models_module, "_DEFAULT_SETTINGS", None)
    monkeypatch.delenv("LETTA_API_KEY", raising=False)
    settings = Settings(letta_base_url="http://127.0.0.1:9", letta_api_key="sk-passed-in")
    create_server_app(settings)
    assert agent_models_module._DEFAULT_SETTINGS is settings  # what default_models() builds every pipeline from
