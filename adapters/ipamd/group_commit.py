"""Group commit of the checkpoint: many requests in flight share one durable write.

A request that changed the pool calls :meth:`GroupCommitter.commit` and awaits it. The
committer's writer task takes one snapshot (``Ipam.checkpoint()``, on the event loop, so
after every mutation of the requests that joined the batch), saves it once and resolves
every waiter of that batch. Requests arriving while a save is running join the next batch.
So N concurrent ADDs cost about two fsyncs, not N, and each ADD still replies only after a
checkpoint containing its allocation is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ipamcore.checkpoint import Checkpoint
from ipamcore.ports import CheckpointStore


class GroupCommitter:
    """Batches checkpoint saves; ``saves`` counts completed writes (tests, metrics)."""

    def __init__(self, store: CheckpointStore, snapshot: Callable[[], Checkpoint]) -> None:
        self._store = store
        self._snapshot = snapshot
        self._next: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.saves = 0
        self.commits = 0

    async def commit(self) -> None:
        """Return once a checkpoint taken after this call is durable (raise if that save
        failed)."""
        self.commits += 1
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        batch = self._next
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches())
        await asyncio.shield(batch)

    async def _write_batches(self) -> None:
        while self._next is not None:
            batch, self._next = self._next, None
            try:
                await self._store.save(self._snapshot())
            except Exception as exc:
                if not batch.done():
                    batch.set_exception(exc)
                    batch.exception()  # retrieved here: a waiter may have been cancelled
            else:
                self.saves += 1
                if not batch.done():
                    batch.set_result(None)

    async def flush(self) -> None:
        """A final durable save of the current state (at stop)."""
        await self.commit()
        if self._writer is not None:
            await asyncio.shield(self._writer)
