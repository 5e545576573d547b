"""Network namespaces by path, never created: fds, sockets and code run inside one.

``setns(2)`` with ``CLONE_NEWNET`` changes the namespace of the *calling thread* only, so
everything here runs the namespaced part in a short-lived helper thread which exits
afterwards: the caller's thread (e.g. an ``asyncio.to_thread`` worker) never changes
namespace, and concurrent callers do not interfere.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from pyroute2 import IPRoute  # type: ignore[import-untyped]

from backends.datapath.errors import DatapathError, NetnsNotFound, NotANetns

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


# /proc/<pid>/ns/net (or a thread's): a "magic" link into nsfs, the one link followed.
_PROC_NS = re.compile(r"/proc/[0-9]+(/task/[0-9]+)?/ns/net")
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3): the namespace type of an nsfs file


def open_netns(path: str) -> int:
    """Open the network namespace at ``path`` (never created): NetnsNotFound when missing,
    NotANetns for anything that is not one. Caller closes.

    ``path`` comes from outside (CNI_NETNS): a symlink is not followed (except the
    kernel's own /proc/<pid>/ns/net), the open never blocks (O_NONBLOCK: a FIFO does
    not hang it), and the file must be an nsfs file of type CLONE_NEWNET (ioctl
    NS_GET_NSTYPE) before anything uses it."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    if not _PROC_NS.fullmatch(path):
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise NetnsNotFound(path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotANetns(f"netns {path!r} is a symbolic link; refused") from None
        raise DatapathError(f"cannot open netns {path!r}: {exc}") from exc
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        nstype = None
    if nstype != CLONE_NEWNET:
        os.close(fd)
        raise NotANetns(f"{path!r} is not a network namespace; refused")
    return fd


def netns_exists(path: str) -> bool:
    return os.path.exists(path)


def run_in_netns(fd: int | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a helper thread that entered the netns ``fd`` (None: call directly)."""
    if fd is None:
        return fn()
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                if err == errno.EINVAL:
                    raise DatapathError("not a network namespace")
                raise OSError(err, os.strerror(err))
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=body, name="netns-helper", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _rtnl_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)


@contextlib.contextmanager
def iproute(fd: int | None) -> Iterator[IPRoute]:
    """A synchronous pyroute2 ``IPRoute`` bound to the netns ``fd`` (None: our own netns).

    The socket is created inside the namespace by a helper thread and handed to pyroute2
    by file number, so pyroute2 neither forks nor creates a namespace. The ``IPRoute`` owns
    a private event loop: use it only from a thread without a running loop.
    """
    sock = run_in_netns(fd, _rtnl_socket)
    ipr = IPRoute(fileno=sock.detach())
    try:
        yield ipr
    finally:
        ipr.close()
