"""
The `letta-hayhooks` command: run the server (with a local Letta when `LETTA_BASE_URL` is not set).
"""

from __future__ import annotations

import sys

import click


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default=None, help="Bind address (default: HAYHOOKS_HOST or localhost).")
@click.option("--port", type=int, default=None, help="Port (default: HAYHOOKS_PORT or 1416).")
@click.pass_context
def main(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve every Letta agent as an OpenAI-compatible model."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve, host=host, port=port)


@main.command()
@click.option("--host", default=None, help="Bind address (default: HAYHOOKS_HOST or localhost).")
@click.option("--port", type=int, default=None, help="Port (default: HAYHOOKS_PORT or 1416).")
def serve(host: str | None, port: int | None) -> None:
    """Start the server."""
    from letta_hayhooks.settings import SettingsError, get_settings  # noqa: PLC0415 - fast --help

    try:
        get_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    from hayhooks import run_app  # noqa: PLC0415

    from letta_hayhooks.app import create_server_app  # noqa: PLC0415

    run_app(create_server_app(), host=host, port=port)


if __name__ == "__main__":
    sys.exit(main())
