"""Sysctls the node needs, and an injectable writer (real /proc/sys, in a chosen netns).

Keys are slash paths under /proc/sys (``net/ipv4/ip_forward``) so interface names with dots
(``eth0.100``) stay unambiguous.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from backends.datapath.netns import open_netns, run_in_netns

SysctlWriter = Callable[[str, str], None]

IP_FORWARD = "net/ipv4/ip_forward"
RP_FILTER_LOOSE = "2"


def node_sysctls(primary_interface: str | None, ipv6: bool = False) -> list[tuple[str, str]]:
    """Upstream's node settings: forwarding on, loose reverse-path filter on the primary ENI
    (return traffic of pods on secondary ENIs arrives on the primary); with IPv6, IPv6 on,
    forwarding on, and router advertisements still accepted on the primary interface
    (``accept_ra=2``: forwarding would otherwise turn them off, and the default route
    with them)."""
    settings = [(IP_FORWARD, "1")]
    if primary_interface is not None:
        settings.append((f"net/ipv4/conf/{primary_interface}/rp_filter", RP_FILTER_LOOSE))
    if ipv6:
        settings += [("net/ipv6/conf/all/disable_ipv6", "0"), ("net/ipv6/conf/all/forwarding", "1")]
        if primary_interface is not None:
            settings.append((f"net/ipv6/conf/{primary_interface}/accept_ra", "2"))
    return settings


class ProcSysctlWriter:
    """Writes /proc/sys/<key>; with ``netns_path``, inside that namespace (per-netns keys
    under net/ resolve against the writing thread's namespace)."""

    def __init__(self, netns_path: str | None = None) -> None:
        self.netns_path = netns_path

    def __call__(self, key: str, value: str) -> None:
        path = os.path.join("/proc/sys", key)

        def write() -> None:
            # a value already in place is not written again: the aws-node container's
            # /proc/sys is read-only (its init container, privileged, sets these first)
            try:
                with open(path) as f:
                    if f.read().strip() == value:
                        return
            except OSError:
                pass
            with open(path, "w") as f:
                f.write(value)

        if self.netns_path is None:
            write()
            return
        fd = open_netns(self.netns_path)
        try:
            run_in_netns(fd, write)
        finally:
            os.close(fd)

    def read(self, key: str) -> str:
        path = os.path.join("/proc/sys", key)

        def read() -> str:
            with open(path) as f:
                return f.read().strip()

        if self.netns_path is None:
            return read()
        fd = open_netns(self.netns_path)
        try:
            return run_in_netns(fd, read)
        finally:
            os.close(fd)


class RecordingSysctlWriter:
    """Keeps the values in a dict instead of touching the host (tests, dry runs)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def __call__(self, key: str, value: str) -> None:
        self.values[key] = value
