"""The service's bounded work queue: ``max_running`` requests in worker threads, ``max_waiting``
more waiting in FIFO order, 429 past that.

A slot is owned by the worker thread and released when that thread ends, so a client that
disconnects or times out never leaks one.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import QueueFullError, RequestTimeoutError

T = TypeVar("T")


class _Waiter:
    __slots__ = ("future", "loop", "granted")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()
        self.granted = False


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class WorkQueue:
    """``max_running`` jobs in worker threads, ``max_waiting`` more waiting in FIFO order.

    A slot belongs to the job's worker thread and is released when the thread finishes, whatever
    happened to the request meanwhile (client gone, timeout, cancellation). State is guarded by a
    threading lock so that release may run on any thread and with any event loop.
    """

    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.max_running = max(1, int(max_running))
        self.max_waiting = max(0, int(max_waiting))
        self.running = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(self.max_running, thread_name_prefix="clipcrop-worker")

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def full(self) -> bool:
        """True when a new job would be refused (every slot running and the queue full)."""
        return self.running >= self.max_running and len(self._waiters) >= self.max_waiting

    async def _acquire(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.running < self.max_running and not self._waiters:
                self.running += 1
                return
            if len(self._waiters) >= self.max_waiting:
                raise QueueFullError(
                    f"the service is busy ({self.running} running, {len(self._waiters)} waiting); "
                    "retry in a moment"
                )
            waiter = _Waiter(loop)
            self._waiters.append(waiter)
        try:
            await asyncio.wait({waiter.future}, timeout=timeout)
        except BaseException:  # cancelled (client gone, shutdown): a slot granted meanwhile goes on
            if self._settle(waiter):
                self._release()
            raise
        if not self._settle(waiter):
            raise RequestTimeoutError(f"no worker became free within {timeout:.0f} s")

    def _settle(self, waiter: _Waiter) -> bool:
        """True when ``waiter`` was granted a slot; otherwise take it out of the queue."""
        with self._lock:
            if waiter.granted:
                return True
            if waiter in self._waiters:  # absent when its loop was gone as a slot came free
                self._waiters.remove(waiter)
        waiter.future.cancel()
        return False

    def _release(self) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                try:
                    waiter.loop.call_soon_threadsafe(_wake, waiter.future)
                except RuntimeError:  # its event loop is gone: skip it
                    continue
                waiter.granted = True  # the slot passes to the waiter; running stays the same
                return
            self.running -= 1

    async def run(self, fn: Callable[[], T], timeout: float) -> T:
        """Run ``fn`` in a worker thread; QueueFullError / RequestTimeoutError as documented."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._acquire(timeout)
        acquired_at = time.perf_counter()

        def job() -> T:
            try:
                return fn()
            finally:
                self._release()

        try:
            future = loop.run_in_executor(self._executor, job)
        except BaseException:
            self._release()
            raise
        # an abandoned future (timeout, client gone) must not log "exception never retrieved"
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.001, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise RequestTimeoutError(
                f"the request took longer than {timeout:.0f} s "
                f"({time.perf_counter() - acquired_at:.1f} s of work)"
            ) from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
