"""
The base of the pipeline components that talk to Letta.

`LettaComponent` owns what every such component needs and would otherwise repeat: the connection parameters, their
serialisation, one async client per component instance (`warm_up` builds it, `close` releases it), and the blocking
`run` twin of the component's `run_async`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from typing import Any, ClassVar

from haystack import default_from_dict, default_to_dict
from haystack.utils import Secret, deserialize_secrets_inplace
from letta_client import AsyncLetta

from letta_hayhooks.letta_access.clients import LettaConnection

# The client of a blocking `run`: that call runs `run_async` on a private event loop, which must not share the
# instance's client (an HTTP connection pool belongs to the loop it was first used on).
_LOOP_CLIENT: contextvars.ContextVar[AsyncLetta | None] = contextvars.ContextVar("letta_loop_client", default=None)


class LettaComponent:
    """
    Connection parameters, serialisation and the client lifecycle of a Letta component.

    A subclass defines `run_async` (with `@component.output_types`) and lists its own init parameters in
    `init_parameters`; the blocking `run` with the same signature is generated from `run_async`.
    """

    # names of the subclass's own init parameters, serialised by `to_dict`
    init_parameters: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        base_url: str = "http://localhost:8283",
        api_key: Secret | None = Secret.from_env_var("LETTA_API_KEY", strict=False),
        *,
        project: str | None = None,
        timeout: float = 300.0,
        connect_timeout: float = 5.0,
    ) -> None:
        """
        Set where Letta is.

        :param base_url: The Letta server.
        :param api_key: Letta API key (optional for a self-hosted server; None for none).
        :param project: Letta Cloud project, if any.
        :param timeout: Read timeout for Letta calls, in seconds.
        :param connect_timeout: Connect timeout, in seconds.
        """
        self.base_url = base_url
        self.api_key = api_key
        self.project = project
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._client: AsyncLetta | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        run_async = cls.__dict__.get("run_async")
        if run_async is not None and "run" not in cls.__dict__:
            cls.run = _blocking_twin(run_async)

    @functools.cached_property
    def connection(self) -> LettaConnection:
        """Where this component's Letta is."""
        api_key = self.api_key.resolve_value() if self.api_key is not None else None
        return LettaConnection(self.base_url, api_key, self.project, self.timeout, self.connect_timeout)

    @property
    def client(self) -> AsyncLetta:
        """This component's async client (built on first use when `warm_up` was not called)."""
        loop_client = _LOOP_CLIENT.get()
        if loop_client is not None:
            return loop_client
        if self._client is None:
            self.warm_up()
        return self._client  # type: ignore[return-value]

    def warm_up(self) -> None:
        """Build this component's client (Haystack calls this before the pipeline's first run)."""
        if self._client is None:
            self._client = self.connection.async_client()

    async def close(self) -> None:
        """Release the client's connections (server shutdown, or an agent's pipeline retired)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def to_dict(self) -> dict[str, Any]:
        """Serialize this component (its connection and its own init parameters)."""
        own = {name: getattr(self, name) for name in self.init_parameters}
        return default_to_dict(
            self,
            base_url=self.base_url,
            api_key=self.api_key,
            project=self.project,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            **own,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Deserialize this component."""
        deserialize_secrets_inplace(data["init_parameters"], keys=["api_key"])
        return default_from_dict(cls, data)


def _blocking_twin(run_async: Any) -> Any:
    """A blocking `run` with `run_async`'s signature and output types, running it on a private event loop."""

    @functools.wraps(run_async)
    def run(self: LettaComponent, *args: Any, **kwargs: Any) -> Any:
        async def once() -> Any:
            client = self.connection.async_client()
            token = _LOOP_CLIENT.set(client)
            try:
                return await run_async(self, *args, **kwargs)
            finally:
                _LOOP_CLIENT.reset(token)
                await client.close()

        return asyncio.run(once())

    run.__doc__ = f"Blocking twin of `run_async` (runs it on a private event loop).\n\n{run_async.__doc__ or ''}"
    return run
