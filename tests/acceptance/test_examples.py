"""Every runnable example runs to success, as a user would run it (own process, own database)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["quickstart.py", "durable_wait.py", "retries.py", "events.py", "saga_and_children.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/example.db"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), db],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "completed" in proc.stdout


def test_readme_main_command_uses_the_embedded_default(tmp_path: Path) -> None:
    """The README's first command runs quickstart with no URL: ./statemachine.db in the cwd."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "statemachine.db").exists()
