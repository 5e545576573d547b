"""Crash points: a test hook that kills the process (SIGKILL) at a named step.

The crash-injection tests stop the daemon between two steps of a checkpoint write or of an
ENI creation, deterministically: the daemon is started with ``IPAMD_CRASH_POINT=<step>`` or
``<step>:<n>`` (the n-th time that step is reached, default the first) and kills itself
there, exactly as a power cut or the OOM killer would. Backends take a :data:`Step` callable
and call it after each step; without the setting it is :func:`no_step`, which does nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

# The steps of JsonFileCheckpointStore.save, in order.
CHECKPOINT_STEPS = (
    "checkpoint.temp-created",  # the temporary file exists, empty
    "checkpoint.temp-written",  # every byte written, not yet fsynced
    "checkpoint.temp-fsynced",  # the temporary file is durable, not yet renamed
    "checkpoint.renamed",  # renamed over the checkpoint, directory not yet fsynced
    "checkpoint.dir-fsynced",  # durable; the caller has not been told yet
)
# The steps of an ENI creation, in order (Ec2Backend.create_eni, then the agent).
ENI_STEPS = (
    "eni.created",  # CreateNetworkInterface done (tags are part of that call): not attached
    "eni.attached",  # AttachNetworkInterface done; DeleteOnTermination not yet set
    "eni.configured",  # DeleteOnTermination set (or not asked for); the agent has not heard
    "eni.recorded",  # the core applied EniCreated and the datapath set the ENI up
)
STEPS = CHECKPOINT_STEPS + ENI_STEPS

Step = Callable[[str], None]


def no_step(_name: str) -> None:
    """The hook when no crash point is set."""


class CrashPoint:
    """A :data:`Step` that SIGKILLs this process the ``hit``-th time ``name`` is reached."""

    def __init__(self, name: str, hit: int = 1) -> None:
        if name not in STEPS:
            raise ValueError(f"unknown crash point {name!r}; known: {', '.join(STEPS)}")
        if hit < 1:
            raise ValueError(f"crash point hit must be >= 1, got {hit}")
        self.name = name
        self.hit = hit
        self._seen = 0
        self._lock = threading.Lock()

    def __call__(self, name: str) -> None:
        if name != self.name:
            return
        with self._lock:
            self._seen += 1
            if self._seen == self.hit:
                os.kill(os.getpid(), signal.SIGKILL)


def parse_crash_point(text: str) -> CrashPoint:
    """``step`` or ``step:n`` -> CrashPoint; ValueError naming what is accepted."""
    name, sep, count = text.partition(":")
    if sep and not count.isdigit():
        raise ValueError(f"crash point hit must be a positive integer, got {count!r}")
    return CrashPoint(name, int(count) if sep else 1)
