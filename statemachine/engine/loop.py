"""The event-loop thread every run of an engine goes on, and the collector tuning of a worker
process.

Sync callers (``Engine.execute``, ``run_due``) wait on futures of this loop; a loop whose thread
has died is told apart from a stalled one (``alive``) so that nobody waits on it forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from statemachine import errors

T = TypeVar("T")
TICK = 0.2  # seconds between the loop's liveness ticks (see leases.LeaseKeeper)
WATCH = 0.5  # seconds between a caller's looks at whether the loop it waits on still lives
GC_THRESHOLD = (20_000, 20, 20)  # young-generation threshold while a process is a worker


@contextlib.contextmanager
def tuned_collector() -> Iterator[None]:
    """For a process whose job is, for now, to be a worker (``Engine.run_worker``, the CLI):
    instances in flight keep many objects alive, and the default young-generation threshold
    (700 allocations) re-scans them several times per step (measured: 7-15% of a busy worker's
    steps/s; tests/benchmarks/bench_steps.py). The old threshold is back on return."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)


class LoopThread:
    """One asyncio loop in a daemon thread: handlers run there, sync callers wait on futures."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="statemachine-loop", daemon=True
        )
        self.thread.start()
        self.beat = time.monotonic()  # the loop's last tick: a stalled loop stops ticking
        self.loop.call_soon_threadsafe(self._tick)

    def _tick(self) -> None:
        self.beat = time.monotonic()
        self.loop.call_later(TICK, self._tick)

    @property
    def alive(self) -> bool:
        """False once the thread has ended: the loop runs nothing more (a stalled one will)."""
        return self.thread.is_alive()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self.thread:
            # a handler running inline on this loop called back into the engine (say, execute):
            # waiting on this loop from inside it would deadlock, so that call gets a loop of its own
            with concurrent.futures.ThreadPoolExecutor(1) as side:
                return side.submit(asyncio.run, coro).result(timeout)
        if not self.alive:
            coro.close()  # never scheduled: close it so Python does not warn
            raise _dead_loop()
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not fut.done():  # a loop that dies settles nothing: look at it now and then
            left = WATCH if deadline is None else min(WATCH, deadline - time.monotonic())
            concurrent.futures.wait([fut], timeout=max(left, 0.0))
            if fut.done():
                break
            if not self.alive:
                fut.cancel()
                raise _dead_loop()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"the engine's call did not finish within {timeout}s")
        return fut.result()

    def stop(self) -> None:
        if self.alive:  # a loop that died already must not stop its own winding down below
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
            if self.alive:
                return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._close()
            return
        # closed from a coroutine (a FastAPI lifespan, an async main): this thread cannot run
        # another loop while its own runs, so our loop is wound down on a thread of its own
        side = threading.Thread(target=self._close, name="statemachine-loop-close")
        side.start()
        side.join()

    def _close(self) -> None:
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


def _dead_loop() -> errors.StatemachineError:
    return errors.StatemachineError(
        "the engine's event loop thread has stopped, so it can run nothing more; "
        "close this engine and open a new one (its instances are recovered once their "
        "leases expire)"
    )
