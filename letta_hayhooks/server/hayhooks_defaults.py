"""
Defaults for Hayhooks and Haystack that this server needs, applied by the entry points before either is imported.

Hayhooks reads its settings from the environment once, when first imported, so only an entry point (`letta-hayhooks
serve`, the pipelines folder under `hayhooks run`, the CLI) may call `apply()`, and before that import. Values already
in the environment win. Importing this module changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

import letta_hayhooks


def pipelines_dir() -> Path:
    """This project's pipelines folder: inside the installed package, or at the top of a source checkout."""
    for root in letta_hayhooks.__path__:
        candidate = Path(root) / "pipelines"
        if candidate.is_dir():
            return candidate
    msg = "the letta-hayhooks pipelines folder is missing from the installation"
    raise RuntimeError(msg)


def defaults() -> dict[str, str]:
    """The variables `apply()` sets when they are not set already."""
    tracing = os.environ.get("HAYHOOKS_TRACING_ENABLED", "false")
    return {
        "HAYSTACK_TELEMETRY_ENABLED": "false",  # no telemetry from a proxy
        "HAYHOOKS_STARTUP_DEPLOY_STRATEGY": "sequential",  # parallel start-up deploy races on imports
        "HAYHOOKS_TRACING_ENABLED": tracing,  # spans on every chunk cost latency
        # Hayhooks copies every Haystack span into its live trace buffer, which only its /traces route (mounted when
        # tracing is on) reads: with tracing off that is ~0.4 ms per pipeline run spent on spans nobody can see
        "HAYHOOKS_TRACING_INCLUDE_HAYSTACK_SPANS": tracing,
        "HAYHOOKS_PIPELINES_DIR": str(pipelines_dir()),  # this project's pipelines, from any cwd
    }


def apply(environ: MutableMapping[str, str] | None = None) -> None:
    """Set this server's Hayhooks and Haystack defaults in `environ` (the process environment by default)."""
    target = os.environ if environ is None else environ
    for name, value in defaults().items():
        target.setdefault(name, value)
