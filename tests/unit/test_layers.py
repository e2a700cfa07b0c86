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


def _module_imports(module: str) -> set[str]:
    """The project modules `module` imports (a `from x import name` counts as `x`, or `x.name` when that is one)."""
    found = set()
    for name in imports_of(MODULES[module]):
        if name in MODULES:
            found.add(name)
        elif name.rpartition(".")[0] in MODULES:
            found.add(name.rpartition(".")[0])
    return found - {module}


def test_no_import_circle_inside_a_layer() -> None:
    """Modules of one layer may import each other, never in a circle (also imports inside functions)."""
    graph = {module: _module_imports(module) for module in MODULES}
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                circles.append([*path[path.index(other):], other])
            elif other not in state:
                visit(other, [*path, other])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


# Libraries whose private parts (a `_name`, or a module path with a private segment) break on their next release.
GUARDED_LIBRARIES = {"hayhooks", "haystack", "uvicorn", "starlette", "fastapi", "letta_client"}
# A file that must import such a part, with the contract test that pins what it relies on (none today).
PRIVATE_IMPORT_CONTRACTS: dict[str, str] = {}


def _private_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] in GUARDED_LIBRARIES and any(part.startswith("_") for part in parts[1:]):
                found.add(name)
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_of_a_library_is_imported(module: str) -> None:
    private = _private_imports(MODULES[module])
    if module in PRIVATE_IMPORT_CONTRACTS:
        assert (Path(__file__).parents[1] / PRIVATE_IMPORT_CONTRACTS[module]).is_file()
        return
    assert not private, f"{module} imports private parts of a library: {sorted(private)}"


def test_the_private_import_check_catches_one(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from haystack.core.pipeline.base import _NO_OUTPUT\nimport uvicorn._types\n"
                      "from starlette.routing import Route\n")
    assert _private_imports(sample) == {"haystack.core.pipeline.base._NO_OUTPUT", "uvicorn._types"}
