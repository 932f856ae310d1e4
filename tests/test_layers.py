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


SUBPACKAGES = ("_backends", "_ratelimit", "_cache")
# Pure modules inside the subpackages: the numbers and what a store answers.
PURE_INSIDE = ("_ratelimit/_limit.py", "_cache/_policy.py", "_cache/_store.py")


def imports_of(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """(package units, top-level external modules) a module imports, TYPE_CHECKING included.

    A unit is a top-level private module (``_errors``) or a subpackage (``_ratelimit``);
    a subpackage's own modules importing each other stay inside their unit.
    """
    inside = path.parent.name if path.parent.name in SUBPACKAGES else None
    siblings, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                external.add(node.module.split(".")[0])
                continue
            top_level = node.level == (1 if inside is None else 2)
            if top_level and node.module:
                siblings.add(node.module.split(".")[0])
            elif inside is not None and node.level == 2:  # from .. import X
                siblings.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            external.update(alias.name.split(".")[0] for alias in node.names)
    siblings.discard(inside or "")
    return siblings, external


def core_modules() -> dict[str, list[pathlib.Path]]:
    """Every unit of the core and its files."""
    units = {path.stem: [path] for path in PACKAGE.glob("_*.py")}
    for name in SUBPACKAGES:
        units[name] = sorted((PACKAGE / name).glob("*.py"))
    return units


def unit_graph() -> dict[str, set[str]]:
    units = core_modules()
    return {
        name: set().union(*(imports_of(path)[0] for path in paths)) & set(units)
        for name, paths in units.items()
    }


def test_the_core_import_graph_has_no_cycle() -> None:
    graph = unit_graph()
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
    below = ["_errors", "_sansio", "_send", "_state", "_reads", "_session"]
    for lower, upper in itertools.pairwise(below):
        assert reaches(upper, lower), (upper, lower)
        assert not reaches(lower, upper), (lower, upper)
    assert not reaches("_retry", "_send")  # the loop is handed its handler, never imports it
    assert not reaches("_transport", "_send")
    for layer in ("_bulk", "_watch"):
        assert reaches("_reads", layer)
        assert not reaches(layer, "_state")
    # The plumbing knows no store; the stores know neither the call path nor each other.
    for upper in ("_ratelimit", "_cache", "_send", "_state", "_session"):
        assert not reaches("_backends", upper), upper
    for upper in ("_send", "_state", "_session", "_retry", "_cache"):
        assert not reaches("_ratelimit", upper), upper
    for upper in ("_send", "_state", "_session", "_ratelimit"):
        assert not reaches("_cache", upper), upper


def test_the_layers_below_the_session_never_import_it() -> None:
    for name, targets in unit_graph().items():
        if name not in ("_session", "__init__"):
            assert "_session" not in targets, name


def test_the_protocol_layer_does_no_io() -> None:
    for path in [PACKAGE / f"{name}.py" for name in PURE] + [PACKAGE / p for p in PURE_INSIDE]:
        _, external = imports_of(path)
        assert not external & NO_IO_IMPORTS, (path.name, external & NO_IO_IMPORTS)


def test_no_module_of_the_core_is_long() -> None:
    # A module that grows past a screenful or five is doing two things.
    for paths in core_modules().values():
        for path in paths:
            assert len(path.read_text().splitlines()) <= 320, path.name


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


def test_no_module_outside_the_core_is_long() -> None:
    # The command line, the emulator, the fleet and OpenTelemetry keep the core's bound
    # too: a module that grows past it is doing two things, and is split, not waived.
    core = {path for paths in core_modules().values() for path in paths}
    outside = sorted(path for path in PACKAGE.rglob("*.py") if path not in core)
    lengths = {
        str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in outside
    }
    assert {name: lines for name, lines in lengths.items() if lines > 320} == {}
    checked = {path.relative_to(PACKAGE).with_suffix("").parts[0] for path in outside}
    assert {"cli", "testing", "fleet", "otel"} <= checked, checked
