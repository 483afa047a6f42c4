"""The event loops runs go on, and the collector tuning of a worker process.

A blocking call (``Engine.execute``, ``run_due``, ``run_worker``) runs its coroutine on the
calling thread, on that thread's own loop (``Loops.run``); only a worker in the background
(``Engine.worker()``) gets a thread of its own (``LoopThread``). Either way a ``LoopDriver``
runs the loop: between two of its iterations, with no loop running on the thread, it makes the
sync handler calls its coroutines hand over (``LoopDriver.between``). That is how a quick
handler runs inline, without a thread hop, and still may call ``asyncio.run()`` itself, using
only public asyncio: the loop is stopped (``loop.stop()``), the calls are made, the loop runs on.

Every driver ticks while its loop runs; one that has not ticked for a while is stalled (a
handler blocking it), and ``leases.LeaseKeeper`` then keeps the leases of its runners.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from statemachine import errors

T = TypeVar("T")
TICK = 0.2  # seconds between a running loop's liveness ticks (see leases.LeaseKeeper)
WATCH = 0.5  # seconds between a caller's looks at whether the loop it waits on still lives
CLOSE_WAIT = 1.0  # seconds a closing loop gives its cancelled tasks to end
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


class LoopDriver:
    """One event loop, run by whichever thread calls ``run``/``run_forever``, and between its
    iterations the sync calls its coroutines hand over (``between``)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.beat = time.monotonic()  # the last tick while running: a stalled loop stops ticking
        self.running = False
        self.current: asyncio.Task[Any] | None = None  # what ``run`` runs now
        self._calls: deque[tuple[Callable[[], Any], asyncio.Future[Any]]] = deque()
        self._halted = False

    async def between(self, call: Callable[[], T]) -> T:
        """``call()`` on this loop's thread with the loop stopped (no loop runs on the thread,
        so the call may start one of its own), once this iteration of the loop is over; the
        other calls handed over in the same iteration are made with it. Loop thread only."""
        fut: asyncio.Future[T] = self.loop.create_future()
        if not self._calls:
            self.loop.stop()  # returns from run_forever once this iteration's callbacks ran
        self._calls.append((call, fut))
        return await fut

    def _make_calls(self) -> None:
        while self._calls:
            call, fut = self._calls.popleft()
            if fut.cancelled():  # its coroutine was cancelled meanwhile: it never runs
                continue
            try:
                fut.set_result(call())
            except Exception as exc:  # the call's own outcome, for its coroutine to see
                fut.set_exception(exc)

    def _tick(self) -> None:
        self.beat = time.monotonic()
        self.loop.call_later(TICK, self._tick)

    @contextlib.contextmanager
    def _ticking(self) -> Iterator[None]:
        self.beat = time.monotonic()
        tick = self.loop.call_later(TICK, self._tick)
        self.running = True
        try:
            yield
        finally:
            self.running = False
            tick.cancel()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to its end on the calling thread. Should the loop itself be interrupted
        (Ctrl-C while it waits), ``coro`` is cancelled and wound down (its runs give their
        leases up) before the interrupt goes on up."""
        task = self.loop.create_task(coro)
        self.current = task
        task.add_done_callback(self._ended)
        with self._ticking():
            try:
                self._until(task)
            except BaseException:
                task.cancel()
                self._until(task)
                raise
            finally:
                self.current = None
        return task.result()

    def _ended(self, task: asyncio.Task[Any]) -> None:
        # an interrupt raised inside the task ends it and leaves the loop at once, with this
        # callback still queued: run later (the thread's next call, ``close``), it must not
        # stop a loop that runs for something else
        if task is self.current:
            self.loop.stop()

    def _until(self, task: asyncio.Task[Any]) -> None:
        while not task.done():
            self.loop.run_forever()
            self._make_calls()

    def run_forever(self) -> None:
        """Run until ``halt``: the body of a ``LoopThread``."""
        with self._ticking():
            while not self._halted:
                self.loop.run_forever()
                self._make_calls()

    def halt(self) -> None:
        """Stop ``run_forever`` (any thread)."""

        def halted() -> None:
            self._halted = True
            self.loop.stop()

        self.loop.call_soon_threadsafe(halted)

    def close(self) -> None:
        """Cancel what is left on the loop and close it (not running; any thread)."""
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        if tasks:  # a second at most: a handler may ignore its cancellation
            self.loop.run_until_complete(asyncio.wait(tasks, timeout=CLOSE_WAIT))
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


class Loops:
    """The loops of one engine: one per thread that made a blocking call, kept for that
    thread's next call, and whichever of them runs now (for the lease keeper)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[threading.Thread, LoopDriver] = {}
        self._running: dict[asyncio.AbstractEventLoop, LoopDriver] = {}
        self.closed = False

    def driver_of(self, loop: asyncio.AbstractEventLoop) -> LoopDriver | None:
        """The driver running ``loop``, if a driver runs it (then it can make calls ``between``)."""
        return self._running.get(loop)

    def running(self) -> list[LoopDriver]:
        with self._lock:
            return list(self._running.values())

    def add(self, driver: LoopDriver) -> None:
        with self._lock:
            self._running[driver.loop] = driver

    def remove(self, driver: LoopDriver) -> None:
        with self._lock:
            self._running.pop(driver.loop, None)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the calling thread, on its loop. A thread whose own loop is running
        already (an async caller, or a handler that calls back into the engine from inside
        an ``asyncio.run``) cannot run another: the call gets a thread of its own."""
        if not _loop_running_here():
            return self._run_here(coro)
        with concurrent.futures.ThreadPoolExecutor(1, "statemachine-call") as side:
            return side.submit(self._run_here, coro, False).result()

    def _run_here(self, coro: Coroutine[Any, Any, T], keep: bool = True) -> T:
        me = threading.current_thread()
        with self._lock:
            if self.closed:
                coro.close()  # never scheduled: close it so Python does not warn
                raise errors.StatemachineError("this engine is closed")
            driver = self._idle.pop(me, None)  # busy (a call back from its handler): a new one
            self._sweep()
        if driver is None:
            driver = LoopDriver()
        self.add(driver)
        try:
            return driver.run(coro)
        finally:
            self.remove(driver)
            with self._lock:
                keep = keep and not self.closed and me not in self._idle
                if keep:
                    self._idle[me] = driver
            if not keep:
                driver.close()

    def _sweep(self) -> None:
        """Close the loops of threads that have ended (under the lock)."""
        for thread in [t for t in self._idle if not t.is_alive()]:
            self._idle.pop(thread).close()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = list(self._idle.values()), {}
        close_all(idle)


def close_all(drivers: list[LoopDriver]) -> None:
    """Close ``drivers``' loops; from a coroutine (a FastAPI lifespan, an async main) on a
    thread of their own, since no other loop can run on a thread whose own loop runs."""

    def close() -> None:
        for driver in drivers:
            driver.close()

    if not drivers or not _loop_running_here():
        close()
        return
    side = threading.Thread(target=close, name="statemachine-loop-close")
    side.start()
    side.join()


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class LoopThread:
    """A driven loop in a daemon thread of its own, for a worker in the background."""

    def __init__(self, loops: Loops) -> None:
        self.driver = LoopDriver()
        self.loop = self.driver.loop
        self._loops = loops
        self.thread = threading.Thread(target=self._main, name="statemachine-loop", daemon=True)
        loops.add(self.driver)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.driver.run_forever()
        finally:
            self._loops.remove(self.driver)

    @property
    def alive(self) -> bool:
        """False once the thread has ended: the loop runs nothing more (a stalled one will)."""
        return self.thread.is_alive()

    def wait(self, fut: concurrent.futures.Future[T], timeout: float | None = None) -> T:
        """``fut.result(timeout)``, unless the loop that would settle it dies meanwhile."""
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
            self.driver.halt()
            self.thread.join(timeout=5)
            if self.alive:
                return
        close_all([self.driver])


def _dead_loop() -> errors.StatemachineError:
    return errors.StatemachineError(
        "the engine's event loop thread has stopped, so it can run nothing more; "
        "close this engine and open a new one (its instances are recovered once their "
        "leases expire)"
    )
