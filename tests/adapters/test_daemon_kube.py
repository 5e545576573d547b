"""The daemon in-process with the Kubernetes API: the fake API server as a real HTTPS process
(tests/rigs), the fake cloud, the fake datapath, a VirtualClock for every timer (the node's,
the watches' backoff, the start's 30 s wait, the Events' repeat): time only moves when a
test advances it.

Shown: the ENIConfig of the node's zone places new ENIs in the zone's subnet (and a changed
one applies to new ENIs); a missing ENIConfig creates no ENI and posts an Event; the Node's
capacity caps max pods; the pod-ips annotation is set after ADD and cleared after DEL; the
API server gone for a minute disturbs no running pod, DEL or warm-pool ADD, and on its
return the watches resume without a LIST (counted on the fake); with no feature needing it
the daemon starts without the API server after 30 s and connects when it comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from adapters.ipamd.daemon import Daemon
from ipamcore.kube import POD_IPS_ANNOTATION
from ipamcore.model import AllocationKey
from tests.adapters.harness import World, add_request, call, del_request, eventually, until
from tests.contract.kube_contract import CNINODES, ENICONFIGS, NODES, pods_path
from tests.rigs.kube_rig import FakeApiServerProcess

NODE = "ip-10-0-0-1.us-west-2.compute.internal"
ZONE_LABEL = "topology.kubernetes.io/zone"
AWS_NODE = "aws-node-abcde"
EVENTS = "/apis/events.k8s.io/v1/namespaces/kube-system/events"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: Any) -> Iterator[FakeApiServerProcess]:
    with FakeApiServerProcess(tmp_path_factory.mktemp("apiserver"), bookmark_interval=0.5) as r:
        yield r


@pytest.fixture
def world() -> Iterator[World]:
    w = World.create()
    yield w
    w.cleanup()


def seed(
    rig: FakeApiServerProcess, zone: str = "us-west-2a", pods: int = 3, **eniconfigs: str
) -> None:
    rig.reset()
    node = {
        "metadata": {"name": NODE, "labels": {ZONE_LABEL: zone}},
        "status": {"capacity": {"pods": "20"}},
    }
    assert rig.api("POST", NODES, node)[0] == 201
    for name, subnet in eniconfigs.items():
        body = {"metadata": {"name": name.replace("_", "-")},
                "spec": {"subnet": subnet, "securityGroups": ["sg-0pods"]}}  # fmt: skip
        assert rig.api("POST", ENICONFIGS, body)[0] == 201
    aws_node = {"metadata": {"name": AWS_NODE}, "spec": {"nodeName": NODE}}
    assert rig.api("POST", pods_path("kube-system"), aws_node)[0] == 201
    for n in range(1, pods + 1):
        pod = {"metadata": {"name": f"pod-{n}"}, "spec": {"nodeName": NODE}}
        assert rig.api("POST", pods_path("default"), pod)[0] == 201
    assert rig.api("POST", CNINODES, {"metadata": {"name": NODE}, "spec": {}})[0] == 201
    rig.admin("POST", "/requests/clear")


def kube_env(rig: FakeApiServerProcess, **extra: str) -> dict[str, str]:
    return {
        "MY_NODE_NAME": NODE,
        "MY_POD_NAME": AWS_NODE,
        "KUBECONFIG": str(rig.kubeconfig),
        "ENI_CONFIG_LABEL_DEF": ZONE_LABEL,
        **extra,
    }


CUSTOM = {"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "ANNOTATE_POD_IP": "true"}


@pytest.fixture
async def stopper() -> AsyncIterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        await d.stop()


async def start(
    world: World, rig: FakeApiServerProcess, stopper: list[Daemon], **env: str
) -> Daemon:
    d = world.daemon(**kube_env(rig, **env))
    assert d.kube is not None
    await d.start()
    stopper.append(d)
    return d


async def until_real(predicate: Any, world: World, step: float = 5.0, limit: int = 60) -> None:
    """Advance virtual time step by step, giving real network work (the fake API server)
    up to 0.5 s of real time after each step, until ``predicate()`` holds."""
    for _ in range(limit):
        await world.clock.advance(step)
        for _ in range(50):
            if predicate():
                return
            await asyncio.sleep(0.01)
    assert predicate(), "condition not reached"


def key(n: int) -> AllocationKey:
    return AllocationKey("aws-cni", f"c{n:04d}", "eth0")


def eni_subnets(d: Daemon) -> dict[str, str]:
    """Each non-primary ENI's subnet."""
    return {
        e.eni_id: e.info.subnet_id
        for e in d.executor.node.core.pool.enis.values()
        if not e.info.is_primary
    }


def lists(rig: FakeApiServerProcess) -> int:
    return sum(
        1 for r in rig.requests()
        if r["method"] == "GET" and not r["watch"]
        and r["path"] in (NODES, "/api/v1/pods", ENICONFIGS)
    )  # fmt: skip


def annotation(rig: FakeApiServerProcess, n: int) -> str | None:
    _, pod = rig.api("GET", f"{pods_path('default')}/pod-{n}")
    return (pod["metadata"].get("annotations") or {}).get(POD_IPS_ANNOTATION)


def event_reasons(rig: FakeApiServerProcess) -> list[str]:
    _, events = rig.api("GET", EVENTS)
    return [e["reason"] for e in events["items"] if e["regarding"]["name"] == AWS_NODE]


async def test_the_zones_eniconfig_places_new_enis_and_a_changed_one_applies_to_new_enis(
    rig: FakeApiServerProcess, world: World, stopper: list[Daemon]
) -> None:
    subnet_a = world.cloud.add_subnet("10.0.64.0/20", "us-west-2a")
    subnet_c = world.cloud.add_subnet("10.0.96.0/20", "us-west-2a")
    seed(rig, us_west_2a=subnet_a)
    d = await start(world, rig, stopper, **CUSTOM, ENABLE_POD_ENI="true")
    await until(lambda: bool(eni_subnets(d)), world.clock)
    assert set(eni_subnets(d).values()) == {subnet_a}
    eni = next(iter(d.executor.node.core.pool.enis.values()))
    assert d.executor.stats().max_pods == 20  # the Node's capacity caps m5.large's 29
    # CNINode feature, as upstream with custom networking and ENABLE_POD_ENI
    await eventually(lambda: rig.api("GET", f"{CNINODES}/{NODE}")[1]["spec"].get("features"))
    features = rig.api("GET", f"{CNINODES}/{NODE}")[1]["spec"]["features"]
    assert features == [{"name": "CustomNetworking", "value": "us-west-2a"}]
    assert eni is not None
    # The ENIConfig changes: the next new ENI goes to its new subnet; the first stays.
    _, cfg = rig.api("GET", f"{ENICONFIGS}/us-west-2a")
    cfg["spec"]["subnet"] = subnet_c
    assert rig.api("PUT", f"{ENICONFIGS}/us-west-2a", cfg)[0] == 200
    await eventually(lambda: d.executor.node.eniconfig.subnet_id == subnet_c)  # type: ignore[union-attr]
    first = set(eni_subnets(d))
    for n in range(1, 12):  # use up the first ENI: the pool grows by a new one
        assert (await call(world.socket_path, add_request(n))).ok
        await asyncio.sleep(0)
    await until(lambda: subnet_c in eni_subnets(d).values(), world.clock)
    assert all(eni_subnets(d)[e] == subnet_a for e in first)


async def test_a_missing_eniconfig_makes_no_eni_and_an_event_then_its_arrival_does(
    rig: FakeApiServerProcess, world: World, stopper: list[Daemon]
) -> None:
    subnet_b = world.cloud.add_subnet("10.0.80.0/20", "us-west-2a")
    seed(rig, zone="us-west-2b")  # no ENIConfig named us-west-2b
    d = await start(world, rig, stopper, **CUSTOM)
    await until(lambda: "MissingEniConfig" in event_reasons(rig), world.clock)
    for _ in range(6):
        await world.clock.advance(10)
    assert eni_subnets(d) == {}  # never an ENI in the wrong subnet
    assert "eniconfig missing" in world.log_stream.getvalue()
    body = {"metadata": {"name": "us-west-2b"}, "spec": {"subnet": subnet_b}}
    assert rig.api("POST", ENICONFIGS, body)[0] == 201
    await until(lambda: bool(eni_subnets(d)), world.clock)
    assert set(eni_subnets(d).values()) == {subnet_b}


async def test_pod_ips_annotation_set_after_add_and_cleared_after_del(
    rig: FakeApiServerProcess, world: World, stopper: list[Daemon]
) -> None:
    subnet_a = world.cloud.add_subnet("10.0.64.0/20", "us-west-2a")
    seed(rig, us_west_2a=subnet_a)
    d = await start(world, rig, stopper, **CUSTOM)
    await until(lambda: d.executor.stats().available > 0, world.clock)
    reply = await call(world.socket_path, add_request(1))
    assert reply.ok
    ip = reply.result["ipv4"]
    await eventually(lambda: annotation(rig, 1) == ip)
    assert (await call(world.socket_path, del_request(1))).ok
    await eventually(lambda: annotation(rig, 1) == "")
    # ADD then DEL at once: the clear never overtakes the set
    reply = await call(world.socket_path, add_request(2))
    assert (await call(world.socket_path, del_request(2))).ok
    await eventually(lambda: annotation(rig, 2) == "")
    patches = [r for r in rig.requests() if r["method"] == "PATCH" and r["path"].endswith("/pod-2")]
    assert len(patches) == 2


async def test_api_server_gone_for_a_minute_disturbs_nothing_and_watches_resume_without_a_list(
    rig: FakeApiServerProcess, world: World, stopper: list[Daemon]
) -> None:
    subnet_a = world.cloud.add_subnet("10.0.64.0/20", "us-west-2a")
    seed(rig, pods=6, us_west_2a=subnet_a)
    d = await start(world, rig, stopper, **CUSTOM)
    await until(lambda: d.executor.stats().available >= 4, world.clock)
    for n in (1, 2):
        assert (await call(world.socket_path, add_request(n))).ok
    await eventually(lambda: annotation(rig, 2) is not None)
    await eventually(lambda: rig.admin("GET", "/watches")["open"] == 3)
    before = lists(rig)
    assert before == 3  # node, pods, ENIConfigs: listed once at start
    rig.admin("POST", "/outage", {})
    running = {a.key for a in d.executor.node.core.allocations()}
    for step in range(6):  # a minute of virtual time, the pool served meanwhile
        await world.clock.advance(10)
        await asyncio.sleep(0.02)
        if step == 2:
            added = await call(world.socket_path, add_request(3))  # warm-pool ADD
            assert added.ok
            assert (await call(world.socket_path, del_request(1))).ok  # DEL
    assert not d.kube.watcher.connected()  # type: ignore[union-attr]
    keys = {a.key for a in d.executor.node.core.allocations()}
    assert keys == (running - {key(1)}) | {key(3)}
    assert set(eni_subnets(d).values()) <= {subnet_a}
    rig.admin("POST", "/restore")
    await until_real(lambda: d.kube.watcher.connected(), world)  # type: ignore[union-attr]
    await eventually(lambda: rig.admin("GET", "/watches")["open"] == 3)
    assert lists(rig) == before  # resumed from resourceVersion: no relist storm
    assert d.executor.stats().max_pods == 20
    # the annotations the outage held back are written once it is over
    await until_real(lambda: annotation(rig, 3) == added.result["ipv4"], world)
    await until_real(lambda: annotation(rig, 1) == "", world)
    assert lists(rig) == before


async def test_without_a_feature_needing_it_the_start_goes_on_after_30_s_and_connects_later(
    rig: FakeApiServerProcess, world: World, stopper: list[Daemon]
) -> None:
    seed(rig)
    rig.admin("POST", "/outage", {})
    try:
        d = world.daemon(**kube_env(rig))
        starting = asyncio.ensure_future(d.start())
        await asyncio.sleep(0.2)  # the start's 30 s wait is armed (real network tries fail)
        await world.clock.advance(29)
        await asyncio.sleep(0.05)
        assert not starting.done()  # still waiting (upstream's 30 s)
        await until_real(lambda: starting.done(), world, step=1.0, limit=10)
        await starting
        stopper.append(d)
        assert d.executor.ready and not d.kube.watcher.synced()  # type: ignore[union-attr]
        await until(lambda: d.executor.stats().available > 0, world.clock)
        assert (await call(world.socket_path, add_request(1))).ok
    finally:
        rig.admin("POST", "/restore")
    await until_real(lambda: d.kube.watcher.synced(), world)  # type: ignore[union-attr]
    assert d.executor.stats().max_pods == 20


def test_no_kubernetes_no_link(world: World) -> None:
    d = world.daemon()  # no MY_NODE_NAME
    assert d.kube is None and not d.settings.kubernetes
    d = world.daemon(MY_NODE_NAME=NODE)  # a node name but no API server to reach
    assert d.kube is None and not d.settings.kubernetes


def test_custom_networking_needs_env_subnet_only_without_kubernetes(
    rig: FakeApiServerProcess, world: World
) -> None:
    from adapters.ipamd.settings import SettingsError

    with pytest.raises(SettingsError, match="ENI_CONFIG_SUBNET"):
        world.settings(AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG="true")
    s = world.settings(**kube_env(rig, AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG="true"))
    assert s.kubernetes and s.pool.placement.custom_networking


async def test_a_full_subnet_is_an_event_on_the_aws_node_pod(
    rig: FakeApiServerProcess, world: World, stopper: list[Daemon]
) -> None:
    tiny = world.cloud.add_subnet("10.0.112.0/28", "us-west-2a")  # 11 usable: one ENI's worth
    seed(rig, pods=0, us_west_2a=tiny)
    d = await start(world, rig, stopper, **CUSTOM)
    await until(lambda: d.executor.stats().available > 0, world.clock)
    assert (await call(world.socket_path, add_request(1))).ok  # the pool wants a second ENI
    await until_real(lambda: "InsufficientSubnetAddresses" in event_reasons(rig), world)
    _, events = rig.api("GET", EVENTS)
    [full] = [e for e in events["items"] if e["reason"] == "InsufficientSubnetAddresses"]
    assert tiny in full["note"] and full["type"] == "Warning"
    # while it lasts, the same Event at most every 10 min
    for _ in range(12):
        await world.clock.advance(10)
        await asyncio.sleep(0.01)
    assert event_reasons(rig).count("InsufficientSubnetAddresses") == 1
