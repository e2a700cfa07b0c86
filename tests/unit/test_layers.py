"""
Dependencies run one way: entry points -> server -> pipeline -> components -> Letta access -> shared leaf modules.

Read from the source's own imports (every `import` statement, also those inside functions), so a lower layer that
starts importing a higher one fails here. This is the layering the README's architecture diagram shows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import letta_hayhooks

PACKAGE = "letta_hayhooks"
# higher may import lower or equal, never the other way round
RANKS = {
    "entry": 6,  # letta-hayhooks serve / the ASGI factory / the pipelines folder under `hayhooks run`
    "server": 5,
    "pipeline": 4,
    "components": 3,
    "access": 2,
    "leaf": 1,
}
LEAF_MODULES = {"settings", "errors", "json_body", "openai_request", "openai_wire", "openai_responses", "turn_plan",
                 "lru", "tenants", "telemetry"}


def layer_of(module: str) -> str | None:
    """The layer of a `letta_hayhooks...` module; None for the standalone parts (local mode, the chat client)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1:
        return "leaf"
    head = parts[1]
    return {
        "cli": "entry", "asgi": "entry", "pipelines": "entry",
        "server": "server",
        "chat": "pipeline",
        "components": "components",
        "letta_access": "access",
    }.get(head, "leaf" if head in LEAF_MODULES else None)


def source_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name, wherever the checkout keeps it."""
    found: dict[str, Path] = {}
    for root in map(Path, letta_hayhooks.__path__):
        for path in root.rglob("*.py"):
            relative = path.relative_to(root)
            if relative.parts[0] in {"tests", "benchmarks", ".venv", "build", "dist"} or "kit" in relative.parts:
                continue
            if root.name != PACKAGE and relative.parts[0] not in {"components", "pipelines", "cli_client.py"}:
                continue
            name = ".".join((PACKAGE, *relative.with_suffix("").parts)).removesuffix(".__init__")
            found[name] = path
    return found


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = source_modules()


def test_every_layer_is_present() -> None:
    assert {layer_of(name) for name in MODULES} >= set(RANKS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module: str) -> None:
    layer = layer_of(module)
    imported = {name for name in imports_of(MODULES[module]) if name.split(".")[0] == PACKAGE}
    if layer is None:  # local mode and the chat client stand apart: they may use only the shared leaf modules
        allowed = {"leaf"}
        upward = {name for name in imported if layer_of(name) not in (None, *allowed)}
        upward = {name for name in upward if name in MODULES or layer_of(name) != "leaf"}
    else:
        upward = {name for name in imported if (other := layer_of(name)) is not None and RANKS[other] > RANKS[layer]}
    assert not upward, f"{module} ({layer}) imports higher layers: {sorted(upward)}"


def test_nothing_imports_the_top_level_repository_folders() -> None:
    # the wheel installs components/, pipelines/ and cli_client.py inside the package: a bare `components` import
    # would only work in a source checkout
    for module, path in MODULES.items():
        bare = {name for name in imports_of(path) if name.split(".")[0] in {"components", "pipelines", "cli_client"}}
        assert not bare, f"{module} imports {sorted(bare)}"
