"""
The pipelines folder entry of letta-hayhooks.

Hayhooks loads this folder at start-up (`hayhooks run`, or the letta-hayhooks server). Its `setup()` discovers the
Letta agents and registers one pipeline per agent under the agent's model id; a background refresh keeps that list
in step with Letta. This folder's own wrapper is not a model: it takes itself out of the model list right after
Hayhooks registers it.
"""

from letta_hayhooks.server import hayhooks_defaults

# An entry point under plain `hayhooks run`: Haystack's telemetry off before anything imports Haystack's pipelines.
hayhooks_defaults.apply()

from fastapi_openai_compat import ChatCompletion  # noqa: E402
from hayhooks import BasePipelineWrapper  # noqa: E402
from starlette.datastructures import Headers  # noqa: E402

from letta_hayhooks.chat.service import http_error  # noqa: E402
from letta_hayhooks.errors import model_not_found  # noqa: E402
from letta_hayhooks.server import logging_setup  # noqa: E402
from letta_hayhooks.server.agent_models import default_models  # noqa: E402

# Hayhooks names a pipeline after its folder; this name is kept out of /v1/models.
FOLDER_NAME = "letta_agents"


class PipelineWrapper(BasePipelineWrapper):
    """Starts agent discovery; every agent becomes its own registered pipeline."""

    skip_mcp = True
    skip_a2a = True

    def setup(self) -> None:
        """Discover the agents now and keep refreshing them in the background."""
        models = default_models()
        if not logging_setup.is_configured():  # plain `hayhooks run`: the server's entry points did it already
            logging_setup.configure_logging(models.settings)
        models.hide(FOLDER_NAME, self)
        self.pipeline = None

    async def run_chat_completion_async(
        self, model: str, messages: list[dict], body: dict, headers: Headers | None = None
    ) -> ChatCompletion:
        """Never a model: answers like an unknown one."""
        del messages, body, headers
        raise http_error(model_not_found(model))
