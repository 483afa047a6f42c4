"""Runs one handler call: sync ones in a thread pool, async ones natively, under a timeout.

The outcome is data (``Outcome``) that the runner feeds back to the interpreter; no exception
from user code escapes this module, except a ``BaseException`` that is not an ``Exception``
(``SystemExit``, ``KeyboardInterrupt``...), which leaves as ``HandlerInterrupted``.

A sync handler cannot be stopped: when its attempt ends without it (a step timeout, a cancel,
the workflow's deadline) its thread runs on, abandoned. Its late result is discarded (the
``late`` callback notes it), and the next call of that step in this process waits for that
thread first, so two attempts of one step never overlap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from statemachine import errors
from statemachine.definition import models, schemas
from statemachine.engine.loop import Loops
from statemachine.runtime import jsondata, retries
from statemachine.runtime.context import StepContext
from statemachine.runtime.outcome import Outcome, Watcher, error_dict


class HandlerInterrupted(Exception):
    """Internal: a handler raised a BaseException that is not an Exception (``SystemExit``,
    ``KeyboardInterrupt``, a library's own cancellation). That is no failure of the step: the
    run stops, its lease is given up for recovery, and the engine re-raises ``original`` to
    its caller (a worker stops or goes on). Carried as an Exception because asyncio stops
    its whole loop, every other instance with it, for a task's SystemExit/KeyboardInterrupt."""

    def __init__(self, original: BaseException, step: str) -> None:
        super().__init__(f"the handler of step {step!r} raised {type(original).__name__}")
        self.original = original
        self.step = step


# told how an abandoned call ended; runs in the pool thread, and returns once that is noted
Late = Callable[[Outcome], None]


def slot(ctx: StepContext) -> str:
    """The key no two calls may share at once: one step of one instance."""
    return f"{ctx.instance_id}\x00{ctx.step_name}"


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
    """Sync handlers run in a thread pool, or inline on the loop's thread once the action has
    proved quick (a thread hop and its futures cost more than a trivial handler): between two
    iterations of a loop that a ``LoopDriver`` runs, with the loop stopped."""

    QUICK = 0.005  # seconds: an action this fast may run inline; one slower call and it never does

    def __init__(self, max_threads: int = 32) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="sm-step"
        )
        self.quick: dict[Callable[..., Any], bool] = {}  # measured in the pool first
        # by ``slot``: a call whose attempt ended while its thread still runs
        self.abandoned: dict[str, Future[Any]] = {}
        # around every call: metrics and spans (statemachine.observability), none by default;
        # each with the cheap check that says whether it watches now (None: always)
        self.watchers: list[tuple[Watcher, Callable[[], bool] | None]] = []
        self.loops = Loops()  # the engine's loops; inline calls need a driven one

    def watch(self, watcher: Watcher, when: Callable[[], bool] | None = None) -> None:
        """Run ``watcher`` around every handler call (only while ``when()`` is true): a watcher
        that has nothing to do yet (tracing before OpenTelemetry is configured) costs one call
        of ``when``, not a context manager per attempt."""
        self.watchers.append((watcher, when))

    def _watching(self) -> list[Watcher]:
        return [w for w, when in self.watchers if when is None or when()]

    def close(self) -> None:
        self.loops.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def watched(
        self, watchers: list[Watcher], ctx: StepContext, policy: models.RetryPolicy | None
    ) -> Iterator[Callable[[Outcome], None]]:
        """Every watcher around one call; what the block yields tells them its outcome."""
        with contextlib.ExitStack() as stack:
            told = [stack.enter_context(watch(ctx, policy)) for watch in watchers]

            def tell(outcome: Outcome) -> None:
                for each in told:
                    each(outcome)

            yield tell

    def can_inline(
        self, fn: Callable[..., Any], step: models.TaskStep | models.PollStep, ctx: StepContext
    ) -> bool:
        return (
            step.timeout is None
            and self.quick.get(fn, False)
            and not _is_async(fn)
            and slot(ctx) not in self.abandoned  # run() waits for that thread; inline cannot
            and self.loops.driver_of(asyncio.get_running_loop()) is not None
        )

    async def run(
        self,
        fn: Callable[..., Any],
        step: models.TaskStep | models.PollStep,
        payload: Any,
        ctx: StepContext,
        policy: models.RetryPolicy | None,
        *,
        compensation: bool = False,
        late: Late | None = None,
    ) -> Outcome:
        """Call ``fn(payload, ctx)``; a compensation gets the step's output and skips its schemas.

        A sync call abandoned by a timeout or a cancel tells ``late`` how it ended, later."""
        watchers = self._watching() if self.watchers else None
        if not watchers:
            return await self._run(fn, step, payload, ctx, policy, compensation, late)
        with self.watched(watchers, ctx, policy) as tell:
            outcome = await self._run(fn, step, payload, ctx, policy, compensation, late)
            tell(outcome)
        return outcome

    async def _run(
        self,
        fn: Callable[..., Any],
        step: models.TaskStep | models.PollStep,
        payload: Any,
        ctx: StepContext,
        policy: models.RetryPolicy | None,
        compensation: bool,
        late: Late | None,
    ) -> Outcome:
        sync = not _is_async(fn)
        if sync:  # before the budget starts: this attempt has not begun while the last one runs
            await self._after_abandoned(slot(ctx))
        budget = asyncio.timeout(None if compensation else step.timeout)
        try:
            args = _arguments(fn, step, payload, ctx, compensation)
            async with budget:
                if sync:
                    result = await self._in_pool(fn, args, slot(ctx), late)
                else:
                    result = await fn(*args)
                if inspect.isawaitable(result):
                    result = await result
            return _succeeded(step, result, ctx.step_name, compensation)
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            if not budget.expired():  # the handler's own TimeoutError, not our step timeout
                return _failed(exc, policy)
            still = " (its thread still runs; its result will be discarded)" if sync else ""
            timeout = errors.StepTimeoutError(
                f"step {ctx.step_name!r} timed out after {step.timeout}s{still}",
                step=ctx.step_name,
            )
            return _failed(timeout, policy)
        except Exception as exc:  # user code: anything may be raised
            return _failed(exc, policy)
        except BaseException as exc:
            raise HandlerInterrupted(exc, ctx.step_name) from exc

    async def _in_pool(
        self, fn: Callable[..., Any], args: tuple[Any, ...], key: str, late: Late | None
    ) -> Any:
        call = functools.partial(contextvars.copy_context().run, self._timed, fn, args)
        fut = self.pool.submit(call)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            if not fut.cancel():  # it began (or just ended): it runs on, abandoned
                self._abandon(key, fut, late)
            raise

    def _abandon(self, key: str, fut: Future[Any], late: Late | None) -> None:
        self.abandoned[key] = fut

        def ended(done: Future[Any]) -> None:
            # noted before the step may run again: this callback runs before the one that
            # wakes ``_after_abandoned`` (added later), and ``late`` returns once it is stored
            if late is not None:
                exc = done.exception()
                outcome = Outcome(True) if exc is None else Outcome(False, error=error_dict(exc))
                late(outcome)
            if self.abandoned.get(key) is done:
                del self.abandoned[key]

        fut.add_done_callback(ended)

    async def _after_abandoned(self, key: str) -> None:
        """Wait until no abandoned call of this step runs (a cancel of the wait leaves it be)."""
        while (running := self.abandoned.get(key)) is not None:
            await asyncio.wait([asyncio.wrap_future(running)])
            if self.abandoned.get(key) is running:  # ended: whatever its callback did
                del self.abandoned[key]

    async def run_inline(
        self,
        fn: Callable[..., Any],
        step: models.TaskStep | models.PollStep,
        payload: Any,
        ctx: StepContext,
        policy: models.RetryPolicy | None,
        *,
        compensation: bool = False,
    ) -> Outcome:
        """``run`` for a quick sync action (see ``can_inline``): on the loop's thread, with
        the loop stopped, so the handler may run a loop of its own (``asyncio.run``). It runs
        in a copy of the calling task's context, as a call in the pool would."""
        driver = self.loops.driver_of(asyncio.get_running_loop())
        assert driver is not None  # can_inline said so
        watchers = self._watching() if self.watchers else None
        args = (fn, step, payload, ctx, policy, compensation)
        if not watchers:
            return await driver.between(self._in_copied_context(*args))
        with self.watched(watchers, ctx, policy) as tell:  # entered first: the call sees spans
            outcome = await driver.between(self._in_copied_context(*args))
            tell(outcome)
        return outcome

    def _in_copied_context(self, *args: Any) -> Callable[[], Outcome]:
        return functools.partial(contextvars.copy_context().run, self._run_inline, *args)

    def _run_inline(
        self,
        fn: Callable[..., Any],
        step: models.TaskStep | models.PollStep,
        payload: Any,
        ctx: StepContext,
        policy: models.RetryPolicy | None,
        compensation: bool,
    ) -> Outcome:
        try:
            args = _arguments(fn, step, payload, ctx, compensation)
            result = self._timed(fn, args)
            if inspect.isawaitable(result):  # a sync function that returned a coroutine
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                self.quick[fn] = False
                raise errors.CriticalError(
                    f"handler of step {ctx.step_name!r} returned an awaitable from a sync function",
                    step=ctx.step_name,
                )
            return _succeeded(step, result, ctx.step_name, compensation)
        except Exception as exc:  # user code: anything may be raised
            return _failed(exc, policy)
        except BaseException as exc:
            raise HandlerInterrupted(exc, ctx.step_name) from exc

    def _timed(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        began = time.perf_counter()
        try:
            return fn(*args)
        finally:
            if time.perf_counter() - began >= self.QUICK:
                self.quick[fn] = False  # for good: one slow call may mean it blocks
            else:
                self.quick.setdefault(fn, True)


def _arguments(
    fn: Callable[..., Any],
    step: models.TaskStep | models.PollStep,
    payload: Any,
    ctx: StepContext,
    compensation: bool,
) -> tuple[Any, ...]:
    if isinstance(step, models.TaskStep) and not compensation and step.input_schema is not None:
        try:
            payload = schemas.conform(payload, step.input_schema)
        except schemas.Mismatch as exc:
            raise errors.CriticalError(
                f"input of step {ctx.step_name!r} does not match {schemas.label(step.input_schema)}: {exc}",
                step=ctx.step_name,
            ) from None
    return (payload, ctx)[: _arity(fn)]


def _succeeded(
    step: models.TaskStep | models.PollStep, result: Any, path: str, compensation: bool
) -> Outcome:
    if isinstance(step, models.TaskStep) and not compensation and step.output_schema is not None:
        try:
            result = schemas.conform(result, step.output_schema)
        except schemas.Mismatch as exc:
            raise errors.CriticalError(
                f"output of step {path!r} does not match {schemas.label(step.output_schema)}: {exc}",
                step=path,
            ) from None
    return Outcome(True, jsondata.to_storable(result, what=f"output of step {path!r}", step=path))


def _failed(exc: Exception, policy: models.RetryPolicy | None) -> Outcome:
    if isinstance(exc, errors.OutputNotStorable):
        return Outcome(False, error=error_dict(exc), retryable=False)
    return Outcome(False, error=error_dict(exc), retryable=retries.retryable(policy, exc))
