"""A worker process the crash tests SIGKILL: ``python crash_worker.py MODE DB_URL MARKER_DIR``.

Every handler writes a marker file (step, idempotency key, attempt, pid, wall time) before it
returns, so the test can count how often each step really ran across processes.

MODE ``steps``: run the 4-step ``crash-steps`` workflow (instance ``crash-1``); step 3 writes its
marker, then hangs until the test kills the process.
MODE ``backoff``: start ``crash-backoff`` (instance ``backoff-1``) and run a worker; the ``flaky``
step fails its first attempt, so the instance sits in a 5 s backoff when it is killed.

Only the public API is used; the same ``setup`` is imported by the tests to recover.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from statemachine import Engine, RetryPolicy, StepContext, workflow

STEPS_WORKFLOW = "crash-steps"
STEPS_INSTANCE = "crash-1"
BACKOFF_WORKFLOW = "crash-backoff"
BACKOFF_INSTANCE = "backoff-1"
BACKOFF_INTERVAL = 5.0  # seconds before the flaky step's second attempt


def write_marker(marker_dir: Path, step: str, ctx: StepContext) -> None:
    body = {
        "step": step,
        "key": ctx.idempotency_key,
        "attempt": ctx.attempt,
        "pid": os.getpid(),
        "time": time.time(),
    }
    name = f"{step}-{os.getpid()}-{uuid.uuid4().hex}.json"
    tmp = marker_dir / f".{name}.tmp"
    tmp.write_text(json.dumps(body))
    tmp.rename(marker_dir / name)  # atomic: the test never reads half a marker


def read_markers(marker_dir: Path, step: str | None = None) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted(marker_dir.glob("*.json"))]
    found = [m for m in found if step is None or m["step"] == step]
    return sorted(found, key=lambda m: m["time"])


def setup(engine: Engine, marker_dir: Path, *, hang: bool) -> None:
    """Register the actions and both workflows on ``engine``."""

    def step1(data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        write_marker(marker_dir, "step1", ctx)
        return {"n": data["n"] + 1}

    def step2(data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        write_marker(marker_dir, "step2", ctx)
        return {"n": data["n"] * 10}

    def step3(data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        write_marker(marker_dir, "step3", ctx)
        if hang:
            time.sleep(300)  # the test SIGKILLs us here
        return {"n": data["n"] + 5, "key": ctx.idempotency_key}

    def step4(data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        write_marker(marker_dir, "step4", ctx)
        return {"result": data["n"], "step3_key": ctx.steps["step3"]["key"]}

    def prep(data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        write_marker(marker_dir, "prep", ctx)
        return {"ready": True}

    def flaky(data: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        write_marker(marker_dir, "flaky", ctx)
        if ctx.attempt == 1:
            raise ConnectionError("the service is down")
        return {"attempt": ctx.attempt}

    for fn in (step1, step2, step3, step4, prep, flaky):
        engine.action(fn.__name__)(fn)

    engine.register(
        workflow(STEPS_WORKFLOW)
        .task("step1", "step1")
        .task("step2", "step2")
        .task("step3", "step3")
        .task("step4", "step4")
        .build()
    )
    engine.register(
        workflow(BACKOFF_WORKFLOW)
        .task("prep", "prep")
        .task(
            "flaky",
            "flaky",
            retry=RetryPolicy(
                max_attempts=3, interval=BACKOFF_INTERVAL, backoff_rate=2, max_interval="1m"
            ),
        )
        .build()
    )


def main(argv: list[str]) -> int:
    mode, url, marker_dir = argv[1], argv[2], Path(argv[3])
    engine = Engine(url, lease="1s")
    setup(engine, marker_dir, hang=True)
    if mode == "steps":
        engine.execute(STEPS_WORKFLOW, {"n": 1}, instance_id=STEPS_INSTANCE)
    elif mode == "backoff":
        engine.start(BACKOFF_WORKFLOW, {}, instance_id=BACKOFF_INSTANCE)
        engine.run_worker(concurrency=2, poll_interval="100ms")
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    print("finished without being killed", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv))
