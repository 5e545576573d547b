"""A virtual clock with an event queue: the simulator's only notion of time.

Events are ``(time, seq, callback, argument)`` entries in a heap; ``seq`` grows with every
schedule, so events at the same instant run in the order they were scheduled (deterministic,
no comparison of callbacks). The clock is callable and returns ``now``, so it can be handed
to :class:`backends.fakecloud.FakeCloud` as ``clock=`` and the cloud lives in the same time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any

Callback = Callable[[Any], None]


class SimClock:
    """Virtual time (Unix seconds) plus a queue of pending callbacks."""

    __slots__ = ("_queue", "_seq", "events_run", "now")

    def __init__(self, start: float) -> None:
        self.now = start
        self._queue: list[tuple[float, int, Callback, Any]] = []
        self._seq = 0
        self.events_run = 0

    def __call__(self) -> float:
        return self.now

    def __len__(self) -> int:
        return len(self._queue)

    def at(self, when: float, callback: Callback, arg: Any = None) -> None:
        """Run ``callback(arg)`` at ``when`` (not before ``now``)."""
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self.now), self._seq, callback, arg))

    def after(self, delay: float, callback: Callback, arg: Any = None) -> None:
        self.at(self.now + delay, callback, arg)

    def extend(self, events: Iterable[tuple[float, Callback, Any]]) -> None:
        """Schedule many events at once (one heapify instead of one push each)."""
        queue = self._queue
        for when, callback, arg in events:
            self._seq += 1
            queue.append((when, self._seq, callback, arg))
        heapq.heapify(queue)

    def run_until(self, end: float) -> None:
        """Run every event due at or before ``end``, in time order; then ``now = end``."""
        queue = self._queue
        pop = heapq.heappop
        run = 0
        while queue and queue[0][0] <= end:
            when, _seq, callback, arg = pop(queue)
            self.now = when
            callback(arg)
            run += 1
        self.events_run += run
        if end > self.now:
            self.now = end
