"""The checkpoint store in memory, for tests and the simulator.

It keeps the *encoded* bytes, so every save/load is a real round trip through
:func:`ipamcore.checkpoint.encode` and :func:`~ipamcore.checkpoint.decode`. It follows the
file store's contract: no data -> ``None``; bytes that do not decode (set with
:meth:`MemoryCheckpointStore.put_raw`) are moved aside into :attr:`moved_aside` under a
label ``memory:corrupt-<timestamp>`` and :class:`CorruptCheckpoint` /
:class:`UnsupportedCheckpoint` is raised; the next load returns ``None``.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

from backends.checkpoint.errors import moved_aside_error
from backends.checkpoint.jsonfile import decode_file_bytes
from ipamcore.checkpoint import Checkpoint, encode
from ipamcore.errors import CheckpointError


class MemoryCheckpointStore:
    """:class:`ipamcore.ports.CheckpointStore` in memory.

    ``initial``: a checkpoint to start with (default none). ``clock``: Unix seconds, names
    the moved-aside entries. ``saves`` counts successful saves.
    """

    def __init__(
        self, initial: Checkpoint | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._data: bytes | None = None if initial is None else encode(initial)
        self._clock = clock
        self._fail_next: BaseException | None = None
        self.moved_aside: dict[str, bytes] = {}
        self.saves = 0

    @property
    def raw(self) -> bytes | None:
        """The stored bytes (None when there is no checkpoint)."""
        return self._data

    def put_raw(self, data: bytes | None) -> None:
        """Replace the stored bytes as they are (to simulate a corrupt or foreign file)."""
        self._data = data

    def fail_next_save(self, error: BaseException | None = None) -> None:
        """Make the next save raise ``error`` (default ``OSError(EIO)``), keeping the old data."""
        self._fail_next = error or OSError(errno.EIO, "injected checkpoint write failure")

    async def load(self) -> Checkpoint | None:
        if self._data is None:
            return None
        try:
            return decode_file_bytes(self._data)
        except CheckpointError as exc:
            base = f"memory:corrupt-{int(self._clock())}"
            label, n = base, 0
            while label in self.moved_aside:
                n += 1
                label = f"{base}.{n}"
            self.moved_aside[label] = self._data
            self._data = None
            raise moved_aside_error("memory", label, exc) from exc

    async def save(self, checkpoint: Checkpoint) -> None:
        data = encode(checkpoint)
        if self._fail_next is not None:
            error, self._fail_next = self._fail_next, None
            raise error
        self._data = data
        self.saves += 1
