"""
The ASGI entry point for running the server under uvicorn directly (several worker processes, for example):

    uvicorn --factory letta_hayhooks.asgi:create_app --workers 2 \\
        --http letta_hayhooks.server.http_guard:GuardedHttpProtocol --timeout-keep-alive 5 \\
        --timeout-graceful-shutdown 35

Like `letta-hayhooks serve`, it applies this server's Hayhooks defaults before Hayhooks is imported, sets up the log
(LETTA_HAYHOOKS_LOG_FORMAT, _LOG_LEVEL), keeps secrets in query strings out of the access log, and with several
workers shares their metrics through prometheus_client's multiprocess mode (server/multiprocess.py). The `--http`
protocol adds the header timeout and starts the shutdown drain (see the README's Security section);
`--timeout-graceful-shutdown` should exceed LETTA_HAYHOOKS_SHUTDOWN_GRACE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from letta_hayhooks.server import access_log, hayhooks_defaults, multiprocess

hayhooks_defaults.apply()
multiprocess.prepare()  # workers of `--workers N` add up their metrics: before prometheus_client is imported
access_log.install()  # uvicorn has configured its loggers by the time it imports the app

from letta_hayhooks.server.app import create_server_app  # noqa: E402 - Hayhooks must see the defaults first
from letta_hayhooks.server.logging_setup import configure_logging  # noqa: E402
from letta_hayhooks.settings import get_settings  # noqa: E402

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app() -> FastAPI:
    """The server app with this server's logging, for uvicorn's `--factory`."""
    settings = get_settings()
    configure_logging(settings)
    return create_server_app(settings)


__all__ = ["create_app"]
