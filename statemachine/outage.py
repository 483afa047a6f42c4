"""Moved to ``statemachine.engine.outage``; this name stays for the CLI's import until it moves."""

from statemachine.engine.outage import Backoff, Outage, delay, one_line, retry, transient

__all__ = ["Backoff", "Outage", "delay", "one_line", "retry", "transient"]
