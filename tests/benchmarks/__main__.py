"""``python -m tests.benchmarks [NAME...]``: run every benchmark (or the named ones) and print its table.

Names: ``steps`` (cost of one durable step, ``bench_steps``), ``workers`` (throughput of 1, 2
and 4 worker processes on SQLite and Postgres, ``bench_workers``), ``scale`` (wide parallel
steps, big maps and definitions, many sleeping instances, wake-up latency, ``bench_scale``),
``dbos`` (the cost of one step side by side with DBOS Transact on the same SQLite settings,
``bench_dbos``; needs ``pip install -e '.[bench]'``, and says so when ``dbos`` is missing),
``flow`` (claiming and running 1,000 due instances with concurrency keys and without,
``bench_flow``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from tests.benchmarks import bench_dbos, bench_flow, bench_scale, bench_steps, bench_workers

BENCHMARKS: dict[str, Callable[[], None]] = {
    "steps": bench_steps.main,
    "workers": bench_workers.main,
    "scale": bench_scale.main,
    "dbos": bench_dbos.main,
    "flow": bench_flow.main,
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    for i, name in enumerate(names):
        if i:
            print()
        print(f"## {name}\n")
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
