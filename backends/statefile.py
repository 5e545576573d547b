"""Reading the daemon's own state files (checkpoint, legacy netns hints) defensively.

These files sit in the state directory, but what is at their path is not trusted: a
symbolic link (to a valid checkpoint elsewhere, say, which would then be trusted), a FIFO
(an open for reading blocks until a writer comes: the start hung, SIGTERM unanswered) or a
device (``/dev/zero`` is read until memory runs out). :func:`read_state_file` opens without
following a final symbolic link and without blocking, accepts only a regular file and
reads at most ``limit`` bytes.
"""

from __future__ import annotations

import errno
import os
import stat

CHUNK = 1 << 20


class UnsafeStateFile(OSError):
    """The path is a symbolic link, not a regular file, or larger than the limit."""


def read_state_file(path: str, limit: int) -> bytes:
    """The bytes of the regular file at ``path`` (FileNotFoundError when there is none);
    :class:`UnsafeStateFile` for anything else or more than ``limit`` bytes."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeStateFile(errno.ELOOP, "a symbolic link; refused", path) from None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):  # an operator's mistake, not input: the caller's error
            raise IsADirectoryError(errno.EISDIR, "a directory", path)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeStateFile(errno.EINVAL, "not a regular file; refused", path)
        if st.st_size > limit:
            raise UnsafeStateFile(errno.EFBIG, f"larger than {limit} bytes; refused", path)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(CHUNK, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise UnsafeStateFile(errno.EFBIG, f"larger than {limit} bytes; refused", path)
    finally:
        os.close(fd)
