"""Hayhooks and Haystack defaults an entry point applies before Hayhooks reads its settings (in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

_PROBE = (
    "import json; from letta_hayhooks.server import hayhooks_defaults; hayhooks_defaults.apply(); "
    "from hayhooks.settings import settings; "
    "print(json.dumps({'tracing': settings.tracing_enabled, 'spans': settings.tracing_include_haystack_spans, "
    "'deploy': settings.startup_deploy_strategy, 'telemetry': __import__('os').environ['HAYSTACK_TELEMETRY_ENABLED']}))"
)


def hayhooks_settings(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HAYHOOKS_", "HAYSTACK_"))}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, check=True,
        timeout=120,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_defaults_turn_off_telemetry_tracing_and_the_unread_span_buffer():
    seen = hayhooks_settings()
    assert seen == {"tracing": False, "spans": False, "deploy": "sequential", "telemetry": "false"}


@pytest.mark.parametrize("tracing", ["true", "false"])
def test_span_buffer_follows_tracing_unless_set(tracing):
    assert hayhooks_settings(HAYHOOKS_TRACING_ENABLED=tracing)["spans"] is (tracing == "true")
    assert hayhooks_settings(HAYHOOKS_TRACING_ENABLED=tracing, HAYHOOKS_TRACING_INCLUDE_HAYSTACK_SPANS="true")["spans"]


_IMPORT_PROBE = (
    "import json, os; before = dict(os.environ); "
    "import letta_hayhooks, letta_hayhooks.components, letta_hayhooks.server.hayhooks_defaults; "
    "print(json.dumps(sorted(k for k in os.environ if os.environ.get(k) != before.get(k))))"
)


def test_importing_the_package_or_a_component_changes_no_environment_variable():
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HAYHOOKS_", "HAYSTACK_"))}
    result = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], env=clean, cwd=ROOT, capture_output=True,
                            text=True, check=True, timeout=120)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
