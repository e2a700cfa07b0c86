"""Model ids for agents, filters, and resolution with refresh on a miss."""

from __future__ import annotations

import pytest
from haystack import Pipeline

from letta_hayhooks.components import AgentRouter
from letta_hayhooks.errors import OpenAIError
from letta_hayhooks.letta_access.catalog import AgentCatalog, CatalogFilter, advertise
from letta_hayhooks.letta_access.clients import LettaConnection


def test_unique_names_are_model_ids_duplicates_and_shadowing_names_are_not() -> None:
    agents = [
        ("agent-1", "alpha", None, 0, ()),
        ("agent-2", "twin", None, 0, ()),
        ("agent-3", "twin", None, 0, ()),
        ("agent-4", "agent-1", None, 0, ()),  # a name equal to another agent's id never shadows it
        ("agent-5", "", None, 0, ()),
    ]
    catalog = advertise(agents)
    assert set(catalog) == {"alpha", "agent-2", "agent-3", "agent-4", "agent-5"}
    assert catalog["alpha"].id == "agent-1" and catalog["agent-4"].name == "agent-1"


def test_filters() -> None:
    default = CatalogFilter()
    assert not default.accepts("helper-sleeptime", None, ())
    assert not default.accepts("x", "sleeptime_agent", ())
    assert CatalogFilter(hide_sleeptime=False).accepts("helper-sleeptime", None, ())
    tagged = CatalogFilter(tags=("prod",))
    assert tagged.accepts("x", None, ("prod", "eu")) and not tagged.accepts("x", None, ("dev",))
    named = CatalogFilter(name_regex=r"^team-")
    assert named.accepts("team-a", None, ()) and not named.accepts("a-team", None, ())


async def test_resolve_refreshes_once_on_a_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = AgentCatalog(connection=LettaConnection("http://letta"), ttl=60)
    listings = [[("agent-1", "alpha", None, 0, ())],
                [("agent-1", "alpha", None, 0, ()), ("agent-2", "new", None, 0, ())]]
    calls = []

    async def refresh() -> bool:
        calls.append(1)
        catalog._store(listings[min(len(calls) - 1, 1)])
        return True

    monkeypatch.setattr(catalog, "refresh_async", refresh)
    assert (await catalog.resolve("alpha")).id == "agent-1"  # first lookup: empty catalogue, refresh
    assert (await catalog.resolve("agent-1")).model_id == "alpha"  # a raw id resolves without a refresh
    assert len(calls) == 1
    catalog.last_attempt = 0
    assert (await catalog.resolve("new")).id == "agent-2"  # created since: found by the refresh on the miss
    with pytest.raises(OpenAIError) as missing:
        await catalog.resolve("ghost")  # a second miss within a second does not hit Letta again
    assert missing.value.status == 404 and len(calls) == 2


async def test_letta_never_reachable_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = AgentCatalog(connection=LettaConnection("http://letta"))

    async def fail() -> bool:
        catalog.last_error = "ConnectError"
        return False

    monkeypatch.setattr(catalog, "refresh_async", fail)
    with pytest.raises(OpenAIError) as error:
        await catalog.resolve("alpha")
    assert error.value.status == 503


def test_router_round_trip() -> None:
    pipeline = Pipeline()
    pipeline.add_component("router", AgentRouter(tags=["prod"], name_regex="^a", refresh_interval=5))
    router = Pipeline.loads(pipeline.dumps()).get_component("router")
    assert router.tags == ["prod"] and router.name_regex == "^a" and router.refresh_interval == 5
