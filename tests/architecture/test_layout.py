"""The package's shape, read from its own source with ``ast``: no import cycle, no large module.

Every import counts, including those under ``TYPE_CHECKING`` and inside functions: a cycle hidden
in a function is still two modules that cannot be read or changed one without the other. An
import of the package itself (``from statemachine import x``) counts as an import of ``x`` when
``x`` is a submodule, as Python resolves it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "statemachine"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts[1:]) or parts[0]] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    full = f"statemachine.{name}" if name != "statemachine" else name
    package = full if path.name == "__init__.py" else full.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(_short(a.name) for a in node.names if _short(a.name) in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            target = _short(target)
            subs = {_short(f"{target}.{a.name}") for a in node.names} & modules.keys()
            found.update(subs)
            if len(subs) < len(node.names) and target in modules:
                found.add(target)
    found.discard(name)
    return found


def _short(module: str) -> str:
    """``statemachine.store.tables`` -> ``store.tables``; the package itself keeps its name."""
    return module.removeprefix("statemachine.") if module != "statemachine" else module


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_the_cycle_finder_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]


def test_no_import_cycle() -> None:
    graph = import_graph()
    report = [
        sorted(f"{a} -> {b}" for a in cycle for b in graph[a] if b in cycle)
        for cycle in cycles(graph)
    ]
    assert not report, f"import cycles: {report}"


def test_no_module_over_the_size_limit() -> None:
    sizes = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert not {n: size for n, size in sizes.items() if size > MAX_LINES}
