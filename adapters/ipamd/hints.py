"""Netns hints: which network namespace each allocation's pod lives in.

The restore at start must ask the datapath whether each pod's netns and host veth still
exist, so the daemon remembers the netns path an ADD named. The paths travel in the
checkpoint itself (an extra ``"netns"`` field of each allocation, which upstream's reader
ignores; :mod:`ipamcore.checkpoint`), so they are durable in the same write as the
allocations, at no cost of their own.

Earlier versions of this daemon kept them in a side file, ``<checkpoint>.netns`` (a JSON
object ``{"<network>/<container>/<ifname>": "/var/run/netns/cni-..."}``, written by temp and
rename without fsync). Writing it cost each commit batch a second file write, rename and
thread hop (about a third of one client's ADD on this project's disk). At start the side
file is still read, for a node upgraded from such a version, then removed once a checkpoint
carries the paths; paths from the checkpoint win.

An allocation without a hint is kept at restore (keeping a dead pod's address leaks one
address until GC; dropping a live pod's address would hand it out twice). Only paths the
socket would have accepted are kept (the checkpoint and the side file are input too).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable

from adapters.validators import ProtocolError, validate_netns
from backends.statefile import read_state_file
from ipamcore.model import AllocationKey

MAX_LEGACY_BYTES = 16 * 1024 * 1024


class NetnsHints:
    """The netns path of each allocation's pod, by allocation key. ``legacy_path`` is the
    side file of earlier versions (read at start, removed by :meth:`drop_legacy_file`)."""

    def __init__(self, legacy_path: str) -> None:
        self.legacy_path = legacy_path
        self._map: dict[AllocationKey, str] = {}

    def get(self, key: AllocationKey) -> str | None:
        return self._map.get(key)

    def remember(self, key: AllocationKey, netns: str) -> None:
        if netns:
            self._map[key] = netns

    def forget(self, key: AllocationKey) -> None:
        self._map.pop(key, None)

    def retain(self, keys: set[AllocationKey]) -> None:
        """Drop hints of allocations that no longer exist."""
        for k in [k for k in self._map if k not in keys]:
            del self._map[k]

    def pairs(self) -> tuple[tuple[AllocationKey, str], ...]:
        """What the next checkpoint carries."""
        return tuple(self._map.items())

    def adopt(self, pairs: Iterable[tuple[AllocationKey, str]]) -> None:
        """Take the paths a checkpoint carried (over any the side file gave)."""
        for key, netns in pairs:
            if _netns_ok(netns):
                self._map[key] = netns

    def load_legacy(self) -> bool:
        """Read the side file of an earlier version, if there is one (True); a missing or
        unreadable one means no hints. Temporary files a killed process left are removed."""
        _remove_stale_temps(self.legacy_path)
        try:
            doc = json.loads(read_state_file(self.legacy_path, MAX_LEGACY_BYTES))
        except FileNotFoundError:
            return False
        except (OSError, ValueError, RecursionError):  # a link, FIFO, device... too: ignored
            return True
        if isinstance(doc, dict):
            for name, netns in doc.items():
                key = _key(name)
                if key is not None and _netns_ok(netns):
                    self._map[key] = netns
        return True

    def drop_legacy_file(self) -> None:
        """Remove the side file (call once a checkpoint carrying the paths is durable)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.legacy_path)


def _key(name: object) -> AllocationKey | None:
    """``network/container/ifname`` (the side file's keys) -> AllocationKey."""
    if not isinstance(name, str):
        return None
    parts = name.split("/")
    if len(parts) != 3:
        return None
    return AllocationKey(*parts)


def _remove_stale_temps(path: str) -> None:
    directory, prefix = os.path.dirname(path) or ".", os.path.basename(path) + ".tmp-"
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def _netns_ok(value: object) -> bool:
    """A hint is used as a netns path: only one the socket would have accepted is kept."""
    try:
        validate_netns(value)
    except ProtocolError:
        return False
    return True
