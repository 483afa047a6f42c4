"""Rules on single fields of a definition (timeouts, waits, retry policies), one issue each.

Kept apart from ``validation``, which walks scopes and graphs, so that each stays one concern.
"""

from __future__ import annotations

from collections.abc import Iterator

from statemachine import errors
from statemachine.definition import issues, models

Loc = issues.Loc


def issue(code: str, loc: Loc, message: str) -> errors.Issue:
    return errors.Issue(message=message, location=issues.format_loc(loc), code=code)


def positive(seconds: float | None, loc: Loc) -> Iterator[errors.Issue]:
    if seconds is not None and not seconds > 0:
        yield issue("bad_timeout", loc, "a timeout must be greater than 0")


def wait(step: models.WaitStep, loc: Loc) -> Iterator[errors.Issue]:
    given = [k for k in ("duration", "until", "event") if getattr(step, k) is not None]
    if len(given) != 1:
        got = " and ".join(given) or "none"
        msg = f"a wait step needs exactly one of duration, until or event (got {got})"
        yield issue("wait_kind", loc, msg)
    if step.event is not None and not step.event.strip():
        yield issue("wait_kind", (*loc, "event"), "the event name must not be empty")
    if step.timeout is not None:
        if step.event is None:
            yield issue("wait_timeout", (*loc, "timeout"), "timeout only bounds an event wait")
        yield from positive(step.timeout, (*loc, "timeout"))
    if step.duration is not None and not step.duration >= 0:
        yield issue("bad_duration", (*loc, "duration"), "the wait duration must not be negative")


def retry(policy: models.RetryPolicy, loc: Loc) -> Iterator[errors.Issue]:
    for key in ("interval", "max_interval"):
        if not getattr(policy, key) >= 0:
            key = issues.yaml_key(key)
            yield issue("retry", (*loc, key), f"{key} must not be negative")
    for k, exc_type in enumerate(policy.retry_on or ()):
        if isinstance(exc_type, type) and issubclass(exc_type, errors.CriticalError):
            msg = f"{exc_type.__name__} is never retried: a CriticalError fails the step at once"
            yield issue("retry", (*loc, "retryOn", k), msg)
