"""Worker threads for blocking backend calls, with the cheapest hand-off asyncio allows.

Why not ``loop.run_in_executor`` with a ThreadPoolExecutor: per call it takes a lock, builds
a concurrent Future and a work item, probes an idle-thread semaphore (a Python-level
Condition) and chains the concurrent Future to an asyncio one with more callbacks. With one
datapath call per ADD and per DEL, that was about a sixth of the event loop's time at 64
concurrent clients. Here a call is one asyncio future and one put on a C-level queue; the
worker resolves the future with one ``call_soon_threadsafe``.

A finished call does not wake the event loop once per call: workers append the outcome to a
deque and wake the loop (one ``call_soon_threadsafe``, a write to its self-pipe) only when
no wake-up is pending, and the loop resolves every outcome waiting then. At 64 concurrent
clients, calls finish in bursts, and each wake-up is two system calls and a pass of the
loop.

Threads start on demand, one more whenever every started thread is busy, up to ``count``.
:meth:`WorkerThreads.close` lets the calls already running finish and cancels the waiting
ones.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


_OK, _FAILED, _CANCELLED = range(3)


def _settle(future: asyncio.Future[Any], how: int, value: Any) -> None:
    if future.done():
        return
    if how == _OK:
        future.set_result(value)
    elif how == _FAILED:
        future.set_exception(value)
    else:
        future.cancel()


class WorkerThreads:
    """Up to ``count`` threads named ``<name>-<n>`` running blocking calls for one event
    loop's coroutines."""

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0  # calls submitted and not yet returned (event loop thread only)
        self._closed = False
        # Outcomes not yet given to their futures, and whether the loop was woken for them
        # (deque appends and pops, and the flag's reads and writes, are atomic).
        self._outcomes: collections.deque[tuple[asyncio.Future[Any], int, Any]] = (
            collections.deque()
        )
        self._woken = False

    @property
    def threads(self) -> int:
        return len(self._threads)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread; its result or exception. Cancelling the caller
        does not stop a call that is already running."""
        return await self.submit(fn, *args)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Start ``fn(*args)`` in a worker thread; the future of its result (no task: for
        a caller that does other work meanwhile)."""
        if self._closed:
            raise RuntimeError(f"{self._name} workers are closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._busy += 1
        future.add_done_callback(self._returned)
        if self._busy > len(self._threads) < self._count:
            self._start_thread()
        self._queue.put((loop, future, fn, args))
        return future

    def _returned(self, _future: asyncio.Future[Any]) -> None:
        self._busy -= 1

    def close(self) -> None:
        """No new calls; waiting ones are cancelled, running ones finish; threads exit."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._run_job(job)
            del job  # no reference to the call's arguments while waiting for the next

    def _run_job(self, job: _Job) -> None:
        loop, future, fn, args = job
        if self._closed:
            self._deliver(loop, future, _CANCELLED, None)
            return
        try:
            result = fn(*args)
        except BaseException as exc:
            self._deliver(loop, future, _FAILED, exc)
        else:
            self._deliver(loop, future, _OK, result)

    def _deliver(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], how: int, value: Any
    ) -> None:
        """In a worker: queue the outcome; wake the loop unless a wake-up is pending (the
        loop clears the flag before it takes the outcomes, so none is left behind)."""
        self._outcomes.append((future, how, value))
        if self._woken:
            return
        self._woken = True
        try:
            loop.call_soon_threadsafe(self._resolve, loop)
        except RuntimeError:
            self._woken = False  # the loop is closed: nobody waits any more

    def _resolve(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``: give every queued outcome to its future (one of another loop, as
        when tests run loops one after another, goes to its own loop)."""
        self._woken = False
        outcomes = self._outcomes
        while outcomes:
            future, how, value = outcomes.popleft()
            if future.get_loop() is loop:
                _settle(future, how, value)
            else:
                try:
                    future.get_loop().call_soon_threadsafe(_settle, future, how, value)
                except RuntimeError:
                    pass
