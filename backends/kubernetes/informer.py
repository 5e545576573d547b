"""Reflectors and the cache: the node's view of the API server, kept by watches.

A :class:`Reflector` keeps one kind (the Node, the pods on the node, the ENIConfigs) in the
:class:`KubeCache`, as client-go's reflector does: LIST once, then WATCH from the list's
resourceVersion, moving that version forward with every event and every BOOKMARK. When a
watch ends (the server's timeout) or breaks (connection cut, 5xx, 429, the server gone for
minutes), the reflector watches again **from the last version it saw** after a backoff: no
LIST, so an API server that comes back is not met by every node relisting at once. Only a
410 Gone (the version was compacted away) makes it LIST again. Meanwhile the cache keeps
serving the last state it had.

Backoff is 0.5 s doubling to 30 s (``Retry-After`` of a 429 is honoured when longer), reset
once a watch delivers anything, each wait shortened by up to half by a fraction fixed per node
(:class:`Backoff`); every wait goes through the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Callable
from typing import Protocol

import attrs

from backends.kubernetes import logs
from ipamcore.kube import (
    EniConfig,
    KubeApiPort,
    KubeError,
    KubeFailure,
    KubeObject,
    NodeInfo,
    PodInfo,
    ResourceKind,
    Selector,
    WatchType,
)


class Clock(Protocol):
    """``adapters.ipamd.clock.SystemClock`` and ``VirtualClock`` have this shape."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@attrs.frozen
class Backoff:
    """``base_s`` doubling to ``cap_s``. With ``jitter`` J > 0 each wait is shortened by up
    to J of itself, by a fraction fixed by ``seed`` (the node's name) and the attempt: after
    an API server outage a fleet's nodes, which all lost it at once, do not all come back in
    the same instant (client-go jitters its reflectors' backoff too; a hash instead of
    randomness keeps runs reproducible)."""

    base_s: float = 0.5
    cap_s: float = 30.0
    jitter: float = 0.0
    seed: str = ""

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before retry number ``attempt`` (0-based)."""
        delay = float(min(self.cap_s, self.base_s * 2 ** min(attempt, 30)))
        if self.jitter > 0:
            frac = zlib.crc32(f"{self.seed}/{attempt}".encode()) / 0xFFFFFFFF
            delay *= 1.0 - self.jitter * frac
        return max(delay, min(retry_after, self.cap_s * 4)) if retry_after else delay


@attrs.frozen
class CacheChange:
    """What a watch changed in the cache (``obj`` is the new state, or the last one for
    DELETED)."""

    kind: ResourceKind
    type: WatchType | str
    obj: KubeObject


def key_of(obj: KubeObject) -> tuple[str, str]:
    if isinstance(obj, PodInfo):
        return obj.key
    return ("", obj.name)


class KubeCache:
    """The last known objects by kind; listeners hear every change."""

    def __init__(self) -> None:
        self._objects: dict[ResourceKind, dict[tuple[str, str], KubeObject]] = {
            "node": {},
            "pod": {},
            "eniconfig": {},
        }
        self.listeners: list[Callable[[CacheChange], None]] = []

    def replace(self, kind: ResourceKind, items: tuple[KubeObject, ...]) -> None:
        """A LIST: the kind's objects become ``items``; differences are told as changes."""
        old = self._objects[kind]
        new = {key_of(o): o for o in items}
        self._objects[kind] = new
        for key, obj in old.items():
            if key not in new:
                self._tell(CacheChange(kind, "DELETED", obj))
        for key, obj in new.items():
            before = old.get(key)
            if before is None:
                self._tell(CacheChange(kind, "ADDED", obj))
            elif before != obj:
                self._tell(CacheChange(kind, "MODIFIED", obj))

    def apply(self, kind: ResourceKind, type_: WatchType, obj: KubeObject) -> None:
        key = key_of(obj)
        if type_ == "DELETED":
            self._objects[kind].pop(key, None)
        else:
            self._objects[kind][key] = obj
        self._tell(CacheChange(kind, type_, obj))

    def _tell(self, change: CacheChange) -> None:
        for listener in list(self.listeners):
            listener(change)

    def objects(self, kind: ResourceKind) -> tuple[KubeObject, ...]:
        return tuple(self._objects[kind].values())

    def get(self, kind: ResourceKind, name: str, namespace: str = "") -> KubeObject | None:
        return self._objects[kind].get((namespace, name))

    def node(self) -> NodeInfo | None:
        nodes = self.objects("node")
        return nodes[0] if nodes and isinstance(nodes[0], NodeInfo) else None

    def eniconfig(self, name: str) -> EniConfig | None:
        obj = self.get("eniconfig", name)
        return obj if isinstance(obj, EniConfig) else None

    def pods(self) -> tuple[PodInfo, ...]:
        return tuple(o for o in self.objects("pod") if isinstance(o, PodInfo))

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        obj = self.get("pod", name, namespace)
        return obj if isinstance(obj, PodInfo) else None


@attrs.define
class ReflectorStats:
    lists: int = 0
    watches: int = 0
    errors: int = 0
    expired: int = 0
    events: int = 0
    bookmarks: int = 0


class Reflector:
    """LIST then WATCH one kind into the cache, forever (until :meth:`stop`)."""

    def __init__(
        self,
        api: KubeApiPort,
        cache: KubeCache,
        kind: ResourceKind,
        clock: Clock,
        selector: Selector = Selector(),
        backoff: Backoff = Backoff(),
        watch_timeout_s: int = 300,
    ) -> None:
        self.api, self.cache, self.kind, self.clock = api, cache, kind, clock
        self.selector, self.backoff, self.watch_timeout_s = selector, backoff, watch_timeout_s
        self.resource_version = ""  # "" until listed
        self.synced = asyncio.Event()
        self.connected = False
        self.last_error: KubeError | None = None
        self.stats = ReflectorStats()
        self._stopped = False
        self._delivered = False

    def stop(self) -> None:
        self._stopped = True

    async def run(self) -> None:
        attempt = 0
        while not self._stopped:
            listed = False  # a LIST just now and nothing watched since
            self._delivered = False
            try:
                if not self.resource_version:
                    await self._list()
                    listed = True
                if await self._watch():
                    attempt = 0
                else:  # a stream that ended empty: do not spin on a server doing that
                    await self.clock.sleep(self.backoff.delay(attempt))
                    attempt += 1
            except KubeError as e:
                self.connected = False
                self.last_error = e
                if self._delivered:  # the watch worked before it broke: start over
                    attempt = 0
                if e.kind is KubeFailure.EXPIRED:
                    self.stats.expired += 1
                    logs.log.info("kube_watch_expired", kind=self.kind, rv=self.resource_version)
                    self.resource_version = ""
                    if not (listed and not self._delivered):
                        continue  # relist at once, as client-go does
                    # expired right after a list: a confused server; back off below
                self.stats.errors += 1
                delay = self.backoff.delay(attempt, e.retry_after)
                attempt += 1
                logs.log.warning(
                    "kube_watch_failed", kind=self.kind, error=str(e), retry_in_s=delay
                )
                await self.clock.sleep(delay)

    async def _list(self) -> None:
        self.stats.lists += 1
        listing = await self.api.list(self.kind, self.selector)
        self.cache.replace(self.kind, listing.items)
        self.resource_version = listing.resource_version
        self.connected = True
        self.synced.set()

    async def _watch(self) -> bool:
        """One watch stream until it ends; whether it delivered anything."""
        self.stats.watches += 1
        delivered = False
        self._delivered = False
        stream = self.api.watch(
            self.kind, self.resource_version, self.selector, self.watch_timeout_s
        )
        try:
            async for event in stream:
                delivered = self._delivered = True
                self.connected = True
                if event.resource_version:
                    self.resource_version = event.resource_version
                if event.type == "BOOKMARK":
                    self.stats.bookmarks += 1
                    continue
                if event.obj is not None:
                    self.stats.events += 1
                    self.cache.apply(self.kind, event.type, event.obj)
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
        return delivered
