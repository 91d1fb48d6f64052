"""Imports point one way: no circle among solverkit's modules.

The graph is read from the source with ``ast``: an edge A -> B is an import of B by A
(relative or absolute; ``from .x import y`` -> ``x`` and ``x.y`` when that is a module;
``from . import y`` -> ``y`` when it is a module, else the package). Module-level imports
(also inside module-level ``if``/``try``, not under ``if TYPE_CHECKING:``) must form no
circle at all; imports inside functions must not close one either, except the circles
listed in ``KNOWN_CIRCLES`` (docs/architecture.md, "Imports", says why each is left).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "solverkit"

# circles through function-level imports that are still there, each with its reason in
# docs/architecture.md; the test fails on any other (and passes when one disappears)
KNOWN_CIRCLES: list[set[str]] = []      # none left


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts.pop()
        found[".".join(parts)] = (path, package)
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse,
                          node.finalbody):
                yield from _module_level(block)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)


def import_graph(root: Path, everywhere: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (at module level, or
    ``everywhere``: inside functions and classes too)."""
    mods = modules(root)
    top = root.name
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, (path, package) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        nodes = list(_module_level(tree.body))
        if everywhere:
            nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".") if package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target]
                targets += [f"{target}.{alias.name}" for alias in node.names
                            if f"{target}.{alias.name}" in mods]
                if node.module is None and len(targets) > 1:
                    targets = targets[1:]       # from . import x: x, not the package
            graph[name].update(t for t in targets if t in mods and t.split(".")[0] == top
                               and t != name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_circle_among_module_level_imports():
    assert circles(import_graph(PACKAGE)) == []


def test_function_level_imports_close_no_new_circle():
    new = [c for c in circles(import_graph(PACKAGE, everywhere=True)) if c not in KNOWN_CIRCLES]
    assert new == []


@pytest.mark.parametrize("where", ["module", "function"])
def test_the_graph_sees_a_circle_in_any_import_form(tmp_path, where):
    """The checker itself: relative, absolute and ``from . import`` imports all count."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n")
    (package / "sub" / "b.py").write_text("import pkg.c\n")
    indent = "def f():\n    " if where == "function" else ""
    (package / "c.py").write_text(f"{indent}from . import a\n")
    expected = [{"pkg.a", "pkg.sub.b", "pkg.c"}]
    assert circles(import_graph(package, everywhere=True)) == expected
    assert circles(import_graph(package)) == (expected if where == "module" else [])
