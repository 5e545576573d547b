"""Read a state file the daemon trusts only if it is what it should be.

One small helper (so a shared one can replace it): the file is opened without following a
symbolic link (``O_NOFOLLOW``) and without blocking (``O_NONBLOCK``: a FIFO never stalls the
start), must be a regular file (``fstat``), and at most ``limit`` bytes are read (a larger
file is refused, never read until memory runs out). The caller decides what "in the state
directory" means by the path it passes (the stores join their own directory and name).
"""

from __future__ import annotations

import errno
import os
import stat

MAX_STATE_FILE = 256 * 1024 * 1024


class UnsafeStateFile(OSError):
    """The path is not a regular file, is a symbolic link, or is larger than allowed."""


def read_regular_file(path: str, limit: int = MAX_STATE_FILE) -> bytes | None:
    """The bytes of ``path``; ``None`` when it does not exist; :class:`UnsafeStateFile`
    for a link, a device, a FIFO, a directory or a file over ``limit`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeStateFile(errno.ELOOP, "refusing a symbolic link", path) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeStateFile(errno.EINVAL, "not a regular file", path)
        if info.st_size > limit:
            raise UnsafeStateFile(errno.EFBIG, f"larger than {limit} bytes", path)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise UnsafeStateFile(errno.EFBIG, f"larger than {limit} bytes", path)
        return b"".join(chunks)
    finally:
        os.close(fd)
