"""
The ASGI entry point for running the server under uvicorn directly (several worker processes, for example):

    uvicorn --factory letta_hayhooks.asgi:create_app --workers 2

Like `letta-hayhooks serve`, it applies this server's Hayhooks defaults before Hayhooks is imported.
"""

from letta_hayhooks.server import hayhooks_defaults

hayhooks_defaults.apply()

from letta_hayhooks.server.app import create_server_app  # noqa: E402 - Hayhooks must see the defaults first

create_app = create_server_app

__all__ = ["create_app"]
