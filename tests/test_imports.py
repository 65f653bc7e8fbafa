"""The package's import graph, read from the source with ast: no import circle inside aecore
(aecore/, kernels/ as aecore.kernels, cli/ as aecore.cli), and the library never imports the CLI.

Every import counts, those inside functions too (a circle through a lazy import still ties the
modules together); imports under ``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"aecore": ROOT / "aecore", "aecore.kernels": ROOT / "kernels", "aecore.cli": ROOT / "cli"}

# Edges of a known circle, each to be deleted when its circle is broken (the test fails while a
# listed edge no longer exists). Empty since the factory moved to devices.make_engine (#14).
KNOWN_CYCLE_EDGES: set = set()


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package's own name -> __init__.py)."""
    out = {}
    for pkg, folder in PACKAGES.items():
        for f in sorted(folder.glob("*.py")):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST):
    """The Import / ImportFrom nodes of ``tree``, leaving out ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if _type_checking_only(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of the package it imports."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        deps = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module
                # `from pkg import name`: the submodule pkg.name when there is one, else pkg
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod
                           for a in node.names]
            deps |= {t for t in targets if t in mods and t != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    # a few edges every version of the package has: the check sees relative, absolute and
    # function-level imports
    assert "aecore.errors" in graph["aecore.data"]
    assert "aecore.kernels.cpu" in graph["aecore.engine_cpu"]
    assert "aecore.engine_cpu" in graph["aecore.devices"]  # inside make_engine
    assert any(d.startswith("aecore.") and not d.startswith("aecore.cli") for d in
               graph["aecore.cli.main"] | graph["aecore.cli.train"])


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    graph = import_graph()
    for a, b in KNOWN_CYCLE_EDGES:
        assert b in graph[a], f"{a} no longer imports {b}: remove it from KNOWN_CYCLE_EDGES"
        graph[a] = graph[a] - {b}
    assert cycles(graph) == []


def test_the_library_never_imports_the_cli():
    graph = import_graph()
    bad = {m: sorted(d for d in deps if d.startswith("aecore.cli"))
           for m, deps in graph.items() if not m.startswith("aecore.cli")}
    assert {m: d for m, d in bad.items() if d} == {}
