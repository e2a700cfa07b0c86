"""
The `letta-hayhooks` command: run the server, with a local Letta server when `LETTA_BASE_URL` is not set.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import TYPE_CHECKING

import click

from letta_hayhooks import __version__

if TYPE_CHECKING:
    from letta_hayhooks.settings import Settings


def _settings() -> Settings:
    from letta_hayhooks.settings import SettingsError, get_settings  # noqa: PLC0415

    try:
        return get_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


# Measured with benchmarks/concurrency.py: 100 concurrent streams, 0 errors with 8 (9 Letta errors with 128).
LOCAL_MAX_INFLIGHT = 8


def local_settings(settings: Settings, letta_url: str) -> Settings:
    """The settings for a proxy in front of the local Letta at `letta_url` (the environment is left as it is)."""
    update: dict[str, object] = {"letta_base_url": letta_url}
    if "max_inflight" not in settings.model_fields_set:
        # SQLite serialises writes: beyond a few concurrent turns the local Letta answers "database is locked"
        update["max_inflight"] = LOCAL_MAX_INFLIGHT
    return settings.model_copy(update=update)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


# Uvicorn waits this much longer than the shutdown grace before it cancels what still runs: time for the streams the
# drain stops to send their error event and cancel their Letta runs.
SHUTDOWN_MARGIN = 5.0


def run_server(app: object, settings: Settings, host: str, port: int) -> None:
    """
    Run the app under uvicorn, with Hayhooks' logging (as its `run_app` does) plus this server's connection limits:
    the header deadline and the start of the drain (server/http_guard.py), the keep-alive timeout, the shutdown
    grace, and an access log without secrets.
    """
    import uvicorn  # noqa: PLC0415

    from letta_hayhooks.server import access_log  # noqa: PLC0415
    from letta_hayhooks.server.http_guard import guarded_protocol  # noqa: PLC0415
    from letta_hayhooks.server.logging_setup import route_stdlib_logging  # noqa: PLC0415

    # uvicorn's loggers (and Haystack's, ours) into the server log as configured: no colours in a log file
    route_stdlib_logging(settings)
    access_log.install()
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_config=None,  # Hayhooks' loguru handlers, installed above
        http=guarded_protocol(settings.header_timeout),
        timeout_keep_alive=settings.keepalive_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=settings.shutdown_grace + SHUTDOWN_MARGIN,  # type: ignore[arg-type]
    )


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="letta-hayhooks")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Serve every Letta agent as an OpenAI-compatible model (default command: serve)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve)


@main.command()
@click.option("--host", default=None, help="Bind address (default: HAYHOOKS_HOST or localhost).")
@click.option("--port", type=int, default=None, help="Port (default: HAYHOOKS_PORT or 1416).")
def serve(host: str | None, port: int | None) -> None:
    """Start the server (local mode when LETTA_BASE_URL is not set)."""
    settings = _settings()
    from letta_hayhooks.server import hayhooks_defaults  # noqa: PLC0415

    hayhooks_defaults.apply()  # before Hayhooks is imported: it reads its settings once, at import
    from hayhooks.settings import settings as hayhooks_settings  # noqa: PLC0415

    from letta_hayhooks.server.logging_setup import configure_logging  # noqa: PLC0415

    configure_logging(settings)  # after Hayhooks' import, which adds its own (colouring) log sink
    from letta_hayhooks.local.launcher import LocalMode, is_local_mode  # noqa: PLC0415
    from letta_hayhooks.local.letta_server import LocalLettaError  # noqa: PLC0415

    host = host or hayhooks_settings.host
    port = port or hayhooks_settings.port
    local = LocalMode(settings) if is_local_mode(settings) else None
    # SIGTERM ends the server like Ctrl-C does, so what local mode started is always stopped
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if local is not None:
            try:
                state = local.start(proxy_port=port, proxy_url=f"http://{host}:{port}")
            except LocalLettaError as exc:
                raise click.ClickException(str(exc)) from None
            settings = local_settings(settings, state.letta_url)
            local.banner(state, f"http://{host}:{port}")
        from letta_hayhooks.server.app import create_server_app  # noqa: PLC0415

        run_server(create_server_app(settings), settings, host=host, port=port)
    except KeyboardInterrupt:
        pass
    finally:
        if local is not None:
            local.stop()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """Show what local mode runs: proxy and Letta URLs and ports, versions, models, PIDs, the data directory."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from letta_hayhooks.local.launcher import status as local_status  # noqa: PLC0415

    info = local_status(_settings())
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    table = Table(title="letta-hayhooks", show_header=False)
    for key, value in info.items():
        table.add_row(key, str(value))
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
