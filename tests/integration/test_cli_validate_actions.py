"""``statemachine validate --actions``: every action a file names must exist, as a worker resolves it.

Without the flag, a misspelt action only shows when a worker registers the file; with it, CI
catches it at its line, like any other problem of the file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = "examples.actions:ShopActions"

NESTED = """\
id: nested-actions
steps:
  - id: start
    action: noop
  - id: both
    type: parallel
    branches:
      - name: left
        steps:
          - id: charge
            action: chrgePayment
            compensate: cancelHotle
      - name: right
        steps:
          - id: wait-job
            type: poll
            check: checkBatchStats
            interval: 1s
            maxAttempts: 3
  - id: each
    type: map
    items: input.things
    iterator:
      steps:
        - id: send
          action: sendEmail
"""


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statemachine", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_every_shipped_definition_names_existing_actions() -> None:
    result = run("validate", "definitions", "--actions", ACTIONS)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == len(list((ROOT / "definitions").glob("*.yaml")))


def test_a_missing_action_is_reported_at_its_line_with_a_hint(tmp_path: Path) -> None:
    bad = tmp_path / "nested.yaml"
    bad.write_text(NESTED)
    result = run("validate", bad, ROOT / "definitions" / "onboarding.yaml", "--actions", ACTIONS)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{bad}:11:21: steps[1].branches[0].steps[0].action: step 'both/left/charge' uses action "
        "'chrgePayment', which is not registered (did you mean 'chargePayment'?)",
        f"{bad}:12:25: steps[1].branches[0].steps[0].compensate: step 'both/left/charge' uses "
        "action 'cancelHotle', which is not registered (did you mean 'cancelHotel'?)",
        f"{bad}:17:20: steps[1].branches[1].steps[0].check: step 'both/right/wait-job' uses "
        "action 'checkBatchStats', which is not registered (did you mean 'checkBatchStatus'?)",
    ]
    # the good file is still checked and reported; the bad one is not "ok"
    assert result.stdout.startswith("ok: ") and "onboarding" in result.stdout
    assert "nested" not in result.stdout


def test_without_the_flag_actions_are_not_checked(tmp_path: Path) -> None:
    bad = tmp_path / "nested.yaml"
    bad.write_text(NESTED)
    result = run("validate", bad)
    assert result.returncode == 0, result.stderr


def test_actions_of_a_dict_and_a_bad_spec(tmp_path: Path) -> None:
    (tmp_path / "my_actions.py").write_text("ACTIONS = {'sendEmail': print}\n")
    good = tmp_path / "good.yaml"
    good.write_text(
        "id: g\nsteps:\n  - id: a\n    action: sendEmail\n  - id: b\n    action: noop\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "statemachine", "validate", str(good), "--actions", "my_actions:ACTIONS"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = run("validate", good, "--actions", "no.such.module:X")
    assert result.returncode == 2
    assert "cannot import 'no.such.module'" in result.stderr
    assert "Traceback" not in result.stderr
