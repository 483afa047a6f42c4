"""A SQLite database file that does not exist is an error for every command unless ``--create``
(issue 21): a typo in ``--db``, or the right name from the wrong directory, must not start
instances in an empty new database that no worker reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from statemachine import Engine

ROOT = Path(__file__).resolve().parents[2]
PERSON = '{"email": "a@b.c", "name": "A"}'

# every command that may start instances, as a user would type it (a database is all it lacks)
CREATORS = {
    "run": ["run", "definitions/fraud-check.yaml", "--actions", "examples.actions:ShopActions"],
    "worker": [
        "worker",
        "--definitions",
        "definitions",
        "--actions",
        "examples.actions:ShopActions",
    ],
    "start": ["start", "onboarding", "--input", PERSON],
    "emit": ["emit", "Customer.created", "--data", PERSON],
    "serve": ["serve", "--port", "0"],
}
READERS = [["list"], ["status", "i-1"], ["history", "i-1"], ["logs", "i-1"], ["cancel", "i-1"],
           ["schedules"], ["prune"]]  # fmt: skip


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``statemachine ARGS`` in ``cwd``, with neither STATEMACHINE_DB nor a token set."""
    base = {k: v for k, v in os.environ.items() if k != "STATEMACHINE_DB"}
    return subprocess.run(
        [sys.executable, "-m", "statemachine", *args],
        cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def assert_refused(proc: subprocess.CompletedProcess[str], path: Path) -> None:
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"no database at {path} " in proc.stderr, proc.stderr
    assert "--create" in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", sorted(CREATORS))
def test_a_mistyped_db_is_refused_and_nothing_is_created(tmp_path: Path, command: str) -> None:
    typo = tmp_path / "stateamchine.db"
    proc = cli(*CREATORS[command], "--db", f"sqlite:///{typo}")
    assert_refused(proc, typo)
    assert "pass --create to make a new one" in proc.stderr
    assert not typo.exists()


@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
def test_read_and_control_commands_refuse_a_missing_db_too(tmp_path: Path, args: list[str]) -> None:
    typo = tmp_path / "stateamchine.db"
    proc = cli(*args, env={"STATEMACHINE_DB": f"sqlite:///{typo}"})
    assert_refused(proc, typo)
    assert not typo.exists()


def test_create_makes_the_database_and_later_commands_use_it(tmp_path: Path) -> None:
    fresh = tmp_path / "new.db"
    db = ["--db", f"sqlite:///{fresh}"]
    started = cli("start", "onboarding", "--input", PERSON, "--id", "on-1", "--create", *db)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "on-1" and fresh.exists()
    assert "on-1" in cli("list", *db).stdout
    again = cli("start", "onboarding", "--input", PERSON, "--id", "on-2", "--create", *db)
    assert again.returncode == 0, again.stderr  # --create on an existing file just opens it
    with Engine(f"sqlite:///{fresh}") as engine:
        assert sorted(i.id for i in engine.list()) == ["on-1", "on-2"]


def test_the_default_database_is_refused_too_until_created(tmp_path: Path) -> None:
    """No --db and no STATEMACHINE_DB: ./statemachine.db, under the same rule."""
    (tmp_path / "definitions").symlink_to(ROOT / "definitions")
    default = tmp_path / "statemachine.db"
    for args in (["start", "onboarding", "--input", PERSON], ["list"]):
        assert_refused(cli(*args, cwd=tmp_path), default)
    assert not default.exists()
    created = cli("start", "onboarding", "--input", PERSON, "--create", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert default.exists()
    assert created.stdout.strip() in cli("list", cwd=tmp_path).stdout


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_urls_need_no_create(db_url: str) -> None:
    """Only SQLite files are created on demand; a Postgres database exists or the connection
    fails, so --create neither applies nor is required."""
    assert cli("list", "--db", db_url).returncode == 0
    started = cli("start", "onboarding", "--input", PERSON, "--id", "pg-1", "--db", db_url)
    assert started.returncode == 0, started.stderr
    assert "pg-1" in cli("list", "--db", db_url).stdout
