"""``statemachine migrate`` run as a user would, in a subprocess, on SQLite and Postgres: the
report as a table, ``--map``, ``--dry-run`` changing nothing, and bad input as one line with
exit code 2."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from statemachine import Engine, load_yaml
from tests.integration.migration_support import migrated_entry, stored

ROOT = Path(__file__).resolve().parents[2]

V1 = """
id: approvals
version: 1
steps:
  - id: approval
    type: wait
    event: approved
  - id: work
    action: noop
"""

V2 = """
id: approvals
version: 2
steps:
  - id: approve
    type: wait
    event: approved
  - id: work
    action: noop
  - id: notify
    action: noop
"""


def cli(*args: str, db: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STATEMACHINE_DB"}
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine", "migrate", *args, "--db", db],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    if check is not None:
        assert proc.returncode == check, proc.stderr + proc.stdout
    return proc


@pytest.fixture
def setup(db_url: str, tmp_path: Path) -> Iterator[tuple[Engine, Path, list[str]]]:
    engine = Engine(db_url)
    engine.register(load_yaml(V1))
    ids = [engine.execute("approvals", {}, instance_id=f"a-{n}").id for n in range(2)]
    file = tmp_path / "v2.yaml"
    file.write_text(V2)
    yield engine, file, ids
    engine.close()
    gc.collect()


def _rows(out: str) -> dict[str, list[str]]:
    """The table's rows by instance id (cells split on runs of two spaces)."""
    lines = out.splitlines()
    assert lines[0].split() == ["INSTANCE", "STATUS", "FROM", "RESULT", "REASONS"], out
    rows = {}
    for line in lines[1:]:
        if line.startswith("a-"):
            cells = [c.strip() for c in line.split("  ") if c.strip()]
            rows[cells[0]] = cells[1:]
    return rows


def test_dry_run_prints_the_report_and_changes_nothing(
    setup: tuple[Engine, Path, list[str]], db_url: str
) -> None:
    engine, file, ids = setup
    before = {i: stored(db_url, i) for i in ids}
    blocked = cli("approvals", "--to", str(file), "--dry-run", db=db_url, check=1)
    rows = _rows(blocked.stdout)
    assert set(rows) == set(ids)
    reason = (
        "step 'approval' is waiting for event 'approved' and version 2 has no step "
        "'approval' (map it to a step of version 2)"
    )
    assert rows["a-0"] == ["waiting", "v1", "blocked", reason], blocked.stdout
    assert "would move 0 of 2 instances of approvals to version 2" in blocked.stdout
    ok = cli("approvals", "--to", str(file), "--map", "approval=approve", "--dry-run", db=db_url)
    assert _rows(ok.stdout)["a-1"] == ["waiting", "v1", "ok"], ok.stdout
    assert "would move 2 of 2" in ok.stdout and "nothing changed (--dry-run)" in ok.stdout
    assert {i: stored(db_url, i) for i in ids} == before
    assert [d.version for d in engine.definitions()] == ["1"]


def test_migrate_with_a_map_moves_the_instances_which_complete_on_the_new_version(
    setup: tuple[Engine, Path, list[str]], db_url: str
) -> None:
    engine, file, ids = setup
    done = cli("approvals", "--to", str(file), "--map", "approval=approve", "-i", "a-0", db=db_url)
    assert _rows(done.stdout) == {"a-0": ["waiting", "v1", "migrated"]}, done.stdout
    assert "moved 1 of 1 instances of approvals to version 2" in done.stdout
    moved, left = engine.get("a-0"), engine.get("a-1")
    assert (moved.workflow_version, left.workflow_version) == ("2", "1")
    assert "approve" in moved.step_results and "approval" not in moved.step_results
    assert migrated_entry(engine, "a-0")["to_hash"] == load_yaml(V2).hash
    for iid in ids:
        engine.send_event(iid, "approved", {})
    engine.run_due()
    moved, left = engine.get("a-0"), engine.get("a-1")
    assert moved.status == left.status == "completed"
    assert set(moved.step_results) == {"approve", "work", "notify"}
    assert set(left.step_results) == {"approval", "work"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--to", "FILE"], "no workflow named 'nope' is stored"),
        (["approvals", "--to", "FILE", "--map", "nosuch=approve"], "'nosuch' is not a step"),
        (
            ["approvals", "--to", "FILE", "--map", "approval=nosuch"],
            "'nosuch' is not a step of version 2",
        ),
        (["approvals", "--to", "FILE", "--map", "approval"], "--map takes old=new"),
        (["approvals", "--to", "missing.yaml"], "missing.yaml: no such file"),
        (["approvals", "--to", "FILE", "-i", "zzz"], "zzz"),
    ],
    ids=[
        "unknown workflow",
        "unknown old step",
        "unknown new step",
        "bad map",
        "missing file",
        "unknown instance",
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    setup: tuple[Engine, Path, list[str]], db_url: str, args: list[str], message: str
) -> None:
    _, file, ids = setup
    before = {i: stored(db_url, i) for i in ids}
    args = [str(file) if a == "FILE" else a for a in args]
    proc = cli(*args, db=db_url, check=2)
    assert message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert {i: stored(db_url, i) for i in ids} == before
