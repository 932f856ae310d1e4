"""The package's shape: a one-way import graph, a pure core, and one table of facts."""

from __future__ import annotations

import ast
import graphlib
import itertools
import pathlib

import stability_user
from stability_user._endpoints import API_VERSIONS, ENDPOINTS
from stability_user.testing import _state as emulator_state

PACKAGE = pathlib.Path(stability_user.__file__).parent
# What the layer with no I/O may import: the standard library's pure parts, attrs,
# cattrs (through the converter), yarl (URL parsing) and the package's own modules.
# (_config is not among them: reading the environment is its one job.)
PURE = ("_sansio", "_checks", "_converter", "_endpoints", "_errors", "_models", "_secrets")
NO_IO_IMPORTS = {"aiohttp", "multidict", "asyncio", "os", "socket", "time"}


def imports_of(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """(sibling modules, top-level external modules) a module imports, TYPE_CHECKING included."""
    siblings, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                siblings.add(node.module.split(".")[0])
            elif node.level == 0 and node.module:
                external.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            external.update(alias.name.split(".")[0] for alias in node.names)
    return siblings, external


def core_modules() -> dict[str, pathlib.Path]:
    return {path.stem: path for path in PACKAGE.glob("_*.py")}


def test_the_core_import_graph_has_no_cycle() -> None:
    modules = core_modules()
    graph = {name: imports_of(path)[0] & set(modules) for name, path in modules.items()}
    list(graphlib.TopologicalSorter(graph).static_order())  # raises on a cycle

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name == goal:
                return True
            if name not in seen:
                seen.add(name)
                todo.extend(graph.get(name, ()))
        return False

    # Each layer builds on the one below and never on one above.
    below = ["_errors", "_sansio", "_send", "_state", "_session"]
    for lower, upper in itertools.pairwise(below):
        assert reaches(upper, lower), (upper, lower)
        assert not reaches(lower, upper), (lower, upper)
    assert not reaches("_retry", "_send")  # the loop is handed its handler, never imports it
    assert not reaches("_transport", "_send")
    for layer in ("_bulk", "_watch"):
        assert reaches("_session", layer)
        assert not reaches(layer, "_state")


def test_the_layers_below_the_session_never_import_it() -> None:
    for name, path in core_modules().items():
        if name not in ("_session", "__init__"):
            assert "_session" not in imports_of(path)[0], name


def test_the_protocol_layer_does_no_io() -> None:
    for name in PURE:
        _, external = imports_of(PACKAGE / f"{name}.py")
        assert not external & NO_IO_IMPORTS, (name, external & NO_IO_IMPORTS)


def test_the_emulator_agrees_with_the_endpoint_table() -> None:
    # The emulator keeps its own copy of these facts on purpose: it imports nothing
    # of the client, so a wrong table cannot make both sides agree on a mistake.
    assert set(emulator_state.API_VERSIONS) == set(API_VERSIONS)
    assert emulator_state.API_VERSIONS[0] == API_VERSIONS[0]  # the default version
    assert set(emulator_state.ENDPOINTS) == {e.path.removeprefix("user/") for e in ENDPOINTS}


def test_the_emulator_imports_nothing_of_the_client() -> None:
    for path in (PACKAGE / "testing").glob("*.py"):
        if path.name == "pytest_plugin.py":
            continue  # its session fixture is the one place that uses the client
        _, external = imports_of(path)
        assert "stability_user" not in external, path.name
        assert not any(line.startswith("from ..") for line in path.read_text().splitlines())
