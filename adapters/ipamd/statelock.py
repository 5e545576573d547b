"""One daemon per state directory: an exclusive ``flock`` on ``ipamd.lock`` there.

A second daemon started on the same directory (a second container, a manual run next to
the DaemonSet's) used to unlink the first one's live socket and rewrite its checkpoint: the
first became unreachable while its pods still held their addresses. The lock is taken before
anything in the directory is read or written; the kernel drops it when the process exits,
however it exits, so a crash never leaves it held.
"""

from __future__ import annotations

import fcntl
import os

LOCK_NAME = "ipamd.lock"


class StateDirLocked(RuntimeError):
    """Another process holds the state directory's lock."""


def lock_state_dir(directory: str) -> int:
    """Take the lock (creating the directory, mode 0700, if needed); returns the lock's file
    descriptor, to keep open for the life of the process. StateDirLocked when it is held."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, LOCK_NAME)
    # Read-only: a descriptor open for writing would keep the filesystem from being
    # remounted read-only (an operator's fix, or a test's fault).
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateDirLocked(f"another ipamd holds {path}; not starting") from None
    except BaseException:
        os.close(fd)
        raise
    return fd
