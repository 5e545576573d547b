"""Time for the daemon: every timer goes through a Clock so tests run in virtual time.

``now()`` is Unix seconds (wall time: only for what is persisted or shown); ``monotonic()``
never steps (the node's ``now``: deadlines, cooldowns, timers); ``sleep(s)`` waits ``s``
seconds of the monotonic clock. :class:`SystemClock` is real time; :class:`VirtualClock` only
moves when a test calls :meth:`VirtualClock.advance`, so the node's timers (pool policy,
reconciliation, leaked ENIs) are tested without sleeping for real, and its wall clock steps
alone on :meth:`VirtualClock.step_wall`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time and asyncio's sleep."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """A clock that moves only on :meth:`advance`; sleepers wake when their time is reached.
    :meth:`step_wall` steps the wall clock alone (an NTP correction, an operator's date)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now + self._wall_offset

    def monotonic(self) -> float:
        return self._now

    def step_wall(self, seconds: float) -> None:
        """Move the wall clock by ``seconds`` (either way); monotonic time does not move."""
        self._wall_offset += seconds

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    @property
    def next_deadline(self) -> float | None:
        """When the earliest pending sleeper wakes (None: nobody sleeps), so a driver can
        stop exactly there and let woken work finish before time moves on."""
        pending = [d for d, _, f in self._sleepers if not f.done()]
        return min(pending) if pending else None

    async def advance(self, seconds: float, settle: int = 20) -> None:
        """Move time forward by ``seconds``, waking sleepers in deadline order; between
        wake-ups let the loop run ``settle`` rounds so woken tasks do their work."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
                await settle_loop(settle)
        self._now = target
        await settle_loop(settle)


async def settle_loop(rounds: int = 20) -> None:
    """Let other tasks run ``rounds`` times (and worker-thread results come back)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def race_timeout(clock: Clock, awaitable: Awaitable[T], seconds: float) -> T | None:
    """``awaitable``'s result, or None when ``seconds`` of ``clock`` pass first."""
    task = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
    if task.done():
        return task.result()
    task.cancel()
    return None
