"""The agent catalogue reads Letta's agent listing as plain JSON, page by page."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from letta_hayhooks.letta_access.catalog import AgentCatalog
from letta_hayhooks.letta_access.clients import LettaConnection


def agent(i: int, **extra: Any) -> dict[str, Any]:
    # the fields of Letta's AgentState the catalogue reads, among others it ignores
    return {"id": f"agent-{i:03d}", "name": f"writer-{i}", "agent_type": "letta_v1_agent",
            "created_at": "2026-11-26T02:21:30.123456Z", "tags": ["team-a"], "system": "...", "llm_config": {},
            **extra}


class _Raw:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.http_response = self
        self.items = items

    def json(self) -> list[dict[str, Any]]:
        return self.items


class FakeLetta:
    """`agents.with_raw_response.list` over a fixed set of agents, `limit` and `after` honoured."""

    def __init__(self, agents: list[dict[str, Any]]) -> None:
        self.all = agents
        self.calls: list[dict[str, Any]] = []
        self.agents = self.with_raw_response = self

    def list(self, **params: Any) -> _Raw:
        self.calls.append(params)
        ids = [a["id"] for a in self.all]
        start = ids.index(params["after"]) + 1 if params.get("after") else 0
        return _Raw(self.all[start:start + params["limit"]])


class AsyncFakeLetta(FakeLetta):
    async def list(self, **params: Any) -> _Raw:  # type: ignore[override]
        return FakeLetta.list(self, **params)


def catalog(client: Any, *, is_async: bool = False) -> AgentCatalog:
    made = AgentCatalog(connection=LettaConnection(base_url="http://letta"))
    if is_async:
        made._async_client = client
    else:
        made._sync_client = client
    return made


def test_a_refresh_reads_every_page_and_the_fields_it_needs() -> None:
    client = FakeLetta([agent(i) for i in range(250)])
    listed = catalog(client)
    assert listed.refresh()
    assert [call.get("after") for call in client.calls] == [None, "agent-099", "agent-199"]
    assert all(call["include"] == ["agent.tags"] for call in client.calls)
    info = listed.lookup("agent-007")
    assert info is not None and info.name == "writer-7"
    assert listed.by_id["agent-249"].id == "agent-249"
    row_created = int(datetime.fromisoformat("2026-11-26T02:21:30.123456+00:00").timestamp())
    assert info.created == row_created and info.tags == ("team-a",)


def test_an_agent_without_optional_fields_is_listed() -> None:
    listed = catalog(FakeLetta([{"id": "agent-1", "name": "bare", "created_at": None}]))
    assert listed.refresh()
    info = listed.lookup("agent-1")
    assert info is not None and info.created == 0 and info.tags == ()


def test_the_async_refresh_reads_the_same_way() -> None:
    listed = catalog(AsyncFakeLetta([agent(i) for i in range(3)]), is_async=True)
    assert asyncio.run(listed.refresh_async())
    assert sorted(listed.by_id) == ["agent-000", "agent-001", "agent-002"]
