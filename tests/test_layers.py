"""The packages' import graph, read from their source: no module imports one that imports it.

Imports inside functions count too: a lazy import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("edge", "trainer")


def module_imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Every module of `packages` under root -> the modules of those packages it imports anywhere in it."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    graph = {}
    for name, path in modules.items():
        package = name.split(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package if node.level else node.module or ""
                if node.level and node.module:
                    base = f"{package}.{node.module}"
                # `from edge import model` imports the module edge.model; `from edge import UserError`, edge itself.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            imported.update(target for target in targets if target in modules and target != name)
        graph[name] = imported
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import circle [a, b, ..., a] per group of modules that import one another (Tarjan's components)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(_circle_through(graph, set(component)))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _circle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, within the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for imported in sorted(graph[module] & component):
                if imported == start:
                    return paths[module] + [start]
                if imported not in paths:
                    paths[imported] = paths[module] + [imported]
                    following.append(imported)
        frontier = following
    raise AssertionError(f"{component} is not a circle")


def test_no_module_imports_one_that_imports_it():
    found = circles(module_imports(REPO))
    assert not found, "import circles: " + "; ".join(" -> ".join(circle) for circle in found)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules `start` imports, directly or through others."""
    seen, frontier = set(), [start]
    while frontier:
        for imported in graph[frontier.pop()] - seen:
            seen.add(imported)
            frontier.append(imported)
    return seen


def test_no_command_line_module_imports_another():
    """The commands are thin layers over the libraries: what two of them share lives in a library module."""
    graph = module_imports(REPO)
    commands = {module for module in graph if module.endswith(".cli")}
    assert commands == {"edge.cli", "trainer.cli"}
    for command in commands:
        assert not reachable(graph, command) & (commands - {command}), f"{command} imports another command"


def test_the_check_sees_circles_through_lazy_and_relative_imports(tmp_path):
    """A package shaped like edge/ before its consumers had their own layer: loop -> saver -> loop."""
    package = tmp_path / "edge"
    package.mkdir()
    (package / "__init__.py").write_text("class UserError(Exception):\n    pass\n")
    (package / "loop.py").write_text("from . import UserError\nfrom .saver import Saver\n")
    (package / "saver.py").write_text("def add():\n    from edge.loop import Result\n")
    (package / "leaf.py").write_text("from . import saver, UserError\n")
    graph = module_imports(tmp_path, ("edge",))
    assert graph == {"edge": set(), "edge.leaf": {"edge", "edge.saver"}, "edge.loop": {"edge", "edge.saver"},
                     "edge.saver": {"edge.loop"}}
    assert circles(graph) == [["edge.loop", "edge.saver", "edge.loop"]]
