"""Reflectors and KubeWatcher against an in-memory API in virtual time (no network, no sleeps).

The in-memory :class:`MemoryApi` keeps objects with a resourceVersion counter and a change
log, as the API server does; tests break it (errors, 410, throttling) and move the virtual
clock to check the backoff and that a broken watch resumes from its version without a LIST.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.ipamd.clock import VirtualClock, settle_loop
from backends.kubernetes.informer import Backoff, KubeCache, Reflector
from backends.kubernetes.settings import KubeSettings
from backends.kubernetes.watcher import KubeWatcher
from ipamcore.kube import (
    POD_IPS_ANNOTATION,
    CniNode,
    CniNodeFeature,
    EniConfig,
    EniConfigSpec,
    KubeError,
    KubeEvent,
    KubeFailure,
    KubeObject,
    Listing,
    NodeInfo,
    ObjectRef,
    PodInfo,
    ResourceKind,
    Selector,
    WatchEvent,
)


def kind_of(obj: KubeObject) -> ResourceKind:
    return {NodeInfo: "node", PodInfo: "pod", EniConfig: "eniconfig"}[type(obj)]  # type: ignore[return-value]


def with_rv(obj: Any, rv: int) -> Any:
    import attrs

    return attrs.evolve(obj, resource_version=str(rv))


class MemoryApi:
    """A KubeApiPort in memory; watches are queues fed by every change."""

    def __init__(self) -> None:
        self.rv = 100
        self.compacted = 100
        self.objects: dict[tuple[ResourceKind, str, str], Any] = {}
        self.log: list[tuple[int, ResourceKind, str, Any]] = []
        self.watchers: list[tuple[ResourceKind, asyncio.Queue[Any]]] = []
        self.calls: list[str] = []
        self.fail_next: list[KubeError] = []  # raised by the next list/watch calls
        self.down = False
        self.cninode = CniNode("n1", (), "1")
        self.events: list[tuple[KubeEvent, ObjectRef]] = []
        self.conflicts = 0  # the next N pod patches get 409

    # test side
    def put(self, obj: Any, type_: str = "") -> Any:
        self.rv += 1
        obj = with_rv(obj, self.rv)
        kind = kind_of(obj)
        key = (kind, getattr(obj, "namespace", ""), obj.name)
        type_ = type_ or ("MODIFIED" if key in self.objects else "ADDED")
        if type_ == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.log.append((self.rv, kind, type_, obj))
        for k, q in self.watchers:
            if k == kind:
                q.put_nowait(WatchEvent(type_, str(self.rv), obj))  # type: ignore[arg-type]
        return obj

    def cut_watches(self, error: KubeError | None = None) -> None:
        for _, q in self.watchers:
            q.put_nowait(error or KubeError(KubeFailure.UNAVAILABLE, "cut"))
        self.watchers.clear()

    def bookmark(self) -> None:
        for _, q in self.watchers:
            q.put_nowait(WatchEvent("BOOKMARK", str(self.rv)))

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise KubeError(KubeFailure.UNAVAILABLE, "down")
        if self.fail_next:
            raise self.fail_next.pop(0)

    # port side
    async def list(self, kind: ResourceKind, selector: Selector = Selector()) -> Listing:
        self._check(f"list {kind}")
        items = tuple(o for (k, _, _), o in self.objects.items() if k == kind)
        return Listing(items, str(self.rv))

    async def watch(
        self, kind: ResourceKind, resource_version: str, selector: Selector = Selector(),
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]:  # fmt: skip
        self._check(f"watch {kind} {resource_version}")
        since = int(resource_version)
        if since < self.compacted:
            raise KubeError(KubeFailure.EXPIRED, "too old")
        q: asyncio.Queue[Any] = asyncio.Queue()
        for rv, k, type_, obj in self.log:
            if k == kind and rv > since:
                q.put_nowait(WatchEvent(type_, str(rv), obj))  # type: ignore[arg-type]
        self.watchers.append((kind, q))
        while True:
            item = await q.get()
            if isinstance(item, KubeError):
                raise item
            yield item

    async def get_pod(self, namespace: str, name: str) -> PodInfo:
        self._check(f"get pod {name}")
        pod = self.objects.get(("pod", namespace, name))
        if pod is None:
            raise KubeError(KubeFailure.NOT_FOUND, name)
        return pod  # type: ignore[no-any-return]

    async def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Any, resource_version: str
    ) -> PodInfo:
        self._check(f"patch pod {name}")
        pod = self.objects[("pod", namespace, name)]
        if self.conflicts or resource_version != pod.resource_version:
            self.conflicts = max(0, self.conflicts - 1)
            raise KubeError(KubeFailure.CONFLICT, name)
        import attrs

        return self.put(attrs.evolve(pod, annotations={**pod.annotations, **annotations}))  # type: ignore[no-any-return]

    async def create_event(self, event: KubeEvent, regarding: ObjectRef) -> None:
        self._check("create event")
        self.events.append((event, regarding))

    async def get_cninode(self, name: str) -> CniNode:
        self._check("get cninode")
        return self.cninode

    async def patch_cninode_features(
        self, name: str, features: tuple[CniNodeFeature, ...], resource_version: str
    ) -> CniNode:
        self._check("patch cninode")
        if resource_version != self.cninode.resource_version:
            raise KubeError(KubeFailure.CONFLICT, name)
        self.cninode = CniNode(name, features, str(int(resource_version) + 1))
        return self.cninode

    async def get_node(self, name: str) -> NodeInfo:
        raise NotImplementedError

    async def get_eniconfig(self, name: str) -> EniConfig:
        raise NotImplementedError


def lists(api: MemoryApi) -> int:
    return sum(1 for c in api.calls if c.startswith("list"))


async def run_reflector(api: MemoryApi, clock: VirtualClock, kind: ResourceKind = "pod"):
    cache = KubeCache()
    r = Reflector(api, cache, kind, clock, backoff=Backoff(0.5, 30.0))
    task = asyncio.ensure_future(r.run())
    await settle_loop()
    return r, cache, task


async def stop(r: Reflector, task: asyncio.Task[None]) -> None:
    r.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_list_then_watch_keeps_the_cache():
    api, clock = MemoryApi(), VirtualClock()
    api.put(PodInfo("ns", "a", node_name="n1"))
    r, cache, task = await run_reflector(api, clock)
    assert [p.name for p in cache.pods()] == ["a"] and r.synced.is_set()
    api.put(PodInfo("ns", "b", node_name="n1"))
    api.put(PodInfo("ns", "a", node_name="n1"), "DELETED")
    await settle_loop()
    assert [p.name for p in cache.pods()] == ["b"]
    assert r.resource_version == str(api.rv)
    await stop(r, task)


async def test_broken_watch_resumes_from_its_version_without_a_list():
    api, clock = MemoryApi(), VirtualClock()
    r, cache, task = await run_reflector(api, clock)
    api.put(PodInfo("ns", "a"))
    await settle_loop()
    seen = r.resource_version
    api.cut_watches()
    api.put(PodInfo("ns", "b"))  # made while the watch is broken
    await settle_loop()
    assert clock.sleepers == 1  # backing off
    await clock.advance(0.5)
    assert [p.name for p in cache.pods()] == ["a", "b"]
    assert lists(api) == 1
    assert api.calls[-1] == f"watch pod {seen}"
    await stop(r, task)


async def test_backoff_doubles_to_its_cap_and_honours_retry_after():
    b = Backoff(0.5, 30.0)
    assert [b.delay(i) for i in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.delay(0, retry_after=7.0) == 7.0
    assert b.delay(5, retry_after=2.0) == 16.0


async def test_backoff_jitter_is_fixed_per_node_and_spreads_nodes():
    """After an outage every node lost the API server at once: their retries must not all
    land in the same instant."""
    plain = Backoff(0.5, 30.0)
    nodes = [Backoff(0.5, 30.0, jitter=0.5, seed=f"ip-10-0-{n}-1") for n in range(50)]
    for attempt in (0, 3, 6, 9):
        full = plain.delay(attempt)
        delays = [b.delay(attempt) for b in nodes]
        assert all(full / 2 <= d <= full for d in delays)
        assert len({round(d, 3) for d in delays}) >= 40  # spread, not in lockstep
        assert max(delays) - min(delays) > full / 4
    again = Backoff(0.5, 30.0, jitter=0.5, seed="ip-10-0-0-1")
    assert [again.delay(i) for i in range(10)] == [nodes[0].delay(i) for i in range(10)]
    assert nodes[0].delay(2, retry_after=60.0) == 60.0  # Retry-After still wins


async def test_no_missing_eniconfig_logged_while_listing(capsys):
    """The Node listed before the ENIConfigs is not a missing ENIConfig: no error line."""
    api, clock = MemoryApi(), VirtualClock()
    api.put(NodeInfo("n1", labels={"topology.kubernetes.io/zone": "az-a"}))
    api.put(EniConfig("az-a", EniConfigSpec("subnet-a", ("sg-1",))))
    s = settings(AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG="true",
                 ENI_CONFIG_LABEL_DEF="topology.kubernetes.io/zone")  # fmt: skip
    w = KubeWatcher(api, s, clock)
    await w.start()
    assert await w.wait_synced(1.0)
    out = capsys.readouterr().out
    assert "eniconfig_missing" not in out
    assert out.count("eniconfig_for_node") == 1
    await w.stop()


async def test_outage_serves_cache_backs_off_and_resumes_without_relist():
    api, clock = MemoryApi(), VirtualClock()
    api.put(PodInfo("ns", "a"))
    r, cache, task = await run_reflector(api, clock)
    api.down = True
    api.cut_watches()
    waited = 0.0
    for expected in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0):
        await settle_loop()
        assert [p.name for p in cache.pods()] == ["a"]  # served from the cache meanwhile
        assert not r.connected
        await clock.advance(expected)
        waited += expected
    attempts = sum(1 for c in api.calls if c.startswith("watch"))
    assert attempts == 1 + 8  # one per backoff step: no storm while away
    api.down = False
    await clock.advance(30.0)
    assert r.connected or r.stats.errors == 9
    api.put(PodInfo("ns", "c"))
    await settle_loop()
    assert [p.name for p in cache.pods()] == ["a", "c"]
    assert lists(api) == 1
    await stop(r, task)


async def test_a_watch_that_worked_restarts_the_backoff():
    api, clock = MemoryApi(), VirtualClock()
    r, cache, task = await run_reflector(api, clock)
    api.down = True
    api.cut_watches()
    await settle_loop()
    for step in (0.5, 1.0, 2.0, 4.0):
        await clock.advance(step)
    api.down = False
    await clock.advance(8.0)  # back: the watch resumes
    api.put(PodInfo("ns", "a"))
    await settle_loop()
    assert [p.name for p in cache.pods()] == ["a"]
    api.cut_watches()  # broken again after it delivered: the first wait is the base one
    await settle_loop()
    calls = len(api.calls)
    await clock.advance(0.5)
    assert len(api.calls) == calls + 1
    await stop(r, task)


async def test_expired_version_relists_once():
    api, clock = MemoryApi(), VirtualClock()
    api.put(PodInfo("ns", "a"))
    r, cache, task = await run_reflector(api, clock)
    api.compacted = api.rv + 5
    api.cut_watches()
    api.rv += 5
    api.put(PodInfo("ns", "b"))
    await settle_loop()
    await clock.advance(0.5)
    assert lists(api) == 2 and r.stats.expired == 1
    assert {p.name for p in cache.pods()} == {"a", "b"}
    await stop(r, task)


async def test_expired_as_a_watch_error_relists_at_once():
    api, clock = MemoryApi(), VirtualClock()
    r, _, task = await run_reflector(api, clock)
    api.put(PodInfo("ns", "a"))
    await settle_loop()
    api.cut_watches(KubeError(KubeFailure.EXPIRED, "too old"))
    await settle_loop()
    assert lists(api) == 2 and clock.sleepers == 0
    await stop(r, task)


async def test_expired_at_once_after_a_list_backs_off():
    api, clock = MemoryApi(), VirtualClock()
    api.compacted = 10**9  # every watch is too old: no hot loop of LISTs
    r, _, task = await run_reflector(api, clock)
    assert lists(api) == 1 and clock.sleepers == 1
    await clock.advance(0.5)
    assert lists(api) == 2
    await stop(r, task)


async def test_bookmark_moves_the_version():
    api, clock = MemoryApi(), VirtualClock()
    r, _, task = await run_reflector(api, clock, "node")
    api.put(PodInfo("ns", "other"))  # a change of another kind moves the global version
    api.bookmark()
    await settle_loop()
    assert r.resource_version == str(api.rv) and r.stats.bookmarks == 1
    await stop(r, task)


async def test_throttled_waits_retry_after():
    api, clock = MemoryApi(), VirtualClock()
    api.fail_next = [KubeError(KubeFailure.THROTTLED, "slow down", retry_after=5.0)]
    r, _, task = await run_reflector(api, clock)
    assert not r.synced.is_set()
    await clock.advance(4.9)
    assert not r.synced.is_set()
    await clock.advance(0.1)
    assert r.synced.is_set()
    await stop(r, task)


# ------------------------------------------------------------ KubeWatcher


def settings(**kw: str) -> KubeSettings:
    env = {"MY_NODE_NAME": "n1", "MY_POD_NAME": "aws-node-1", **kw}
    return KubeSettings.from_env(env)


@pytest.fixture
async def watcher():
    api, clock = MemoryApi(), VirtualClock()
    api.put(NodeInfo("n1", labels={"topology.kubernetes.io/zone": "az-a"}, capacity_pods="29"))
    api.put(EniConfig("az-a", EniConfigSpec("subnet-a", ("sg-1",))))
    api.put(PodInfo("kube-system", "aws-node-1", uid="u-1", node_name="n1"))
    api.put(PodInfo("ns", "web", node_name="n1"))
    s = settings(
        AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG="true",
        ENI_CONFIG_LABEL_DEF="topology.kubernetes.io/zone",
        ENABLE_POD_ENI="true",
    )
    w = KubeWatcher(api, s, clock)
    await w.start()
    assert await w.wait_synced(1.0)
    yield w, api, clock
    await w.stop()


async def test_watcher_reads(watcher):
    w, api, _ = watcher
    assert w.max_pods(110) == 29
    stats = w.stats()
    assert stats["synced"] and set(stats["kinds"]) == {"node", "pod", "eniconfig"}  # type: ignore[arg-type]
    assert stats["kinds"]["pod"]["lists"] == 1  # type: ignore[index]
    choice = w.eniconfig_for_node()
    assert choice is not None and choice.spec == EniConfigSpec("subnet-a", ("sg-1",))
    api.put(EniConfig("az-a", EniConfigSpec("subnet-a2", ("sg-2",))))  # changed: new ENIs
    await settle_loop()
    assert w.eniconfig_for_node().spec.subnet == "subnet-a2"  # type: ignore[union-attr]
    api.put(EniConfig("az-a", EniConfigSpec("")), "DELETED")
    await settle_loop()
    assert w.eniconfig_for_node().spec is None  # type: ignore[union-attr]


async def test_annotate_uses_the_cache_and_retries_conflicts(watcher):
    w, api, clock = watcher
    api.calls.clear()
    assert await w.annotate_pod_ips("ns", "web", "10.0.0.9")
    assert api.calls == ["patch pod web"]  # no GET: the cached pod was current
    await settle_loop()
    api.conflicts = 2
    api.calls.clear()
    task = asyncio.ensure_future(w.annotate_pod_ips("ns", "web", "", "10.0.0.9"))
    await settle_loop()
    await clock.advance(0.01)
    assert not task.done()  # second conflict: waiting 0.05 s
    await clock.advance(0.05)
    assert await task
    patch, get = "patch pod web", "get pod web"
    assert api.calls == [patch, get, patch, get, patch]
    assert api.objects[("pod", "ns", "web")].annotations[POD_IPS_ANNOTATION] == ""


async def test_annotate_del_of_a_gone_pod_and_mismatch(watcher):
    w, _, _ = watcher
    assert await w.annotate_pod_ips("ns", "gone", "", "10.0.0.1")
    assert not await w.annotate_pod_ips("ns", "gone", "10.0.0.1")
    await w.annotate_pod_ips("ns", "web", "10.0.0.2")
    await settle_loop()
    assert not await w.annotate_pod_ips("ns", "web", "", "10.0.0.3")  # names another


async def test_post_event_on_the_aws_node_pod(watcher):
    w, api, _ = watcher
    assert await w.post_event(KubeEvent("Warning", "MissingEniConfig", "x", "CreateEni"))
    event, ref = api.events[0]
    assert event.reason == "MissingEniConfig"
    assert ref == ObjectRef("Pod", "aws-node-1", "kube-system", "u-1")
    api.down = True
    assert not await w.post_event(KubeEvent("Warning", "MissingEniConfig", "x"))


async def test_cninode_feature_patched_once(watcher):
    w, api, _ = watcher
    assert await w.ensure_cninode_feature()
    assert api.cninode.features == (CniNodeFeature("CustomNetworking", "az-a"),)
    api.calls.clear()
    assert await w.ensure_cninode_feature()
    assert api.calls == ["get cninode"]


async def test_wait_synced_times_out_in_virtual_time():
    api, clock = MemoryApi(), VirtualClock()
    api.down = True
    w = KubeWatcher(api, settings(), clock)
    await w.start()
    waiting = asyncio.ensure_future(w.wait_synced(30.0))
    await settle_loop()
    await clock.advance(29.0)
    assert not waiting.done()
    await clock.advance(1.0)
    assert await waiting is False
    assert w.node() is None and w.max_pods(58) == 58
    await w.stop()


async def test_late_api_server_is_picked_up_and_told():
    api, clock = MemoryApi(), VirtualClock()
    api.down = True
    w = KubeWatcher(api, settings(), clock)
    heard: list[tuple[str, str]] = []
    w.subscribe(lambda c: heard.append((c.kind, c.type)))
    await w.start()
    waiting = asyncio.ensure_future(w.wait_synced(30.0))
    await settle_loop()
    await clock.advance(30.0)
    assert await waiting is False  # upstream: start without it after 30 s
    api.down = False
    api.put(NodeInfo("n1", capacity_pods="58"))
    await clock.advance(30.0)
    assert w.synced() and w.max_pods(110) == 58
    assert ("node", "ADDED") in heard
    await w.stop()


async def test_missing_eniconfig_is_logged_once(watcher, capsys):
    w, api, _ = watcher
    api.put(EniConfig("az-a", EniConfigSpec("")), "DELETED")
    await settle_loop()
    api.put(NodeInfo("n1", labels={"topology.kubernetes.io/zone": "az-a", "x": "y"}))
    await settle_loop()
    out = capsys.readouterr().out
    assert out.count("eniconfig_missing") == 1
    assert w.eniconfig_for_node().spec is None  # type: ignore[union-attr]


async def test_report_posts_due_events_once(watcher):
    from ipamcore.eniconfig import Observations

    w, api, clock = watcher
    obs = Observations(subnet_full="subnet-a", pods_waiting=2, waiting_since=clock.now() - 60)
    posted = await w.report(obs)
    reasons = sorted(e.reason for e in posted)
    assert reasons == ["InsufficientSubnetAddresses", "PodsWaitingForAddresses"]
    assert await w.report(obs) == []
    await clock.advance(600.0)
    assert len(await w.report(obs)) == 2
    assert len(api.events) == 4
