"""Benchmarks, not collected by pytest; run them with ``python -m tests.benchmarks``."""
