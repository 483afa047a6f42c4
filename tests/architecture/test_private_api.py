"""The package uses no private API of the standard library's asyncio: what asyncio may change
in any release (``asyncio.events._set_running_loop`` and the like) is not ours to rely on.
Read from the source with ``ast``: any ``asyncio...._name`` attribute, or ``from asyncio...
import _name``, is a finding."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "statemachine"


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _findings(source: str, where: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.Attribute) and _private(node.attr) and _root(node) == "asyncio":
            found.append(f"{where}:{node.lineno}: asyncio ... .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("asyncio"):
            found += [f"{where}:{node.lineno}: {a.name}" for a in node.names if _private(a.name)]
    return found


def test_no_private_asyncio_api() -> None:
    found = [
        finding
        for path in sorted(PACKAGE.rglob("*.py"))
        for finding in _findings(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    ]
    assert found == []


def test_the_check_sees_private_use() -> None:
    source = (
        "import asyncio\n"
        "loop = asyncio.events._get_running_loop()\n"
        "from asyncio.events import _set_running_loop\n"
        "asyncio.get_running_loop()\n"
    )
    assert len(_findings(source, "x.py")) == 2
