"""The Kubernetes API contract: what ipamd relies on, checked against any API server.

A test module subclasses :class:`KubeContract` (as ``Test...``) and provides an async
``harness`` fixture yielding a :class:`KubeHarness` over a lightkube configuration (the fake
API server's kubeconfig, or a real cluster's). The same tests run against both, so the fake
is held to what a real API server does: list and watch with resourceVersion, resuming a
watch, 410 Gone for a compacted version, bookmarks, field and label selectors, merge patches
refused with 409 on a stale resourceVersion, Events, ENIConfig create/read/update/delete
seen through a watch, CNINode features. Objects get unique names and are deleted afterwards
(a real cluster is shared).

Capabilities (class attributes): ``bookmark_within_s`` (how long a test may wait for a
bookmark; real API servers send one about every minute), ``has_cninode_crd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import SingleConfig
from lightkube.config import client_adapter

from backends.kubernetes.client import LightkubeApi
from backends.kubernetes.settings import KubeSettings
from backends.kubernetes.watcher import KubeWatcher
from ipamcore.kube import (
    POD_IPS_ANNOTATION,
    CniNodeFeature,
    EniConfigSpec,
    KubeError,
    KubeEvent,
    KubeFailure,
    NodeInfo,
    ObjectRef,
    PodInfo,
    Selector,
    WatchEvent,
)

ENICONFIGS = "/apis/crd.k8s.amazonaws.com/v1alpha1/eniconfigs"
CNINODES = "/apis/networking.k8s.aws/v1alpha1/cninodes"
NODES = "/api/v1/nodes"
MERGE = "application/merge-patch+json"


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


class KubeHarness:
    """The backend under test, and a plain HTTP client with the same credentials to make
    and change objects behind its back."""

    def __init__(self, config: SingleConfig, namespace: str = "default") -> None:
        self.config = config
        self.namespace = namespace
        self.suffix = uuid.uuid4().hex[:8]
        self.api = LightkubeApi(config, reporting_instance="contract")
        self.raw = client_adapter.AsyncClient(config, client_adapter.ConnectionParams())
        self._created: list[str] = []
        self._closers: list[Any] = []

    def name(self, base: str) -> str:
        return f"{base}-{self.suffix}"

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        headers = {"Content-Type": content_type} if body is not None else {}
        resp = await self.raw.request(method, path, json=body, headers=headers)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text

    async def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        code, obj = await self.request("POST", collection, body)
        assert code == 201, obj
        self._created.append(f"{collection}/{obj['metadata']['name']}")
        return dict(obj)

    async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        code, obj = await self.request("PATCH", path, body, MERGE)
        assert code == 200, obj
        return dict(obj)

    async def delete(self, path: str) -> None:
        code, obj = await self.request("DELETE", path)
        assert code in (200, 202), obj
        with contextlib.suppress(ValueError):
            self._created.remove(path)

    async def node(self, base: str = "node", labels: dict[str, str] | None = None, **kw: Any):
        body = {"metadata": {"name": self.name(base), "labels": labels or {}, **kw}}
        body["status"] = {"capacity": {"pods": "29"}}
        return await self.create(NODES, body)

    async def pod(self, base: str, node: str, namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or self.namespace
        body = {
            "metadata": {"name": self.name(base), "namespace": ns},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]},
        }
        return await self.create(pods_path(ns), body)

    def watcher(self, node: str, clock: Any, **env: str) -> KubeWatcher:
        settings = KubeSettings.from_env({"MY_NODE_NAME": node, **env})
        from backends.kubernetes.informer import Backoff

        w = KubeWatcher(self.api, settings, clock, Backoff(0.05, 0.5))
        self._closers.append(w.stop)
        return w

    async def close(self) -> None:
        for stop in self._closers:
            await stop()
        for path in reversed(self._created):
            with contextlib.suppress(Exception):
                await self.raw.request("DELETE", path)
        await self.api.aclose()
        await self.raw.aclose()


async def collect(
    stream: AsyncIterator[WatchEvent], count: int, timeout: float = 10.0, bookmarks: bool = False
) -> list[WatchEvent]:
    """The first ``count`` events of a watch (bookmarks skipped unless asked for)."""
    out: list[WatchEvent] = []

    async def run() -> None:
        async for ev in stream:
            if ev.type == "BOOKMARK" and not bookmarks:
                continue
            out.append(ev)
            if len(out) >= count:
                return

    try:
        await asyncio.wait_for(run(), timeout)
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]
    return out


class SystemClock:
    def now(self) -> float:
        import time

        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def eventually(check: Any, timeout: float = 10.0) -> None:
    """Until ``check()`` is true (a watch delivering over the network), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


class KubeContract:
    bookmark_within_s: float | None = 5.0
    has_cninode_crd: bool = True

    # ------------------------------------------------------------ list

    async def test_list_node_by_field_selector(self, harness: KubeHarness) -> None:
        a = await harness.node("a", labels={"role": "x"})
        await harness.node("b")
        name = a["metadata"]["name"]
        listing = await harness.api.list("node", Selector(fields=f"metadata.name={name}"))
        assert [n.name for n in listing.items] == [name]
        node = listing.items[0]
        assert isinstance(node, NodeInfo) and node.labels["role"] == "x"
        assert node.capacity_pods is not None
        assert listing.resource_version

    async def test_list_by_label_selector(self, harness: KubeHarness) -> None:
        tag = harness.suffix
        await harness.node("l1", labels={"contract": tag, "zone": "a"})
        await harness.node("l2", labels={"contract": tag, "zone": "b"})
        both = await harness.api.list("node", Selector(labels=f"contract={tag}"))
        assert len(both.items) == 2
        one = await harness.api.list("node", Selector(labels=f"contract={tag},zone!=a"))
        assert [n.name for n in one.items] == [harness.name("l2")]

    async def test_list_pods_on_a_node_in_every_namespace(self, harness: KubeHarness) -> None:
        node = harness.name("n")
        await harness.pod("p1", node)
        await harness.pod("p2", node, "kube-system")
        await harness.pod("elsewhere", harness.name("other"))
        listing = await harness.api.list("pod", Selector(fields=f"spec.nodeName={node}"))
        got = sorted((p.namespace, p.name) for p in listing.items if isinstance(p, PodInfo))
        assert got == [("default", harness.name("p1")), ("kube-system", harness.name("p2"))]

    # ------------------------------------------------------------ watch

    async def test_watch_sees_changes_in_order(self, harness: KubeHarness) -> None:
        node = harness.name("w")
        listing = await harness.api.list("pod", Selector(fields=f"spec.nodeName={node}"))
        stream = harness.api.watch(
            "pod", listing.resource_version, Selector(fields=f"spec.nodeName={node}")
        )
        events = asyncio.ensure_future(collect(stream, 3))
        pod = await harness.pod("p", node)
        path = f"{pods_path(harness.namespace)}/{pod['metadata']['name']}"
        await harness.patch(path, {"metadata": {"labels": {"k": "v"}}})
        await harness.delete(path)
        got = await events
        assert [e.type for e in got] == ["ADDED", "MODIFIED", "DELETED"]
        versions = [int(e.resource_version) for e in got]
        assert versions == sorted(versions) and len(set(versions)) == 3
        assert int(got[0].resource_version) > int(listing.resource_version)

    async def test_watch_resumes_from_a_version(self, harness: KubeHarness) -> None:
        tag = harness.suffix
        sel = Selector(labels=f"contract={tag}")
        start = (await harness.api.list("node", sel)).resource_version
        await harness.node("r1", labels={"contract": tag})
        first = await collect(harness.api.watch("node", start, sel), 1)
        await harness.node("r2", labels={"contract": tag})
        await harness.node("r3", labels={"contract": tag})
        rest = await collect(harness.api.watch("node", first[0].resource_version, sel), 2)
        assert [e.obj.name for e in rest if e.obj] == [harness.name("r2"), harness.name("r3")]

    async def test_watch_sees_an_object_leave_its_selector(self, harness: KubeHarness) -> None:
        tag = harness.suffix
        sel = Selector(labels=f"contract={tag}")
        start = (await harness.api.list("node", sel)).resource_version
        events = asyncio.ensure_future(collect(harness.api.watch("node", start, sel), 2))
        node = await harness.node("leaving", labels={"contract": tag})
        await harness.patch(
            f"{NODES}/{node['metadata']['name']}", {"metadata": {"labels": {"contract": None}}}
        )
        got = await events
        assert [e.type for e in got] == ["ADDED", "DELETED"]

    async def test_watch_from_a_compacted_version_is_gone(self, harness: KubeHarness) -> None:
        with pytest.raises(KubeError) as info:
            await collect(harness.api.watch("node", "1"), 1)
        assert info.value.kind is KubeFailure.EXPIRED

    async def test_watch_bookmarks(self, harness: KubeHarness) -> None:
        if self.bookmark_within_s is None:
            pytest.skip("bookmarks take about a minute on this server")
        start = (await harness.api.list("node")).resource_version
        got = await collect(
            harness.api.watch("node", start), 1, self.bookmark_within_s, bookmarks=True
        )
        assert got[0].type == "BOOKMARK" and int(got[0].resource_version) >= int(start)

    async def test_watch_ends_at_its_timeout(self, harness: KubeHarness) -> None:
        start = (await harness.api.list("node")).resource_version
        seen = []
        async with asyncio.timeout(10):
            async for ev in harness.api.watch("node", start, timeout_seconds=1):
                seen.append(ev)
        assert all(e.type == "BOOKMARK" for e in seen)

    # ------------------------------------------------------------ writes

    async def test_patch_with_a_stale_version_conflicts(self, harness: KubeHarness) -> None:
        pod = await harness.pod("c", harness.name("n"))
        name, rv = pod["metadata"]["name"], pod["metadata"]["resourceVersion"]
        done = await harness.api.patch_pod_annotations(
            harness.namespace, name, {POD_IPS_ANNOTATION: "10.0.0.5"}, rv
        )
        assert done.annotations[POD_IPS_ANNOTATION] == "10.0.0.5"
        assert done.resource_version != rv
        with pytest.raises(KubeError) as info:
            await harness.api.patch_pod_annotations(
                harness.namespace, name, {POD_IPS_ANNOTATION: ""}, rv
            )
        assert info.value.kind is KubeFailure.CONFLICT
        again = await harness.api.get_pod(harness.namespace, name)
        assert again.annotations[POD_IPS_ANNOTATION] == "10.0.0.5"

    async def test_missing_objects_are_not_found(self, harness: KubeHarness) -> None:
        for call in (
            harness.api.get_pod(harness.namespace, harness.name("none")),
            harness.api.get_node(harness.name("none")),
            harness.api.get_eniconfig(harness.name("none")),
        ):
            with pytest.raises(KubeError) as info:
                await call
            assert info.value.kind is KubeFailure.NOT_FOUND

    async def test_event_on_a_pod(self, harness: KubeHarness) -> None:
        pod = await harness.pod("aws-node", harness.name("n"))
        name = pod["metadata"]["name"]
        ref = ObjectRef("Pod", name, harness.namespace, pod["metadata"]["uid"])
        await harness.api.create_event(
            KubeEvent("Warning", "MissingEniConfig", "ENIConfig 'x' not found", "CreateEni"), ref
        )
        code, events = await harness.request(
            "GET", f"/apis/events.k8s.io/v1/namespaces/{harness.namespace}/events"
        )
        assert code == 200
        mine = [e for e in events["items"] if e["regarding"]["name"] == name]
        assert len(mine) == 1
        ev = mine[0]
        assert ev["reason"] == "MissingEniConfig" and ev["type"] == "Warning"
        assert ev["reportingController"] == "aws-node" and ev["regarding"]["uid"]
        harness._created.append(
            f"/apis/events.k8s.io/v1/namespaces/{harness.namespace}/events/"
            + ev["metadata"]["name"]
        )

    async def test_eniconfig_crud_seen_by_a_watch(self, harness: KubeHarness) -> None:
        name = harness.name("az")
        start = (await harness.api.list("eniconfig")).resource_version
        events = asyncio.ensure_future(collect(harness.api.watch("eniconfig", start), 3))
        spec = {"subnet": "subnet-1", "securityGroups": ["sg-1"]}
        body = {"metadata": {"name": name}, "spec": spec}
        await harness.create(ENICONFIGS, body)
        got = await harness.api.get_eniconfig(name)
        assert got.spec == EniConfigSpec("subnet-1", ("sg-1",))
        await harness.patch(f"{ENICONFIGS}/{name}", {"spec": {"subnet": "subnet-2"}})
        await harness.delete(f"{ENICONFIGS}/{name}")
        seen = [e for e in await events if e.obj is not None and e.obj.name == name]
        assert [e.type for e in seen] == ["ADDED", "MODIFIED", "DELETED"]
        assert seen[1].obj.spec == EniConfigSpec("subnet-2", ("sg-1",))  # type: ignore[union-attr]

    async def test_cninode_features(self, harness: KubeHarness) -> None:
        if not self.has_cninode_crd:
            pytest.skip("no CNINode CRD on this server")
        name = harness.name("cn")
        await harness.create(CNINODES, {"metadata": {"name": name}, "spec": {}})
        cn = await harness.api.get_cninode(name)
        feature = CniNodeFeature("CustomNetworking", "az-a")
        done = await harness.api.patch_cninode_features(name, (feature,), cn.resource_version)
        assert done.features == (feature,)
        with pytest.raises(KubeError) as info:
            await harness.api.patch_cninode_features(name, (), cn.resource_version)
        assert info.value.kind is KubeFailure.CONFLICT

    async def test_wrong_token_is_unauthorized(self, harness: KubeHarness) -> None:
        from lightkube.config.models import User

        if harness.config.user is None or not harness.config.user.token:
            pytest.skip("this cluster's credentials are not a bearer token")
        bad = SingleConfig(
            context_name=harness.config.context_name,
            context=harness.config.context,
            cluster=harness.config.cluster,
            user=User(token="not-a-valid-token"),
            fname=harness.config.fname,
        )
        api = LightkubeApi(bad)
        try:
            with pytest.raises(KubeError) as info:
                await api.list("node")
            assert info.value.kind is KubeFailure.UNAUTHORIZED
        finally:
            await api.aclose()

    # ------------------------------------------------------------ the watcher

    async def test_watcher_serves_node_pods_and_eniconfig(self, harness: KubeHarness) -> None:
        node = await harness.node("me", labels={"topology.kubernetes.io/zone": harness.name("z")})
        me = node["metadata"]["name"]
        zone = harness.name("z")
        await harness.create(
            ENICONFIGS, {"metadata": {"name": zone}, "spec": {"subnet": "subnet-z"}}
        )
        pod = await harness.pod("web", me)
        w = harness.watcher(
            me, SystemClock(),
            AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG="true",
            ENI_CONFIG_LABEL_DEF="topology.kubernetes.io/zone",
        )  # fmt: skip
        await w.start()
        assert await w.wait_synced(10.0)
        assert w.max_pods(110) == 29
        choice = w.eniconfig_for_node()
        assert choice is not None and choice.spec == EniConfigSpec("subnet-z")
        pod_name = pod["metadata"]["name"]
        assert [p.name for p in w.pods()] == [pod_name]
        assert await w.annotate_pod_ips(harness.namespace, pod_name, "10.1.2.3")
        await eventually(
            lambda: (
                (w.cache.pod(harness.namespace, pod_name) or PodInfo("", "")).annotations.get(
                    POD_IPS_ANNOTATION
                )
                == "10.1.2.3"
            )
        )
        assert await w.annotate_pod_ips(harness.namespace, pod_name, "", "10.1.2.3")
        fresh = await harness.api.get_pod(harness.namespace, pod_name)
        assert fresh.annotations[POD_IPS_ANNOTATION] == ""
