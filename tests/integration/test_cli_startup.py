"""``statemachine --help`` starts quickly: what it imports, read from ``python -X importtime``.

SQLAlchemy and Alembic (the store) and pydantic (the definition models) are most of a command's
start-up; ``--help`` needs none of them, so none may load for it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"sqlalchemy", "alembic", "sqlmodel", "pydantic", "pydantic_core"}


def imported_by(*args: str) -> set[str]:
    """Every module ``python -X importtime -m statemachine ARGS`` imports."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "statemachine", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_help_imports_neither_the_store_nor_the_models() -> None:
    modules = imported_by("--help")
    assert "statemachine.cli" in modules  # the log was read
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, heavy
    ours = sorted(m for m in modules if m.startswith(("statemachine.engine", "statemachine.store")))
    assert not ours, ours
