"""Crash points: a step hook that kills the process (SIGKILL) at a named step.

The crash-injection tests stop the daemon between two steps of a checkpoint write or of an
ENI creation (:mod:`backends.steps`), deterministically: the daemon is started as
``python -m tests.rigs.crashpoints`` (the real ``vpc-ipamd`` with this hook) and
``IPAMD_CRASH_POINT=<step>`` or ``<step>:<n>`` (the n-th time that step is reached, default
the first) and kills itself there, exactly as a power cut or the OOM killer would. Without
the setting the hook is :func:`backends.steps.no_step`. A test rig: it does not ship.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from backends.steps import (
    CHECKPOINT_STEPS,
    ENI_STEPS,
    JOURNAL_STEPS,
    STEPS,
    Step,
    no_step,
)

__all__ = [
    "CHECKPOINT_STEPS", "ENI_STEPS", "JOURNAL_STEPS", "STEPS", "CrashPoint", "parse_crash_point"
]

SETTING = "IPAMD_CRASH_POINT"


class CrashPoint:
    """A :data:`~backends.steps.Step` that SIGKILLs this process the ``hit``-th time ``name``
    is reached."""

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


def step_from_env(env: dict[str, str]) -> Step:
    """The hook ``IPAMD_CRASH_POINT`` in ``env`` asks for (no setting: no hook)."""
    raw = env.get(SETTING, "")
    return parse_crash_point(raw) if raw else no_step


def main() -> int:
    """``vpc-ipamd`` with the crash point of ``IPAMD_CRASH_POINT`` (exit 2 if it is bad)."""
    from adapters.ipamd.main import main as ipamd_main

    try:
        step = step_from_env(dict(os.environ))
    except ValueError as exc:
        print(f"vpc-ipamd: bad setting: {SETTING}: {exc}", file=sys.stderr)
        return 2
    return ipamd_main(step=step)


if __name__ == "__main__":
    sys.exit(main())
