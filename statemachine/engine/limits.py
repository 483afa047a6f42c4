"""Limits per action (``Engine.limit_action``): parsed and stored here, looked up by runners.

The limits live in the database, so every engine on it obeys the one set last. Runners look
them up through a short cache (``LOOKUP_TTL``), so an engine with no limited action pays no
query per step; the admission itself (``Repository.admit_call``) always reads the stored row.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from statemachine import errors
from statemachine.engine.services import Services
from statemachine.runtime import jsondata
from statemachine.store import tables
from statemachine.store.limits import ActionLimit

#: seconds a runner trusts its copy of the stored limits (a limit set elsewhere counts after)
LOOKUP_TTL = 1.0
#: seconds a step waiting for a concurrency slot waits before it asks again (its end is unknown)
SLOT_RECHECK = 0.5

#: seconds (at most a tenth of the window) added to a rate's window when admitting: a call's
#: start is counted just before its admission commits, and the commit's own time varies
RATE_GUARD = 0.05

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")


def parse_rate(rate: str) -> tuple[int, float]:
    """``"100/m"`` -> (100, 60.0): at most 100 calls started in any 60 seconds."""
    found = _RATE.match(rate) if isinstance(rate, str) else None
    if found is None or int(found.group(1)) < 1:
        raise errors.InputValidationError(
            f"rate {rate!r} is not a rate: write calls per second, minute or hour as "
            "'N/s', 'N/m' or 'N/h' with N at least 1, e.g. '100/m'"
        )
    return int(found.group(1)), _PERIODS[found.group(2)]


def limit_action(services: Services, name: str, rate: str | None, concurrency: int | None) -> None:
    """Store the limit of action ``name`` for every engine on the database (None for both
    removes it). The action need not be registered here: workers elsewhere may run it."""
    jsondata.check_name(name, "an action's name", tables.NAME_LENGTH)
    count, per = parse_rate(rate) if rate is not None else (None, None)
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise errors.InputValidationError(
            f"concurrency must be a whole number of calls, at least 1 (or None), not {concurrency!r}"
        )
    limit = None if count is None and concurrency is None else ActionLimit(count, per, concurrency)
    services.repo.set_action_limit(name, limit, services.clock.now())
    services.local.action_limits = None  # this engine sees its own change at once


def limited(services: Services, action: str) -> bool:
    """Whether ``action`` has a stored limit (as of at most ``LOOKUP_TTL`` seconds ago)."""
    local, now = services.local, services.clock.now()
    cached = local.action_limits
    if cached is None or not cached[0] <= now < cached[0] + timedelta(seconds=LOOKUP_TTL):
        cached = local.action_limits = (now, frozenset(services.repo.action_limits()))
    return action in cached[1]


def admit(
    services: Services, action: str, instance_id: str, path: str, epoch: int
) -> datetime | None:
    """None if a call of ``action`` may start now (and it is counted), else when to ask again."""
    clock = services.clock.now
    guard = RATE_GUARD if services.clock.real else 0.0  # a manual clock has no jitter
    return services.repo.admit_call(action, instance_id, path, epoch, clock, SLOT_RECHECK, guard)


# -- admission at the call itself -----------------------------------------------------------
# The admission runs where the handler runs (its pool thread, or its task), right before it:
# admitting earlier, on the runner's loop, left tens of milliseconds of scheduling between the
# counted start and the real one, enough to show a burst in the handlers' own timestamps.
# The call's gate travels in a context variable (the executor runs each call in a copy of the
# caller's context), so one wrapper per action function serves every call.
_GATE: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "statemachine_action_gate", default=None
)
_GATED: dict[Callable[..., Any], Callable[..., Any]] = {}


def gated(fn: Callable[..., Any], gate: Callable[[], bool]) -> Callable[..., Any]:
    """``fn`` behind ``gate`` for the calls made from the current context: it runs only if the
    gate admits it, else returns None (``StepCalls.record`` then defers the step instead)."""
    _GATE.set(gate)
    wrapper = _GATED.get(fn)
    if wrapper is None:
        wrapper = _GATED[fn] = _wrap(fn)
    return wrapper


def _wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call):

        @functools.wraps(fn)
        async def gate_async(*args: Any) -> Any:
            gate = _GATE.get()
            if gate is not None and not await asyncio.to_thread(gate):
                return None
            return await fn(*args)

        return gate_async

    @functools.wraps(fn)
    def gate_sync(*args: Any) -> Any:
        gate = _GATE.get()
        if gate is not None and not gate():
            return None
        return fn(*args)

    return gate_sync
