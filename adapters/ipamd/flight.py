"""The flight recorder: every input the node got, with a digest of the commands it gave.

``<checkpoint dir>/flight.log`` holds JSON lines (:mod:`ipamcore.node.record`): the node's
configuration when the daemon starts, then one line per input (with its ``now``). When the
file passes ``IPAMD_FLIGHT_RECORDER_BYTES`` (2 MiB; 0: off) it becomes ``flight.log.1`` (the
previous one is dropped), so the recorder never holds more than twice that. ``ipamctl replay``
re-runs a record through the node and checks every command; ``ipamctl explain`` tells from
it why a pod waited or an ENI came or went. A record can be replayed from the daemon's start
while that start is still in the two files (a busy node rotates its start away after a day
or so at the default size; raise the size to keep more).

What it holds: what the node sees (requests with container ids and pod names as the
checkpoint has them, ENIs and addresses, netns paths, cloud outcomes); no credentials reach
the node. Lines are written on the event loop into a buffered file (flushed at every tick
and at stop): a crash loses at most the last few kilobytes.
"""

from __future__ import annotations

import contextlib
import os
from typing import IO

from ipamcore.node import NodeConfig, record
from ipamcore.node import commands as c
from ipamcore.node import inputs as i

FILE_NAME = "flight.log"


class FlightRecorder:
    """Appends the node's inputs to ``path``, rotating to ``path.1`` past ``max_bytes``."""

    def __init__(
        self, path: str, max_bytes: int, config: NodeConfig, wall_offset: float = 0.0
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._file: IO[str] | None = None
        self._size = 0
        self._open()
        self._write(record.config_line(config, wall_offset))

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._size = os.fstat(fd).st_size

    def _write(self, line: str) -> None:
        assert self._file is not None
        self._file.write(line + "\n")
        self._size += len(line) + 1
        if self._size > self.max_bytes:
            self._file.close()
            os.replace(self.path, self.path + ".1")
            self._open()

    def __call__(self, inp: i.Input, commands: list[c.Command]) -> None:
        if self._file is None:
            return
        self._write(record.input_line(inp, commands))
        if type(inp) is i.Tick:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def record_path(checkpoint_path: str) -> str:
    return os.path.join(os.path.dirname(checkpoint_path) or ".", FILE_NAME)
