"""Retry policies applied: which policy a step has, the delay before its next attempt, and
whether an exception may be retried at all. tenacity computes the delays."""

from __future__ import annotations

import tenacity

from statemachine import errors
from statemachine.definition import models


def policy_of(
    definition: models.WorkflowDefinition, step: models.StepBase
) -> models.RetryPolicy | None:
    """A task's retry policy (its own, else the definition's default); no other step retries."""
    if isinstance(step, models.TaskStep):
        return step.retry or definition.default_retry
    return None


def delay(policy: models.RetryPolicy, failures: int) -> float:
    """Ask tenacity's wait strategy for the delay after ``failures`` failed attempts;
    ``max_interval`` caps every delay, the first included."""
    wait = tenacity.wait_exponential(
        multiplier=policy.interval, exp_base=policy.backoff_rate, max=policy.max_interval, min=0
    )
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = failures
    return float(wait(state))


def retryable(policy: models.RetryPolicy | None, exc: BaseException) -> bool:
    if isinstance(exc, errors.CriticalError) or policy is None:
        return False
    if policy.retry_on is None:
        return True
    return isinstance(exc, policy.retry_on)
