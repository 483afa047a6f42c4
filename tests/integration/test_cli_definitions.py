"""``statemachine validate`` and ``graph`` in a real subprocess: output, exit codes, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from statemachine import cli
from statemachine.definition import loader

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "definitions"

TYPO = """\
id: typo
steps:
  - id: validate
    action: validateOrder
  - id: charge
    action: chargeCard
    next: chrage
  - id: done
    type: pass
    end: true
"""


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statemachine", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_validate_the_definitions_folder() -> None:
    result = run("validate", "definitions")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(list(DEFINITIONS.glob("*.yaml")))
    assert all(line.startswith("ok: definitions/") for line in lines)
    assert (
        "ok: definitions/order-processing.yaml (order-processing v1, 5 steps, hash "
        in result.stdout
    )
    assert result.stderr == ""


def test_validate_reports_a_typo_at_its_line_with_a_hint(tmp_path: Path) -> None:
    bad = tmp_path / "orders.yaml"
    bad.write_text(TYPO)
    result = run("validate", bad, DEFINITIONS / "onboarding.yaml")
    assert result.returncode == 2
    assert f"{bad}:7:11: steps[1].next: unknown step 'chrage'" in result.stderr
    assert "(did you mean 'charge'?)" in result.stderr
    # the good file is still checked
    assert result.stdout.startswith("ok: ") and "onboarding" in result.stdout
    assert "Traceback" not in result.stderr


def test_validate_a_missing_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run("validate", tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "nope.yaml" in result.stderr


def test_validate_an_empty_folder_fails(tmp_path: Path) -> None:
    result = run("validate", tmp_path)
    assert result.returncode == 2
    assert "no *.yaml or *.yml files" in result.stderr


def test_validate_a_yaml_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("id: x\nsteps:\n  - id: a\n    action: [unclosed\n")
    result = run("validate", bad)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{bad}:")


def test_validate_reports_the_same_workflow_twice(tmp_path: Path) -> None:
    text = (DEFINITIONS / "onboarding.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yml").write_text(text)
    result = run("validate", tmp_path)
    assert result.returncode == 2
    assert "is also defined in" in result.stderr


@pytest.mark.parametrize(("fmt", "start"), [("mermaid", "flowchart TD"), ("dot", "digraph")])
def test_graph(fmt: str, start: str) -> None:
    result = run("graph", "definitions/process-order-state-machine.yaml", "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(start)
    for name in ("validate", "check-stock", "ship", "notify", "backorder", "complete"):
        assert name in result.stdout


def test_graph_defaults_to_mermaid_and_keeps_brackets() -> None:
    result = run("graph", "definitions/fraud-check.yaml")
    assert result.returncode == 0
    assert result.stdout.startswith("flowchart TD")
    assert 'n_score["score"]' in result.stdout  # printed verbatim, not eaten as rich markup


def test_graph_of_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "orders.yaml"
    bad.write_text(TYPO)
    result = run("graph", bad)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{bad}:7:11:" in result.stderr
    assert "Traceback" not in result.stderr


def test_graph_of_a_missing_file(tmp_path: Path) -> None:
    result = run("graph", tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_bad_usage_exits_2() -> None:
    result = run("graph", "definitions/fraud-check.yaml", "--format", "png")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_an_unexpected_error_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In process: a bug inside the loader must still end as ``error: ...`` and exit 2."""

    def broken(path: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(loader, "load_yaml_file", broken)
    with pytest.raises(SystemExit) as info:
        cli.main(["validate", str(DEFINITIONS / "onboarding.yaml")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "RuntimeError: boom second line" in err
    assert err.count("\n") == 1


def test_python_dash_m_without_arguments_shows_help() -> None:
    result = run()
    assert result.returncode == 2
    assert "validate" in result.stdout and "graph" in result.stdout


STORE_MODULES = """
import sys
from statemachine import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("sqlalchemy", "alembic", "sqlmodel", "statemachine.engine", "statemachine.store")
print(sorted({m.split(".")[0] if m.startswith(heavy[:3]) else m for m in sys.modules
              if m.startswith(heavy)}))
"""


@pytest.mark.parametrize("args", [["--help"], ["validate", str(DEFINITIONS)]])
def test_help_and_validate_do_not_load_the_store(args: list[str]) -> None:
    """``--help`` and ``validate`` start in a fraction of a second: SQLAlchemy and Alembic (the
    bulk of the start-up time) load only for commands that open a database."""
    proc = subprocess.run(
        [sys.executable, "-c", STORE_MODULES, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr


def test_the_schema_command_prints_the_shipped_schema() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine", "schema"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (ROOT / "docs" / "statemachine.schema.json").read_text()
