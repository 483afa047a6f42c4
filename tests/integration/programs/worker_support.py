"""Helpers shared by the multi-process worker tests and the programs they run.

The programs append one line per handler run to a shared log file opened with ``O_APPEND`` (one
``write`` per line, so lines from several processes never interleave); the tests count the lines
to know how often each step really ran, across every process that ever ran it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[3]
PROGRAMS = Path(__file__).resolve().parent
LOCKED = "database is locked"


def append_line(path: Path | str, line: str) -> None:
    """One atomic append (O_APPEND, a single write of a short line)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line]


def run_counts(path: Path) -> Counter[tuple[str, str]]:
    """(instance, step) -> handler runs, from ``{instance}/{step}/{pid}`` lines."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in read_lines(path):
        iid, step, _pid = line.rsplit("/", 2)
        counts[(iid, step)] += 1
    return counts


def run_pids(path: Path) -> dict[tuple[str, str], list[int]]:
    """(instance, step) -> pids of the processes that ran its handler, in log order."""
    pids: dict[tuple[str, str], list[int]] = {}
    for line in read_lines(path):
        iid, step, pid = line.rsplit("/", 2)
        pids.setdefault((iid, step), []).append(int(pid))
    return pids


class Proc:
    """A program in a subprocess, its stdout and stderr captured to files."""

    def __init__(
        self, args: list[str], workdir: Path, name: str, env: dict[str, str] | None = None
    ):
        self.name = name
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        self._out: IO[bytes] = self.out_path.open("wb")
        self._err: IO[bytes] = self.err_path.open("wb")
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(
            args, stdout=self._out, stderr=self._err, env=full_env, cwd=ROOT
        )
        self.killed = False

    @classmethod
    def program(cls, module: str, argv: list[str], workdir: Path, name: str, **kw: Any) -> Proc:
        return cls([sys.executable, str(PROGRAMS / f"{module}.py"), *argv], workdir, name, **kw)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def sigkill(self) -> None:
        self.killed = True
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def stdout(self) -> str:
        self._out.flush()
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        self._err.flush()
        return self.err_path.read_text(errors="replace")

    def describe(self) -> str:
        return (
            f"--- {self.name} (pid {self.pid}, rc {self.popen.poll()}) stdout:\n{self.stdout()[-3000:]}"
            f"\n--- stderr:\n{self.stderr()[-5000:]}"
        )

    def cleanup(self) -> None:
        """Kill if still running (SIGCONT first, in case it was stopped) and reap."""
        if self.alive():
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    break
        try:
            self.popen.wait(timeout=30)
        finally:
            self._out.close()
            self._err.close()


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def cli_worker(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``statemachine worker ARGS`` as a user runs it, its output in ``log``, stopped with SIGTERM
    at the end; none of the test process's STATEMACHINE_DB or OBS_SPANS leaks in unless ``env``
    sets it."""
    environ = {k: v for k, v in os.environ.items() if k not in ("STATEMACHINE_DB", "OBS_SPANS")}
    environ.update(env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "statemachine", "worker", *args],
            cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
