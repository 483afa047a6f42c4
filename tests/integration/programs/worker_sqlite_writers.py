"""One of several writers sharing a SQLite file: ``python worker_sqlite_writers.py DB_URL SECONDS TAG``.

Its own Engine executes small 3-step workflows (instance ids ``TAG-0``, ``TAG-1``, ...) one after
another for SECONDS, reading each back; every 10th one is started and left to ``run_due`` instead,
so claims, reads and commits of all processes interleave. Prints one JSON line
``{"ran": N, "tag": TAG}`` and exits 0; any exception is printed (traceback on stderr) and
exits 1.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any

from statemachine import Engine, StepContext, workflow

WORKFLOW = "small"


def setup(engine: Engine) -> None:
    def bump(data: Any, ctx: StepContext) -> dict[str, Any]:
        n = ctx.prev["n"] if isinstance(ctx.prev, dict) else ctx.input["n"]
        return {"n": n + 1, "key": ctx.idempotency_key}

    engine.action("small_bump")(bump)
    builder = workflow(WORKFLOW)
    for step in ("a", "b", "c"):
        builder = builder.task(step, "small_bump")
    engine.register(builder.build())


def run(url: str, seconds: float, tag: str) -> int:
    engine = Engine(url)
    try:
        setup(engine)
        deadline = time.monotonic() + seconds
        ran = 0
        while time.monotonic() < deadline:
            iid = f"{tag}-{ran}"
            if ran % 10 == 9:
                engine.start(WORKFLOW, {"n": ran}, instance_id=iid)
                engine.run_due()  # may run other processes' due instances too: that is fine
                inst = engine.get(iid)
            else:
                inst = engine.execute(WORKFLOW, {"n": ran}, instance_id=iid)
            if inst.status != "completed":
                # another process's run_due may hold it right now: wait for it to finish
                inst = engine.wait(iid, timeout=30)
            if inst.status != "completed" or inst.output["n"] != ran + 3:
                raise AssertionError(f"{iid} ended {inst.status}: {inst.output} {inst.error}")
            ran += 1
        return ran
    finally:
        engine.close()


def main(argv: list[str]) -> int:
    url, seconds, tag = argv[1], float(argv[2]), argv[3]
    try:
        ran = run(url, seconds, tag)
    except BaseException:
        traceback.print_exc()
        return 1
    print(json.dumps({"ran": ran, "tag": tag}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
