"""
The ASGI entry point for running the server under uvicorn directly (several worker processes, for example):

    uvicorn --factory letta_hayhooks.asgi:create_app --workers 2 \\
        --http letta_hayhooks.server.http_guard:GuardedHttpProtocol --timeout-keep-alive 5 \\
        --timeout-graceful-shutdown 35

Like `letta-hayhooks serve`, it applies this server's Hayhooks defaults before Hayhooks is imported, and keeps secrets
in query strings out of the access log. The `--http` protocol adds the header timeout and starts the shutdown drain
(see the README's Security section); `--timeout-graceful-shutdown` should exceed LETTA_HAYHOOKS_SHUTDOWN_GRACE.
"""

from letta_hayhooks.server import access_log, hayhooks_defaults

hayhooks_defaults.apply()
access_log.install()  # uvicorn has configured its loggers by the time it imports the app

from letta_hayhooks.server.app import create_server_app  # noqa: E402 - Hayhooks must see the defaults first

create_app = create_server_app

__all__ = ["create_app"]
