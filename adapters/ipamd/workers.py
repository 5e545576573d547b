"""Worker threads for blocking backend calls, with the cheapest hand-off asyncio allows.

Why not ``loop.run_in_executor`` with a ThreadPoolExecutor: per call it takes a lock, builds
a concurrent Future and a work item, probes an idle-thread semaphore (a Python-level
Condition) and chains the concurrent Future to an asyncio one with more callbacks. With one
datapath call per ADD and per DEL, that was about a sixth of the event loop's time at 64
concurrent clients. Here a call is one asyncio future and one put on a C-level queue; the
worker resolves the future with one ``call_soon_threadsafe``.

Threads start on demand, one more whenever every started thread is busy, up to ``count``.
:meth:`WorkerThreads.close` lets the calls already running finish and cancels the waiting
ones.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _cancel(future: asyncio.Future[Any]) -> None:
    future.cancel()


def _deliver(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass  # the loop is closed: nobody waits any more


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
            _deliver(loop, _cancel, future)
            return
        try:
            result = fn(*args)
        except BaseException as exc:
            _deliver(loop, _fail, future, exc)
        else:
            _deliver(loop, _succeed, future, result)
