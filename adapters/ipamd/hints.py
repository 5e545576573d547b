"""Netns hints: which network namespace each allocation's pod lives in.

The checkpoint (upstream's ``ipam.json`` format) does not record a pod's netns path, but the
restore at start must ask the datapath whether the pod's netns and host veth still exist. So
the daemon keeps ``<checkpoint>.netns`` next to it: a JSON object ``{"<network>/<container>/
<ifname>": "/var/run/netns/cni-..."}``, written atomically (temp + rename, no fsync: it is a
hint) in the same commit batch as the checkpoint. An allocation without a hint is kept at
restore (keeping a dead pod's address leaks one address until GC; dropping a live pod's
address would hand it out twice).
"""

from __future__ import annotations

import asyncio
import json
import os

from adapters.validators import ProtocolError, validate_netns
from ipamcore.model import AllocationKey


class NetnsHints:
    def __init__(self, path: str) -> None:
        self.path = path
        self._map: dict[str, str] = {}
        self._dirty = False

    def get(self, key: AllocationKey) -> str | None:
        return self._map.get(str(key))

    def remember(self, key: AllocationKey, netns: str) -> None:
        if netns and self._map.get(str(key)) != netns:
            self._map[str(key)] = netns
            self._dirty = True

    def forget(self, key: AllocationKey) -> None:
        if self._map.pop(str(key), None) is not None:
            self._dirty = True

    def retain(self, keys: set[str]) -> None:
        """Drop hints of allocations that no longer exist."""
        for k in [k for k in self._map if k not in keys]:
            del self._map[k]
            self._dirty = True

    def load(self) -> None:
        """Read the file; a missing or unreadable one means no hints (logged by the caller).
        Temporary files an earlier process left (killed mid-write) are removed."""
        _remove_stale_temps(self.path)
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError, RecursionError):
            return
        if isinstance(doc, dict):
            self._map = {k: v for k, v in doc.items() if isinstance(k, str) and _netns_ok(v)}

    async def save_if_changed(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        data = json.dumps(self._map, separators=(",", ":")).encode()
        try:
            await asyncio.to_thread(_write_atomic, self.path, data)
        except OSError:
            self._dirty = True


def _remove_stale_temps(path: str) -> None:
    directory, prefix = os.path.dirname(path) or ".", os.path.basename(path) + ".tmp-"
    mine = f"{prefix}{os.getpid()}"
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and name != mine:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _netns_ok(value: object) -> bool:
    """A hint is used as a netns path: only one the socket would have accepted is kept."""
    try:
        validate_netns(value)
    except ProtocolError:
        return False
    return True
