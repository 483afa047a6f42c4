"""The YAML vocabulary of a definition: which keys each part takes, and their aliases.

Both key styles (camelCase, snake_case) map to one canonical key (``canonical_key``), and a
canonical key names a model field (``model_field``). The loader reads documents with these sets
and ``yaml_schema`` writes the JSON Schema from the same ones, so the two never disagree.
"""

from __future__ import annotations

import functools
import re

ALIASES = {
    "name": "id",
    "depends_on": "dependsOn",
    "error_branch": "errorBranch",
    "error_next": "errorBranch",
    "on_error": "onError",
    "max_retries": "maxRetries",
    "retry_delay": "retryDelay",
    "default_retry": "defaultRetry",
    "max_attempts": "maxAttempts",
    "backoff_rate": "backoffRate",
    "max_interval": "maxInterval",
    "max_iterations": "maxIterations",
    "max_concurrency": "maxConcurrency",
    "input_schema": "inputSchema",
    "output_schema": "outputSchema",
    "on_complete": "onComplete",
    "params": "input",
    "delay": "wait",
    "retry_on": "retryOn",
}

TOP_KEYS = {
    "id",
    "version",
    "title",
    "description",
    "timeout",
    "defaultRetry",
    "triggers",
    "schedules",
    "steps",
    "onComplete",
    "inputSchema",
    "concurrency",
    "priority",
}
CONCURRENCY_KEYS = {"limit", "key"}
COMMON = {
    "id",
    "title",
    "type",
    "description",
    "next",
    "end",
    "onError",
    "errorBranch",
    "dependsOn",
    "condition",
    "trigger",
    "wait",
}
OWN: dict[str, set[str]] = {
    "task": {
        "action",
        "handler",
        "input",
        "inputSchema",
        "outputSchema",
        "retry",
        "maxRetries",
        "retryDelay",
        "timeout",
        "compensate",
    },
    "choice": {"choices", "default"},
    "parallel": {"branches", "mode", "failure", "maxConcurrency"},
    "pass": {"result", "transform"},
    "poll": {"action", "check", "input", "interval", "timeout", "maxAttempts"},
    "loop": {"target", "interval", "maxIterations", "timeout"},
    "wait": {"duration", "until", "event", "timeout"},
    "map": {"items", "iterator", "maxConcurrency"},
    "subworkflow": {"workflow", "input"},
}
SCHEDULE_KEYS = {"cron", "every", "timezone", "input", "overlap", "catchup"}
ON_ERROR = ("fail", "continue", "branch", "retry", "fail-fast", "wait-all")
RETRY_KEYS = {"maxAttempts", "interval", "backoffRate", "maxInterval", "retryOn"}
FIELD = {  # canonical YAML key -> model field
    "id": "name",
    "dependsOn": "depends_on",
    "errorBranch": "error_next",
    "onError": "on_error",
    "wait": "delay",
    "action": "handler",
    "inputSchema": "input_schema",
    "outputSchema": "output_schema",
    "maxAttempts": "max_attempts",
    "maxIterations": "max_iterations",
    "maxConcurrency": "max_concurrency",
}


ALLOWED = {kind: COMMON | own for kind, own in OWN.items()}


def canonical_key(key: str) -> str:
    return ALIASES.get(key, key)


@functools.lru_cache(maxsize=256)
def model_field(key: str) -> str:
    """Canonical YAML key -> model field: ``maxAttempts`` -> ``max_attempts``."""
    return FIELD.get(key) or re.sub(r"([A-Z])", r"_\1", key).lower()
