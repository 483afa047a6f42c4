"""The README's command-line block, run as written in a fresh directory, one command after another
(after the README's first step, ``examples/quickstart.py``, as a reader would).

`statemachine` is this interpreter's `python -m statemachine` (the activated venv's command), `ID`
the id `start` printed. Long-running commands (`worker`, `serve`) are stopped with SIGINT once they
are up, as a user's Ctrl-C would; `retry` of the cancelled instance must fail with exit 2, as the
README's comment says.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # worker processes: run first (conftest)

ROOT = Path(__file__).resolve().parents[2]
LONG_RUNNING = {"worker": "workflows", "serve": "Uvicorn running"}
EXPECTED_EXIT = {"retry": 2}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("```console\n$ source .venv/bin/activate") :]
    block = block[len("```console\n") : block.index("```", 10)]
    commands: list[str] = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.startswith("$ "):
            commands.append(line[2:])
    return commands


def _argv(command: str, instance_id: str | None) -> tuple[list[str], str | None]:
    words = shlex.split(command, comments=True)
    redirect = None
    if ">" in words:
        at = words.index(">")
        words, redirect = words[:at], words[at + 1]
    if instance_id is not None:
        words = [instance_id if w == "ID" else w for w in words]
    assert words[0] == "statemachine", command
    return [sys.executable, "-m", "statemachine", *words[1:]], redirect


def _long_running(argv: list[str], cwd: Path, env: dict[str, str], ready: str) -> str:
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not any(ready in line for line in lines) and time.monotonic() < deadline:
        assert proc.poll() is None, (argv, proc.returncode, lines)
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    proc.stdout.close()
    seen = "".join(lines)
    assert ready in seen, seen
    assert proc.returncode in (0, 130), (argv, proc.returncode, seen)
    return seen


def test_every_readme_command_runs_as_written(tmp_path: Path) -> None:
    for folder in ("definitions", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    env.pop("STATEMACHINE_DB", None)
    # the README's first step (examples/quickstart.py) leaves ./statemachine.db behind, which the
    # command line then uses: without it, the first command would need --create
    quickstart = [sys.executable, "examples/quickstart.py"]
    done = subprocess.run(quickstart, cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0 and (tmp_path / "statemachine.db").exists(), done.stderr
    commands = readme_commands()
    assert commands[0].startswith("source .venv/bin/activate")
    instance_id: str | None = None
    ran: list[str] = []
    for command in commands[1:]:
        argv, redirect = _argv(command, instance_id)
        name = argv[3]
        if name in LONG_RUNNING:
            _long_running(argv, tmp_path, env, LONG_RUNNING[name])
            ran.append(name)
            continue
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        expected = EXPECTED_EXIT.get(name, 0)
        assert done.returncode == expected, (command, done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (command, done.stderr)
        if redirect is not None:
            (tmp_path / redirect).write_text(done.stdout)
        if name == "start":
            instance_id = done.stdout.strip()
            assert re.fullmatch(r"[0-9a-f]{32}", instance_id), done.stdout
        ran.append(name)
    assert {"run", "worker", "start", "send", "serve", "schema"} <= set(ran)
    assert (tmp_path / "statemachine.schema.json").read_text().startswith("{")
