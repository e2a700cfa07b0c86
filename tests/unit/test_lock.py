"""The lock (requirements/*.lock, written by scripts/lock) matches pyproject.toml's ranges and what is installed."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def pins(name: str, *, for_this_platform: bool = False) -> dict[str, str]:
    """name -> version of every pinned line of one lock file, checking each carries a hash; with `for_this_platform`,
    only the lines whose environment marker holds here."""
    found: dict[str, str] = {}
    lines = (LOCKS / name).read_text().splitlines()
    for index, line in enumerate(lines):
        match = PIN.match(line)
        if match:
            assert lines[index + 1].strip().startswith("--hash=sha256:"), f"{name}: {line} has no hash"
            if for_this_platform and match.group(3) and not Marker(match.group(3)).evaluate():
                continue
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra if not r.startswith("letta-hayhooks")]
    return requirements


def test_every_declared_range_is_locked_within_its_range() -> None:
    locked = pins("dev.lock")
    for requirement in declared():
        version = locked.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in the lock: run scripts/lock"
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement} but {version} is locked"


def test_the_run_lock_is_the_dev_lock_with_fewer_packages() -> None:
    dev, run = pins("dev.lock"), pins("run.lock")
    assert {name: dev.get(name) for name in run} == run
    assert {"hayhooks", "haystack-ai", "letta-client", "openai", "hatchling"} <= set(run)


def test_the_new_letta_package_never_enters_the_project_env() -> None:
    # PyPI's `letta` is Letta Code now; the server (0.16.8) lives in its own virtualenv, pinned by the kit
    assert "letta" not in pins("dev.lock")


def test_the_oldest_openai_is_the_bottom_of_the_range() -> None:
    (openai,) = [r for r in declared() if r.name == "openai"]
    (bottom,) = [s.version for s in openai.specifier if s.operator == ">="]
    assert pins("openai-oldest.lock") == {"openai": bottom if bottom.count(".") == 2 else f"{bottom}.0"}


def test_what_is_installed_is_the_lock() -> None:
    """CI and the README install from the lock: a drift here means the environment is not what was tested."""
    drift = {}
    for name, version in pins("dev.lock", for_this_platform=True).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            drift[name] = (version, installed)
    if drift:
        pytest.fail(f"installed versions differ from requirements/dev.lock (locked, installed): {drift}")
