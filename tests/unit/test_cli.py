"""
Unit tests of the `letta-hayhooks` command (`letta_hayhooks/cli.py`): in local mode `serve` hands the server app a
Settings object pointing at the local Letta, built from the user's settings, and leaves the environment alone.
Local mode, Hayhooks and the app are stand-ins here; tests/integration/test_local_mode.py runs the real thing.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from letta_hayhooks import cli
from letta_hayhooks.local import launcher
from letta_hayhooks.server import hayhooks_defaults
from letta_hayhooks.settings import Settings, get_settings

LOCAL_URL = "http://127.0.0.1:4321"


class FakeLocalMode:
    """Local mode without a Letta server: `start` only says where Letta runs."""

    stopped = False
    proxy_url: str | None = None

    def __init__(self, settings: Settings, console: Any = None) -> None:
        self.settings = settings

    def start(self, proxy_port: int, proxy_url: str | None = None) -> SimpleNamespace:
        FakeLocalMode.proxy_url = proxy_url  # recorded in the state file for `letta-hayhooks status`
        return SimpleNamespace(letta_url=LOCAL_URL)

    def banner(self, state: SimpleNamespace, proxy_url: str) -> None:
        pass

    def stop(self) -> None:
        FakeLocalMode.stopped = True


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Run `serve` with stand-ins; yields what the app factory and the uvicorn runner received."""
    captured: dict[str, Any] = {}
    for name in [k for k in os.environ if k.startswith("LETTA_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setattr(hayhooks_defaults, "apply", lambda: None)
    monkeypatch.setattr(launcher, "LocalMode", FakeLocalMode)
    app_module = ModuleType("letta_hayhooks.server.app")
    app_module.create_server_app = lambda settings: captured.setdefault("settings", settings) or "app"
    monkeypatch.setitem(sys.modules, "letta_hayhooks.server.app", app_module)
    monkeypatch.setattr(cli, "run_server",
                        lambda app, settings, host, port: captured.update(app=app, host=host, port=port))
    hayhooks_module = ModuleType("hayhooks")
    settings_module = ModuleType("hayhooks.settings")
    settings_module.settings = SimpleNamespace(host="localhost", port=1416)
    monkeypatch.setitem(sys.modules, "hayhooks", hayhooks_module)
    monkeypatch.setitem(sys.modules, "hayhooks.settings", settings_module)
    sigterm = signal.getsignal(signal.SIGTERM)
    get_settings.cache_clear()
    FakeLocalMode.stopped = False
    yield captured
    get_settings.cache_clear()
    signal.signal(signal.SIGTERM, sigterm)


def serve() -> None:
    before = dict(os.environ)
    result = CliRunner().invoke(cli.main, ["serve", "--host", "127.0.0.1", "--port", "18080"])
    assert result.exit_code == 0, result.output
    assert dict(os.environ) == before  # nothing reaches the app through the environment
    assert FakeLocalMode.stopped


def test_local_mode_passes_the_local_letta_and_the_sqlite_limit(served: dict[str, Any]) -> None:
    serve()
    settings = served["settings"]
    assert settings.letta_base_url == LOCAL_URL
    assert settings.max_inflight == cli.LOCAL_MAX_INFLIGHT
    assert (served["host"], served["port"]) == ("127.0.0.1", 18080)
    assert FakeLocalMode.proxy_url == "http://127.0.0.1:18080"


def test_an_explicit_inflight_limit_is_kept(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LETTA_HAYHOOKS_MAX_INFLIGHT", "20")
    monkeypatch.setenv("LETTA_HAYHOOKS_TURN_TIMEOUT", "42")
    serve()
    settings = served["settings"]
    assert settings.letta_base_url == LOCAL_URL
    assert settings.max_inflight == 20
    assert settings.turn_timeout == 42  # the rest of the user's settings travel along


def test_local_settings_copies_instead_of_changing() -> None:
    user = Settings(_env_file=None, LETTA_HAYHOOKS_MAX_INFLIGHT=3)
    local = cli.local_settings(user, LOCAL_URL)
    assert (local.letta_base_url, local.max_inflight) == (LOCAL_URL, 3)
    assert user.letta_base_url != LOCAL_URL
    defaults = cli.local_settings(Settings(_env_file=None), LOCAL_URL)
    assert defaults.max_inflight == cli.LOCAL_MAX_INFLIGHT
