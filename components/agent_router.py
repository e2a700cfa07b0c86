"""
Resolves a request's `model` to a Letta agent, from the shared catalogue of every served agent.
"""

from __future__ import annotations

import re
from typing import Any

from haystack import component

from letta_hayhooks.errors import model_not_found
from letta_hayhooks.letta_access.catalog import AgentCatalog, CatalogFilter
from letta_hayhooks.letta_access.component_base import LettaComponent


@component
class AgentRouter(LettaComponent):
    """
    Resolves the OpenAI `model` of a request to a Letta agent.

    Takes `model` (an advertised model id or a raw agent id); gives `agent_id` and `agent_type`.
    The catalogue lists every agent across pages, names each by its unique name (else its id), applies the
    optional tag / name-regex / sleeptime filters, and is cached for `refresh_interval` seconds with a refresh
    on a miss. An unknown model raises a 404 `model_not_found` error.

    ### Usage example
    ```python
    router = AgentRouter(base_url="http://localhost:8283")
    out = router.run(model="my-agent")
    out["agent_id"]  # "agent-..."
    ```
    """

    init_parameters = ("tags", "name_regex", "hide_sleeptime", "refresh_interval")

    def __init__(
        self,
        *,
        tags: list[str] | None = None,
        name_regex: str | None = None,
        hide_sleeptime: bool = True,
        refresh_interval: float = 30.0,
        **connection: Any,
    ) -> None:
        """
        Create the router.

        :param connection: Where Letta is (`base_url`, `api_key`, `project`, `timeout`, `connect_timeout`), as
            in `LettaComponent`.
        :param tags: Serve only agents carrying at least one of these tags.
        :param name_regex: Serve only agents whose name matches this regular expression.
        :param hide_sleeptime: Hide Letta's internal `*sleeptime` agents.
        :param refresh_interval: Catalogue TTL in seconds.
        """
        if name_regex:
            re.compile(name_regex)
        LettaComponent.__init__(self, **connection)  # Haystack rebuilds the class: no bare super()
        self.tags = tags or []
        self.name_regex = name_regex
        self.hide_sleeptime = hide_sleeptime
        self.refresh_interval = refresh_interval

    def warm_up(self) -> None:
        """Nothing to build: the shared catalogue owns the Letta clients."""

    @property
    def catalog(self) -> AgentCatalog:
        """The shared catalogue behind this router."""
        return AgentCatalog.shared(
            self.connection,
            CatalogFilter(tuple(self.tags), self.name_regex, self.hide_sleeptime),
            self.refresh_interval,
        )

    @component.output_types(agent_id=str, agent_type=str)
    def run(self, model: str) -> dict[str, Any]:
        """
        Resolve `model` (blocking).

        :param model: Advertised model id or raw agent id.
        :returns: `agent_id`, `agent_type`.
        :raises OpenAIError: 404 when no served agent matches.
        """
        catalog = self.catalog
        info = catalog.lookup(model)
        if info is None:
            catalog.refresh()
            info = catalog.lookup(model)
        if info is None:
            raise model_not_found(model)
        return {"agent_id": info.id, "agent_type": info.agent_type or ""}

    @component.output_types(agent_id=str, agent_type=str)
    async def run_async(self, model: str) -> dict[str, Any]:
        """
        Resolve `model`.

        :param model: Advertised model id or raw agent id.
        :returns: `agent_id`, `agent_type`.
        :raises OpenAIError: 404 when no served agent matches.
        """
        info = await self.catalog.resolve(model)
        return {"agent_id": info.id, "agent_type": info.agent_type or ""}


__all__ = ["AgentRouter"]
