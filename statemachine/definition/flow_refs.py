"""The field paths an expression reads: ``score.risk``, ``steps.charge.amount``, ``input["id"]``.

The flow check asks which fields of which names an expression (or a ``${{ }}`` template) reads,
to find the ones a schema proves absent. Only constant keys count: ``x[i].y`` reads ``x`` and
stops there. A name a comprehension binds is never a step, whatever it is called.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

Key = str | int


@dataclass(frozen=True)
class Path:
    """``name.keys...`` as read by an expression; ``whole``: the expression is only this path
    (so its value, and type, is that field's)."""

    name: str
    keys: tuple[Key, ...]
    whole: bool = False


def paths(tree: ast.expr) -> list[Path]:
    """Every maximal constant path in ``tree`` rooted at a free name, in reading order."""
    bound = _bound(tree)
    found: list[Path] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        chain = _chain(node)
        if chain is not None:
            name, keys, inner = chain
            if name not in bound:
                found.append(Path(name, keys, whole=node is tree and not inner))
            todo.extend(reversed(inner))
            continue
        if isinstance(node, ast.Call):  # a function's name is not data
            todo.extend(reversed([*node.args, *(k.value for k in node.keywords)]))
            continue
        todo.extend(reversed(list(ast.iter_child_nodes(node))))
    return found


def _bound(tree: ast.expr) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            names.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
    return names


def _chain(node: ast.AST) -> tuple[str, tuple[Key, ...], list[ast.AST]] | None:
    """``a.b["c"][0]`` -> ("a", ("b", "c", 0), []); a variable index cuts the path there and its
    expression is returned to be read too."""
    keys: list[Key] = []
    inner: list[ast.AST] = []
    cur = node
    while True:
        if isinstance(cur, ast.Attribute):
            keys.append(cur.attr)
            cur = cur.value
        elif isinstance(cur, ast.Subscript):
            key = cur.slice
            if (
                isinstance(key, ast.Constant)
                and isinstance(key.value, str | int)
                and not isinstance(key.value, bool)
            ):
                keys.append(key.value)
            else:  # what came after is at an unknown place: only the part before counts
                keys.clear()
                inner.append(key)
            cur = cur.value
        elif isinstance(cur, ast.Name):
            return cur.id, tuple(reversed(keys)), inner
        else:
            return None
