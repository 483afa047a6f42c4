"""Old names of what moved to ``flowview`` and ``retries``, for callers outside ``runtime`` not
updated yet (``runner``, ``executor``): import from those modules instead."""

from __future__ import annotations

from statemachine.runtime.flowview import FlowView, view
from statemachine.runtime.retries import policy_of as retry_policy
from statemachine.runtime.retries import retryable

__all__ = ["FlowView", "retry_policy", "retryable", "view"]
