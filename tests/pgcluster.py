"""A throwaway PostgreSQL cluster of a test's own, to restart while workers use it.

The shared server (``STATEMACHINE_TEST_PG``) must never be restarted: other tests use it. This
starts a second cluster with ``.ci/postgres.sh`` (a new data directory on a free port, about a
second), restarts it with ``pg_ctl restart -m fast`` (every connection is cut, as in a failover
or an upgrade), and stops and removes it on exit. Skipped when no PostgreSQL binaries exist.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"


@dataclass(frozen=True)
class Cluster:
    url: str
    directory: str
    bindir: str
    user: str

    def _run(self, command: str, timeout: float = 60) -> None:
        script = (
            f"source {SCRIPT}; _SMCI_PG_DIR={self.directory}; _SMCI_PG_BIN={self.bindir}; "
            f"_SMCI_PG_OSUSER={self.user}; {command}"
        )
        subprocess.run(["bash", "-c", script], check=True, timeout=timeout, capture_output=True)

    def pg_ctl(self, *args: str) -> None:
        """``pg_ctl ARGS -D <data>`` as the cluster's owner, waiting for it to finish."""
        quoted = " ".join(args)
        self._run(f'_smci_as_pg_user "$_SMCI_PG_BIN/pg_ctl" {quoted} -D "$_SMCI_PG_DIR/data" -w')

    def restart(self) -> None:
        """Cut every connection and start again (``-m fast``: sessions are terminated)."""
        self.pg_ctl("restart", "-m", "fast", "-l", f"{self.directory}/server.log")

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast")

    def start(self) -> None:
        self.pg_ctl("start", "-l", f"{self.directory}/server.log")

    def remove(self) -> None:
        self._run("stop_postgres")


@contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    if shutil.which("bash") is None:
        pytest.skip("needs bash for .ci/postgres.sh")
    script = (
        f"source {SCRIPT} && start_postgres >&2 && "
        'echo "$STATEMACHINE_TEST_PG|$_SMCI_PG_DIR|$_SMCI_PG_BIN|$_SMCI_PG_OSUSER"'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.skip(f"could not start a throwaway PostgreSQL cluster: {done.stderr[-500:]}")
    url, directory, bindir, user = done.stdout.strip().splitlines()[-1].split("|")
    cluster = Cluster(url, directory, bindir, user)
    try:
        yield cluster
    finally:
        cluster.remove()
