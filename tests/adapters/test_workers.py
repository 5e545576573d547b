"""WorkerThreads: blocking calls off the event loop, results and errors back, bounded threads,
and a close that cancels what has not started. Threads are synchronised with events, not
sleeps."""

from __future__ import annotations

import asyncio
import threading

import pytest

from adapters.ipamd.workers import WorkerThreads


async def test_result_and_exception_come_back_from_a_worker_thread() -> None:
    workers = WorkerThreads(2, "t")
    try:
        name = await workers.run(lambda: threading.current_thread().name)
        assert name == "t-0"
        assert await workers.run(divmod, 7, 2) == (3, 1)
        with pytest.raises(ZeroDivisionError):
            await workers.run(divmod, 1, 0)
    finally:
        workers.close()


async def test_concurrent_calls_run_in_parallel_up_to_the_limit() -> None:
    workers = WorkerThreads(3, "t")
    release = threading.Event()
    started = threading.Semaphore(0)

    def block(n: int) -> int:
        started.release()
        release.wait(10)
        return n

    try:
        calls = [asyncio.ensure_future(workers.run(block, n)) for n in range(5)]
        for _ in range(3):  # three run at once: each is in its own thread
            assert await asyncio.to_thread(started.acquire, True, 10)
        assert workers.threads == 3
        assert not any(c.done() for c in calls)
        release.set()
        assert await asyncio.gather(*calls) == [0, 1, 2, 3, 4]
        assert workers.threads == 3  # never more than the limit
    finally:
        workers.close()


async def test_sequential_calls_reuse_one_thread() -> None:
    workers = WorkerThreads(8, "t")
    try:
        for n in range(20):
            assert await workers.run(abs, -n) == n
        assert workers.threads == 1
    finally:
        workers.close()


async def test_close_cancels_waiting_calls_and_refuses_new_ones() -> None:
    workers = WorkerThreads(1, "t")
    running = threading.Event()
    release = threading.Event()

    def block() -> str:
        running.set()
        release.wait(10)
        return "finished"

    first = asyncio.ensure_future(workers.run(block))
    await asyncio.to_thread(running.wait, 10)
    waiting = asyncio.ensure_future(workers.run(abs, -1))
    await asyncio.sleep(0)  # queued behind the running call
    workers.close()
    release.set()
    assert await first == "finished"  # a running call completes
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(RuntimeError, match="closed"):
        await workers.run(abs, -1)


async def test_a_cancelled_caller_does_not_break_the_worker() -> None:
    workers = WorkerThreads(1, "t")
    running = threading.Event()
    release = threading.Event()

    def block() -> None:
        running.set()
        release.wait(10)

    try:
        call = asyncio.ensure_future(workers.run(block))
        await asyncio.to_thread(running.wait, 10)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        release.set()
        assert await workers.run(abs, -5) == 5  # the worker delivered to a done future quietly
    finally:
        workers.close()


async def test_submit_returns_the_future_at_once() -> None:
    workers = WorkerThreads(1, "t")
    release = threading.Event()
    try:
        future = workers.submit(release.wait, 10)
        assert isinstance(future, asyncio.Future) and not future.done()
        release.set()  # the caller went on with other work meanwhile
        assert await future is True
        assert await workers.submit(divmod, 7, 2) == (3, 1)
        assert workers.threads == 1
    finally:
        workers.close()
