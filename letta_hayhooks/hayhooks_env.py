"""
Defaults for Hayhooks and Haystack that this server needs, set before either is imported.

Hayhooks reads its settings once, at import. Values already in the environment win.
"""

import os
from pathlib import Path

PIPELINES_DIR = Path(__file__).resolve().parent.parent / "pipelines"

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "false")  # no telemetry from a proxy
os.environ.setdefault("HAYHOOKS_STARTUP_DEPLOY_STRATEGY", "sequential")  # parallel start-up deploy races on imports
os.environ.setdefault("HAYHOOKS_TRACING_ENABLED", "false")  # spans on every chunk cost latency
# Hayhooks copies every Haystack span into its live trace buffer, which only its /traces route (mounted when tracing
# is on) reads: with tracing off that is ~0.4 ms per pipeline run spent on spans nobody can see
os.environ.setdefault("HAYHOOKS_TRACING_INCLUDE_HAYSTACK_SPANS", os.environ["HAYHOOKS_TRACING_ENABLED"])
os.environ.setdefault("HAYHOOKS_PIPELINES_DIR", str(PIPELINES_DIR))  # this project's pipelines, from any cwd
