"""Runs one handler call: sync ones in a thread pool, async ones natively, under a timeout.

The outcome is data (``Outcome``) that the runner feeds back to the interpreter; no exception
from user code escapes this module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from statemachine import errors
from statemachine.definition import models
from statemachine.runtime import flowctx, jsondata
from statemachine.runtime.context import StepContext


@dataclass
class Outcome:
    ok: bool
    output: Any = None
    error: dict[str, Any] | None = None
    retryable: bool = True


def error_dict(exc: BaseException, *, step: str | None = None) -> dict[str, Any]:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=8)
    return {
        "type": type(exc).__name__,
        "message": str(exc) or type(exc).__name__,
        "traceback": "".join(tb)[-4000:],
    }


@functools.lru_cache(maxsize=1024)
def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 2
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 2
    return min(2, sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)))


def _is_async(fn: Callable[..., Any]) -> bool:
    call = type(fn).__call__ if not inspect.isfunction(fn) and not inspect.ismethod(fn) else None
    return inspect.iscoroutinefunction(fn) or (
        call is not None and inspect.iscoroutinefunction(call)
    )


class Executor:
    def __init__(self, max_threads: int = 32) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="sm-step"
        )

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def run(
        self,
        fn: Callable[..., Any],
        step: models.TaskStep | models.PollStep,
        payload: Any,
        ctx: StepContext,
        policy: models.RetryPolicy | None,
        *,
        compensation: bool = False,
    ) -> Outcome:
        """Call ``fn(payload, ctx)``; a compensation gets the step's output and skips its schemas."""
        path = ctx.step_name
        schemas = isinstance(step, models.TaskStep) and not compensation
        budget = asyncio.timeout(None if compensation else step.timeout)
        try:
            if schemas and isinstance(step, models.TaskStep) and step.input_schema is not None:
                try:
                    payload = step.input_schema.model_validate(payload)
                except ValidationError as exc:
                    raise errors.CriticalError(
                        f"input of step {path!r} does not match {step.input_schema.__name__}: {exc}",
                        step=path,
                    ) from None
            args = (payload, ctx)[: _arity(fn)]
            async with budget:
                if _is_async(fn):
                    result = await fn(*args)
                else:
                    loop = asyncio.get_running_loop()
                    call = functools.partial(contextvars.copy_context().run, fn, *args)
                    result = await loop.run_in_executor(self.pool, call)
                if inspect.isawaitable(result):
                    result = await result
            if schemas and isinstance(step, models.TaskStep) and step.output_schema is not None:
                try:
                    model = step.output_schema
                    result = result if isinstance(result, model) else model.model_validate(result)
                except ValidationError as exc:
                    raise errors.CriticalError(
                        f"output of step {path!r} does not match {step.output_schema.__name__}: {exc}",
                        step=path,
                    ) from None
            output = jsondata.to_storable(result, what=f"output of step {path!r}", step=path)
            return Outcome(True, output)
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            if not budget.expired():  # the handler's own TimeoutError, not our step timeout
                return Outcome(
                    False, error=error_dict(exc), retryable=flowctx.retryable(policy, exc)
                )
            late = errors.StepTimeoutError(
                f"step {path!r} timed out after {step.timeout}s", step=path
            )
            return Outcome(False, error=error_dict(late), retryable=flowctx.retryable(policy, late))
        except errors.OutputNotStorable as exc:
            return Outcome(False, error=error_dict(exc), retryable=False)
        except Exception as exc:  # user code: anything may be raised
            return Outcome(False, error=error_dict(exc), retryable=flowctx.retryable(policy, exc))


def ensure_model(value: Any, schema: type[BaseModel] | None) -> Any:
    return value if schema is None else schema.model_validate(value)
