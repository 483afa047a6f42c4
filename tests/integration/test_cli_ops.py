"""The operating commands, run as a user would: real subprocesses on a real SQLite file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import queue
import shlex
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import statemachine
from statemachine import Engine, StepContext, load_definitions, load_yaml, workflow

ROOT = Path(__file__).resolve().parents[2]
ORDER = {"order_id": "o-7", "items": ["a"], "amount": 10, "email": "ada@example.com"}


def cli(*args: str, db: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STATEMACHINE_DB": db}
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if check is not None:
        assert proc.returncode == check, proc.stderr + proc.stdout
    return proc


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/cli.db"


def test_run_prints_progress_and_result(db: str) -> None:
    proc = cli("run", "definitions/order-processing.yaml", "--input", json.dumps(ORDER), "--create",
               "--actions", "examples.actions:ShopActions", db=db)  # fmt: skip
    result = json.loads(proc.stdout)
    assert result["status"] == "completed"
    assert result["output"] == {"sent_to": "ada@example.com"}
    assert "✓ charge" in proc.stderr


def test_run_exits_1_when_the_workflow_fails(db: str) -> None:
    proc = cli("run", "definitions/order-processing.yaml", "--input", json.dumps({**ORDER, "order_id": ""}),
               "--create", "--actions", "examples.actions:ShopActions", db=db, check=1)  # fmt: skip
    result = json.loads(proc.stdout)
    assert result["status"] == "failed"
    assert "order_id" in result["error"]["message"]


def test_start_status_list_history_and_control(db: str) -> None:
    iid = cli(
        "start",
        "onboarding",
        "--input",
        '{"email": "x@y.z", "name": "X"}',
        "--id",
        "on-1",
        "--create",
        db=db,
    ).stdout.strip()
    assert iid == "on-1"
    assert "on-1" in cli("list", db=db).stdout
    assert "pending" in cli("status", "on-1", db=db).stdout
    assert "paused" in cli("pause", "on-1", db=db).stdout
    wrong = cli("pause", "on-1", db=db, check=2)
    assert "cannot pause" in wrong.stderr and wrong.stderr.count("\n") == 1
    assert "cancelled" in cli("cancel", "on-1", db=db).stdout
    types = cli("history", "on-1", db=db).stdout
    assert (
        "workflow.started" in types and "workflow.paused" in types and "workflow.cancelled" in types
    )


def test_unknown_ids_and_bad_json_are_one_line_errors(db: str) -> None:
    bad = cli("start", "onboarding", "--input", "{nope", "--create", db=db, check=2)
    assert "not valid JSON" in bad.stderr
    unknown = cli("start", "onbording", "--create", db=db, check=2)  # creates the database
    assert "did you mean 'onboarding'" in unknown.stderr
    missing = cli("status", "nope", db=db, check=2)
    assert "no workflow instance with id 'nope'" in missing.stderr


def test_run_by_name_uses_the_definitions_folder(db: str) -> None:
    proc = cli("run", "fraud-check", "--input", '{"payment_id": "p-1", "amount": 5000}', "--create",
               "--actions", "examples.actions:ShopActions", db=db)  # fmt: skip
    result = json.loads(proc.stdout)
    assert result["status"] == "completed"
    missing = cli("run", "fraud-check", db=db, check=2)  # no actions: refused before running
    assert "calculateFraudScore" in missing.stderr
    assert "no workflow instance" not in missing.stderr


def test_status_lists_steps_in_the_order_they_started(db: str, tmp_path: Path) -> None:
    """Pass steps all start within one decision, at one instant: the graph's order breaks the
    tie, not the names."""
    flow = tmp_path / "instant.yaml"
    steps = "".join(f"  - id: {name}\n    type: pass\n" for name in ("zeta", "alpha", "mid"))
    flow.write_text(f"id: instant\nsteps:\n{steps}")
    cli("run", str(flow), "--id", "i-1", "--create", db=db)
    table = cli("status", "i-1", db=db).stdout
    rows = [
        line.split()[1]
        for line in table.splitlines()
        if line.split()[1:2] in (["zeta"], ["alpha"], ["mid"])
    ]
    assert rows == ["zeta", "alpha", "mid"], table


# -- observability: ids, lists, run, logs, emit, worker output ---------------------------------

LOGGED = """\
id: logged
steps:
  - id: hello
    action: hello
  - id: approval
    type: wait
    event: approved
  - id: bye
    action: bye
"""


class LogActions:
    """Actions of the subprocess tests (``--actions tests.integration.test_cli_ops:LogActions``)."""

    def hello(self, data: Any, ctx: StepContext) -> dict[str, Any]:
        ctx.log("info", "hello there", who="ada")
        return {"greeted": True}

    def bye(self, data: Any, ctx: StepContext) -> None:
        ctx.log("warning", "leaving now")

    def broken(self, data: Any, ctx: StepContext) -> None:
        raise RuntimeError("card declined")

    def slow(self, data: Any, ctx: StepContext) -> None:
        time.sleep(60)


ACTIONS = "tests.integration.test_cli_ops:LogActions"


class Live:
    """A command running in the background; its stdout and stderr read line by line as they come."""

    def __init__(self, *args: str, db: str) -> None:
        env = {**os.environ, "STATEMACHINE_DB": db}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "statemachine", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        self.readers = [
            threading.Thread(target=self._read, args=(name,), daemon=True)
            for name in ("stdout", "stderr")
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, name: str) -> None:
        for line in getattr(self.proc, name):
            self.lines.put((name, line.rstrip("\n")))

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first new line that contains ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(item)
            if text in item[1]:
                return item[1]
        raise AssertionError(f"no line with {text!r} within {timeout}s; seen: {self.seen}")

    def finish(self, timeout: float = 30) -> tuple[int, list[str], list[str]]:
        """Exit code, and every stdout and stderr line, once the command has ended."""
        rc = self.proc.wait(timeout=timeout)
        self.close()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        out = [line for name, line in self.seen if name == "stdout"]
        err = [line for name, line in self.seen if name == "stderr"]
        assert not any("Traceback" in line for line in err), err
        return rc, out, err

    def close(self) -> None:
        """Once the process has ended: the readers drain its pipes, then they are closed."""
        for reader in self.readers:
            reader.join(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close()


def _seed(db: str, *instances: tuple[str, dict[str, Any]]) -> None:
    """Instances of a workflow that waits for ``go``, each with its metadata."""
    with Engine(db) as engine:
        engine.register(workflow("waits").wait("w", event="go").build())
        for iid, meta in instances:
            engine.start("waits", {}, instance_id=iid)
            if meta:
                engine.update_metadata(iid, meta)


def test_version() -> None:
    proc = cli("--version", db="sqlite:///unused.db")
    assert proc.stdout.strip() == f"statemachine {statemachine.__version__}"


def test_every_id_argument_takes_a_unique_prefix(db: str) -> None:
    _seed(db, ("abc-111", {}), ("abc-222", {}), ("xyz-333", {}))
    shown = json.loads(cli("status", "abc-1", "--json", db=db).stdout)
    assert shown["id"] == "abc-111" and shown["status"] == "pending"
    ambiguous = cli("cancel", "abc", db=db, check=2)
    assert ambiguous.stderr.count("\n") == 1
    assert "'abc' matches 2 instances: abc-111, abc-222" in ambiguous.stderr
    assert "sent go to xyz-333" in cli("send", "xy", "go", db=db).stdout
    assert "abc-222 is now cancelled" in cli("cancel", "abc-2", db=db).stdout


@pytest.mark.parametrize(
    ("command", "check", "says"),
    [
        ("history", 0, "workflow.started"),
        ("logs", 0, "workflow.started"),
        ("pause", 0, "abc-111 is now paused"),
        ("resume", 2, "cannot resume instance abc-111"),
        ("retry", 2, "cannot retry instance abc-111"),
        ("replay", 0, ""),
    ],
)
def test_the_other_id_commands_take_a_unique_prefix_too(
    db: str, command: str, check: int, says: str
) -> None:
    """status, cancel and send are above; an unknown prefix would be 'no workflow instance'."""
    _seed(db, ("abc-111", {}), ("xyz-333", {}))
    proc = cli(command, "abc", db=db, check=check)
    assert says in proc.stdout + proc.stderr
    assert "no workflow instance" not in proc.stderr


def in_terminal(*args: str, db: str) -> str:
    """What a command prints to an 80-column terminal (stdout and stderr both on it)."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "STATEMACHINE_DB": db, "COLUMNS": "80", "LINES": "24"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "statemachine", *args],
        cwd=ROOT, env=env, stdout=child, stderr=child, text=True,
    )  # fmt: skip
    os.close(child)
    out = b""
    with contextlib.suppress(OSError):  # EIO once the terminal's last writer closed it
        while chunk := os.read(main, 65536):
            out += chunk
    os.close(main)
    text = out.decode()
    assert proc.wait(timeout=60) == 0, text
    return text


def test_list_prints_whole_ids_in_a_narrow_terminal_and_filters_on_metadata(db: str) -> None:
    """In an 80-column terminal a table fitted to the width cut the ids short."""
    long_ids = [f"{n}-0123456789abcdef0123456789abcdef" for n in ("one", "two", "six")]
    _seed(db, (long_ids[0], {"customer": "c-1"}), (long_ids[1], {"customer": "c-1", "vip": "y"}),
          (long_ids[2], {"customer": "c-2"}))  # fmt: skip
    text = in_terminal("list", "--meta", "customer=c-1", db=db)
    assert long_ids[0] in text and long_ids[1] in text, text
    assert long_ids[2] not in text and "c-2" not in text


LONG_ID = "order-" + "0123456789abcdef" * 5  # with "  waits v1  pending": over 80 columns


@pytest.mark.parametrize("command", ["status order-", "pause order-", "send order- go", "start"])
def test_commands_print_whole_ids_in_an_80_column_terminal(db: str, command: str) -> None:
    _seed(db, (LONG_ID, {}))
    if command == "start":
        printed = f"{LONG_ID}-2"
        person = '{"email": "a@b.c", "name": "A"}'
        text = in_terminal("start", "onboarding", "--input", person, "--id", printed, db=db)
    else:
        printed = LONG_ID
        text = in_terminal(*command.split(), db=db)
    assert printed in text, text


def test_run_prints_its_id_step_logs_and_how_to_send_the_awaited_event(
    db: str, tmp_path: Path
) -> None:
    flow = tmp_path / "logged.yaml"
    flow.write_text(LOGGED)
    run = Live("run", str(flow), "--actions", ACTIONS, "--create", db=db)
    try:
        first = run.wait_for("instance ")
        iid = first.split()[1]
        assert run.wait_for("hello there").endswith(f"[{iid}] logged/hello: hello there who=ada")
        hint = run.wait_for("waiting for event 'approved'")
        command = hint.split("deliver it with: ")[1]
        assert command == f"statemachine send {iid} approved --data '{{}}'"
        cli(*shlex.split(command)[1:], db=db)  # from another process, as a user would
        rc, out, err = run.finish()
    finally:
        run.kill()
    assert rc == 0, err
    assert json.loads("\n".join(out))["status"] == "completed"
    assert any("warning" in line and "leaving now" in line for line in err), err


def test_ctrl_c_during_run_leaves_the_instance_and_says_how_to_follow_it(
    db: str, tmp_path: Path
) -> None:
    flow = tmp_path / "slow.yaml"
    flow.write_text("id: slow\nsteps:\n  - id: nap\n    action: slow\n")
    run = Live("run", str(flow), "--actions", ACTIONS, "--id", "slow-1", "--create", db=db)
    try:
        run.wait_for("▶ nap")
        run.proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        rc, _, err = run.finish(timeout=20)
    finally:
        run.kill()
    assert rc == 130
    assert time.monotonic() - started < 10  # not held until the sleeping handler returns
    assert "statemachine logs slow-1 --follow" in err[-1] and "goes on" in err[-1], err
    with Engine(db) as engine:
        assert engine.get("slow-1").status == "running"  # stored, for a worker to take over
        rec = engine.store.get("slow-1")
        assert rec is not None and rec.lease_owner is None  # given up at once, not left to lapse


def test_logs_follow_prints_history_as_another_process_writes_it(db: str) -> None:
    with Engine(db) as engine:
        engine.register_actions(LogActions())
        engine.register(load_yaml(LOGGED))
        engine.start("logged", {}, instance_id="follow-me")
        engine.run_due()  # hello ran; it waits for the event
        follow = Live("logs", "follow", "--follow", db=db)
        try:
            assert "hello: hello there who=ada" in follow.wait_for("hello there")
            follow.wait_for("workflow.step.started approval")
            assert follow.proc.poll() is None  # still following
            engine.send_event("follow-me", "approved", {"ok": True})
            engine.run_due()
            rc, out, _ = follow.finish()  # ends on its own once the instance has ended
        finally:
            follow.kill()
    assert rc == 0
    tail = out[out.index(next(line for line in out if "approval" in line)) :]
    assert "leaving now" in " ".join(tail) and "workflow.completed" in tail[-1], out


def test_emit_starts_the_workflows_its_event_triggers(db: str) -> None:
    data = json.dumps({"email": "a@b.c", "name": "A", "plan": "free"})
    proc = cli("emit", "Customer.created", "--data", data, "--key", "k-1", "--create", db=db)
    (iid,) = proc.stdout.split()
    assert json.loads(cli("status", iid, "--json", db=db).stdout)["workflow_name"] == (
        "customer-lifecycle"
    )
    again = cli("emit", "Customer.created", "--data", data, "--key", "k-1", db=db)
    assert again.stdout.split() == [iid]  # the same key starts nothing new: the same id
    other = cli("emit", "Customer.created", "--data", data, "--key", "k-2", db=db)
    assert other.stdout.split() != [iid]
    with Engine(db) as engine:
        assert len(engine.list()) == 2


def test_read_commands_refuse_a_database_that_does_not_exist(tmp_path: Path) -> None:
    typo = tmp_path / "stateamchine.db"
    proc = cli("list", db=f"sqlite:///{typo}", check=2)
    assert f"no database at {typo}" in proc.stderr
    assert not typo.exists()


def test_the_worker_prints_step_logs_and_failures_one_line_each(db: str, tmp_path: Path) -> None:
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "logged.yaml").write_text(LOGGED)
    (folder / "broken.yaml").write_text("id: broken\nsteps:\n  - id: pay\n    action: broken\n")
    with Engine(db) as engine:
        engine.register_actions(LogActions())
        engine.register(load_definitions(folder))
        engine.start("logged", {}, instance_id="w-ok")
        engine.start("broken", {}, instance_id="w-bad")
    worker = Live("worker", "--definitions", str(folder), "--actions", ACTIONS,
                  "--poll-interval", "0.1s", db=db)  # fmt: skip
    try:
        logged = worker.wait_for("hello there")
        failed = worker.wait_for("instance w-bad (broken) failed")
        worker.proc.send_signal(signal.SIGTERM)
        worker.finish()
    finally:
        worker.kill()
    assert logged.endswith("[w-ok] logged/hello: hello there who=ada") and " info " in logged
    assert failed.endswith("failed at step pay: RuntimeError: card declined") and "error" in failed
    step = next(line for _, line in worker.seen if "step pay failed" in line)
    assert "warning" in step and step.endswith("RuntimeError: card declined")
