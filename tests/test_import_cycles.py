"""geolatent has no import cycle: the modules' module-level imports form a DAG.

Read from the source (``ast``), not by importing, so a cycle that happens to import fine in one
order is still found. Imports inside functions (deliberately lazy ones) and under
``if TYPE_CHECKING:`` do not run at import time and are not edges. Importing ``a.b.c`` also runs
the ``__init__`` of packages ``a.b`` and ``a``: an edge goes to each of them too, except to the
importer's own enclosing packages (those are already being imported when it runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

from shared_data import REPO_ROOT

PACKAGE = REPO_ROOT / "geolatent"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported (not in functions, not TYPE_CHECKING)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            todo += node.orelse if _is_type_checking(node.test) else node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody
            todo += [s for h in node.handlers for s in h.body]
        elif isinstance(node, ast.With | ast.ClassDef):
            todo += node.body
    return found


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool,
             modules: set[str]) -> set[str]:
    """The geolatent modules an import statement runs (the named module, and submodules
    imported by ``from package import submodule``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = importer.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    return {n for n in names if n in modules}


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        edges: set[str] = set()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _module_level_imports(tree):
            for target in _targets(node, name, path.name == "__init__.py", modules):
                parts = target.split(".")
                ran = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}  # + its packages
                edges |= {t for t in ran if t in modules} - own_packages
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_checker_finds_a_cycle_and_resolves_relative_imports():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    node = ast.parse("from .window import Window").body[0]
    modules = {"geolatent.data.window", "geolatent.data.build"}
    assert _targets(node, "geolatent.data.build", False, modules) == {"geolatent.data.window"}


def test_geolatent_has_no_import_cycle():
    graph = _import_graph()
    assert len(graph) > 100 and graph["geolatent.data.build"]  # the whole package was read
    cycles = _cycles(graph)
    assert not cycles, "import cycles (module-level imports): " + "; ".join(
        " <-> ".join(c) for c in cycles)
