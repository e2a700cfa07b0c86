"""The wheel: one top-level package, and it installs and starts from a clean virtualenv (no source checkout)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built with the locked hatchling (no build isolation: nothing unlocked is fetched)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True,
                   timeout=300)
    return next(out.glob("letta_hayhooks-*.whl"))


def test_the_wheel_has_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"letta_hayhooks", wheel.name.split("-py")[0] + ".dist-info"}
    for inside in ("letta_hayhooks/components/session_resolver.py", "letta_hayhooks/cli_client.py",
                   "letta_hayhooks/pipelines/letta_agents/pipeline_wrapper.py", "letta_hayhooks/local/kit/stub_llm.py"):
        assert inside in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "letta_hayhooks.cli_client:cli" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_wheel_installs_and_starts_in_a_clean_virtualenv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    # as the README installs: the locked server set, then the wheel on top without resolving
    subprocess.run([str(bin_dir / "pip"), "install", "-q", "--require-hashes", "--no-deps", "-r",
                    str(ROOT / "requirements" / "run.lock")], check=True, timeout=600)
    subprocess.run([str(bin_dir / "pip"), "install", "-q", "--no-deps", str(wheel)], check=True, timeout=600)
    subprocess.run([str(bin_dir / "pip"), "check"], check=True, timeout=120)
    shown = subprocess.run([str(bin_dir / "letta-hayhooks"), "serve", "--help"], capture_output=True, text=True,
                           check=True, timeout=120, cwd=tmp_path)
    assert "Start the server" in shown.stdout
    assert subprocess.run([str(bin_dir / "letta-hayhooks-chat"), "--help"], capture_output=True, text=True,
                          check=True, timeout=120, cwd=tmp_path).returncode == 0
    probe = ("from letta_hayhooks.server import hayhooks_defaults; import letta_hayhooks.components as c; "
             "print(hayhooks_defaults.pipelines_dir()); print(c.__file__)")
    found = subprocess.run([str(bin_dir / "python"), "-c", probe], capture_output=True, text=True, check=True,
                           timeout=120, cwd=tmp_path).stdout.split()
    assert all(line.startswith(str(venv)) for line in found)  # the installed copies, not a checkout's
