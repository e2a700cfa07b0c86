"""`letta-hayhooks status`: what local mode runs, where it looked, and how to look elsewhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from letta_hayhooks import __version__, cli
from letta_hayhooks.local.launcher import STATE_FILE, status
from letta_hayhooks.settings import Settings


def state_file(data_dir: Path, **overrides: object) -> None:
    state = {"letta_url": "http://localhost:8283", "data_dir": str(data_dir), "model": "letta/stub-model",
             "scripted": True, "letta_port": 8283, "stub_port": 8299, "letta_pid": os.getpid(), "stub_pid": None,
             "proxy_pid": 2**22 + 7, "started_at": 1_700_000_000.0, "proxy_url": "http://127.0.0.1:1416",
             "letta_version": "0.16.8", **overrides}
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / STATE_FILE).write_text(json.dumps(state))


def test_status_shows_urls_ports_versions_pids_and_where_it_looked(tmp_path: Path) -> None:
    state_file(tmp_path)
    info = status(Settings(_env_file=None, LETTA_HAYHOOKS_DATA_DIR=str(tmp_path)), probe=False)
    assert info["mode"] == "local" and info["data_dir"] == str(tmp_path)
    assert (info["proxy_url"], info["proxy_port"], info["letta_url"], info["letta_port"]) == (
        "http://127.0.0.1:1416", 1416, "http://localhost:8283", 8283)
    assert (info["letta_version"], info["letta_hayhooks_version"]) == ("0.16.8", __version__)
    assert info["letta_pid"] == os.getpid() and info["letta_pid_alive"] and info["running"]
    assert not info["proxy_pid_alive"]  # that process is gone
    assert info["started_at"] == "2023-11-14T22:13:20+00:00"
    assert str(tmp_path) in info["hint"] and "LETTA_HAYHOOKS_DATA_DIR" in info["hint"]


def test_status_without_a_state_file_says_where_it_looked(tmp_path: Path) -> None:
    info = status(Settings(_env_file=None, LETTA_HAYHOOKS_DATA_DIR=str(tmp_path / "none")), probe=False)
    assert info["running"] is False and info["state_file"] is None
    assert "LETTA_HAYHOOKS_DATA_DIR" in info["hint"] and str(tmp_path / "none") in info["hint"]


def test_an_older_state_file_still_reads(tmp_path: Path) -> None:
    state_file(tmp_path, future_field="x")
    raw = json.loads((tmp_path / STATE_FILE).read_text())
    del raw["proxy_url"], raw["letta_version"]  # written before they were recorded
    (tmp_path / STATE_FILE).write_text(json.dumps(raw))
    info = status(Settings(_env_file=None, LETTA_HAYHOOKS_DATA_DIR=str(tmp_path)), probe=False)
    assert info["letta_url"] == "http://localhost:8283" and info["proxy_url"] is None


def test_the_status_command_prints_json(tmp_path: Path, monkeypatch) -> None:
    state_file(tmp_path)
    monkeypatch.setenv("LETTA_HAYHOOKS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LETTA_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    from letta_hayhooks.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.main, ["status", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["proxy_url"] == "http://127.0.0.1:1416" and shown["data_dir"] == str(tmp_path)


def test_start_up_progress_in_a_log_is_plain_timestamped_lines(tmp_path: Path) -> None:
    import io
    import re

    from rich.console import Console

    from letta_hayhooks.local.launcher import LocalMode, LocalState

    out = io.StringIO()
    mode = LocalMode(Settings(_env_file=None, LETTA_HAYHOOKS_DATA_DIR=str(tmp_path)), console=Console(file=out))
    with mode._progress("Starting the local Letta server") as progress:
        progress.update("Starting the scripted model")
        progress.update("Starting the scripted model")  # a repeated step is one line
    mode._say("[green]Installed Letta")
    mode.banner(LocalState(letta_url="http://localhost:8283", data_dir=str(tmp_path), model="m", scripted=True,
                           letta_port=8283, stub_port=8299), "http://127.0.0.1:1416")
    lines = out.getvalue().splitlines()
    stamp = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ local mode: "
    assert all(re.match(stamp, line) for line in lines), lines
    assert [re.sub(stamp, "", line) for line in lines[:3]] == [
        "Starting the local Letta server", "Starting the scripted model", "Installed Letta"]
    assert any("http://127.0.0.1:1416/v1" in line for line in lines) and "\x1b[" not in out.getvalue()
