"""``python -m tests.benchmarks``: run every benchmark and print its table."""

from __future__ import annotations

import sys

from tests.benchmarks import bench_steps


def main() -> int:
    bench_steps.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
