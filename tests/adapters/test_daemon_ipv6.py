"""IPv6 single stack (upstream's ENABLE_IPv6) and dual stack through the daemon in process:
FakeCloud whose subnet has an IPv6 /64, fake datapath, a real checkpoint file, virtual time."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator, Iterator

import pytest

from adapters import protocol as p
from adapters.ipamd.daemon import Daemon
from adapters.ipamd.executor import StartFailed
from adapters.ipamd.settings import SettingsError
from backends.checkpoint import read_checkpoint_file
from backends.fakecloud import FakeCloud
from backends.observe import MUTATING_ACTIONS, CallCounter
from ipamcore.errors import FailureKind
from ipamcore.netspec import POD_GATEWAY_V6, egress_v4_for, egress_v6_for
from tests.adapters.harness import World, add_request, call, del_request, logs, until
from tests.adapters.test_ipamctl import arun
from tests.adapters.test_monitoring import scrape

V6 = {"ENABLE_IPv6": "true", "ENABLE_IPv4": "false", "ENABLE_PREFIX_DELEGATION": "true"}
DUAL = {"ENABLE_IPv6": "true", "ENABLE_IPv4": "true"}
SUBNET_V6 = "2600:1f14:a0c:ce01::/64"


def v6_world(instance_type: str = "m5.large", ipv6_cidr: str = SUBNET_V6) -> World:
    world = World.create(instance_type)
    cloud = FakeCloud(throttling=False, clock=world.clock.now)
    cloud.observers.append(CallCounter())
    subnet = cloud.add_subnet("10.0.0.0/20", ipv6_cidr=ipv6_cidr)
    world.cloud, world.subnet_id = cloud, subnet
    world.instance_id = cloud.launch_instance(instance_type, subnet)
    return world


@pytest.fixture
def world() -> Iterator[World]:
    w = v6_world()
    yield w
    w.cleanup()


@pytest.fixture
async def v6_daemon(world: World) -> AsyncIterator[Daemon]:
    d = world.daemon(**V6)
    await d.start()
    yield d
    await d.stop()


def prefixes_on_primary(world: World) -> list[str]:
    return [p for e in world.cloud.enis_of(world.instance_id) for p in e.ipv6_prefixes]


def checkpoint_entries(world: World) -> list[dict[str, object]]:
    with open(world.checkpoint_path) as f:
        return list(json.load(f)["allocations"])


def mutating(world: World) -> dict[str, int]:
    """The fake cloud's mutating calls so far, by action."""
    counter = world.cloud.observers[0]
    assert isinstance(counter, CallCounter)
    return {a: n for (a, _o), n in counter.counts.items() if a in MUTATING_ACTIONS}


async def test_ipv6_pods_get_addresses_from_the_primary_enis_prefix(
    world: World, v6_daemon: Daemon
) -> None:
    (prefix,) = prefixes_on_primary(world)
    assert prefix.endswith("/80") and prefix.startswith("2600:1f14:a0c:ce01:")
    assert "WARM_ENI_TARGET, WARM_IP_TARGET, MINIMUM_IP_TARGET and WARM_PREFIX_TARGET are " \
        "ignored" in logs(world)  # fmt: skip
    replies = [await call(world.socket_path, add_request(n)) for n in range(1, 21)]
    assert all(r.ok for r in replies), replies[0]
    results = [p.AddResult.from_dict(r.result) for r in replies]
    addresses = {r.ipv6 for r in results}
    assert len(addresses) == 20 and all(r.ipv4 is None for r in results)
    assert all(r.gateway_v6 == POD_GATEWAY_V6 for r in results)
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network(prefix) for a in addresses)
    # one EC2 call in all: the prefix at start; none for the pods
    assert mutating(world) == {"AssignIpv6Addresses": 1}
    # the checkpoint, upstream's format: one entry per pod with "ipv6" and no "ipv4"
    entries = checkpoint_entries(world)
    assert {e["ipv6"] for e in entries} == addresses and {e["ipv4"] for e in entries} == {""}
    # the datapath got the IPv6 address and the node-local IPv4 egress address
    pod = world.datapath.namespaces["/var/run/netns/cni-1"]
    assert f"{results[0].ipv6}/128" in pod.links["eth0"].addresses
    assert f"{egress_v4_for(results[0].ipv6 or '')}/32" in pod.links["eth0"].addresses
    stats = v6_daemon.executor.stats()
    assert stats.assigned == 20 and stats.total == 2**48 and stats.prefixes == 1


async def test_ipv6_check_del_gc_and_restart(world: World, v6_daemon: Daemon) -> None:
    add = await call(world.socket_path, add_request(1))
    second = await call(world.socket_path, add_request(2))
    assert add.ok and second.ok
    check = add_request(1)
    check.op = p.OP_CHECK
    reply = await call(world.socket_path, check)
    assert reply.ok and reply.result == {"ipv6": add.result["ipv6"]}
    world.datapath._del_host_link(add.result["host_veth"])
    assert (await call(world.socket_path, check)).error_code == p.ERR_DATAPATH_FAILED
    assert (await call(world.socket_path, add_request(1))).result == add.result  # repaired
    gone = await call(world.socket_path, del_request(1))
    assert gone.ok and gone.result == {"released": True, "ipv6": add.result["ipv6"]}
    assert add.result["host_veth"] not in world.datapath.links
    assert [e["ipv6"] for e in checkpoint_entries(world)] == [second.result["ipv6"]]
    await v6_daemon.stop()

    again = world.daemon(**V6)
    await again.start()
    try:
        assert mutating(world) == {
            "AssignIpv6Addresses": 1
        }  # the prefix is still on the ENI: no call at start
        same = await call(world.socket_path, add_request(2))
        assert same.result == second.result  # restored from the checkpoint
        new = await call(world.socket_path, add_request(3))
        assert new.ok and new.result["ipv6"] not in (add.result["ipv6"], second.result["ipv6"])
        gc = p.Request(p.OP_GC, network_name="aws-cni", valid_attachments=[("c0003", "eth0")])
        assert (await call(world.socket_path, gc)).result["released"] == 1
        cp = read_checkpoint_file(world.checkpoint_path)
        assert cp is not None and [a.ipv6 for a in cp.allocations] == [new.result["ipv6"]]
    finally:
        await again.stop()


async def test_start_fails_naming_a_subnet_without_an_ipv6_cidr() -> None:
    world = v6_world(ipv6_cidr="")
    try:
        daemon = world.daemon(**V6)
        with pytest.raises(StartFailed) as caught:
            await daemon.start()
        assert "has no IPv6 CIDR block" in str(caught.value)
        assert world.subnet_id in str(caught.value)
    finally:
        world.cleanup()


async def test_start_fails_naming_a_non_nitro_instance_type() -> None:
    world = v6_world("t2.medium")
    try:
        daemon = world.daemon(**V6)
        with pytest.raises(StartFailed) as caught:
            await daemon.start()
        assert "t2.medium" in str(caught.value) and "nitro" in str(caught.value)
    finally:
        world.cleanup()


def test_ipv6_single_stack_needs_prefix_delegation(world: World) -> None:
    with pytest.raises(SettingsError, match="ENABLE_PREFIX_DELEGATION"):
        world.settings(ENABLE_IPv6="true", ENABLE_IPv4="false")
    with pytest.raises(SettingsError, match="ENABLE_IPv4"):
        world.settings(ENABLE_IPv4="false")


async def test_dual_stack_one_add_gives_both_families(world: World) -> None:
    daemon = world.daemon(**DUAL)
    await daemon.start()
    try:
        reply = await call(world.socket_path, add_request(1))
        assert reply.ok, reply
        result = p.AddResult.from_dict(reply.result)
        assert result.ipv4 and result.ipv6 and result.gateway_v6 == POD_GATEWAY_V6
        on_cloud = {a for e in world.cloud.enis_of(world.instance_id) for a in e.ipv4_addresses}
        assert result.ipv4 in on_cloud
        (entry,) = checkpoint_entries(world)  # one entry, both families
        assert (entry["ipv4"], entry["ipv6"]) == (result.ipv4, result.ipv6)
        pod = world.datapath.namespaces["/var/run/netns/cni-1"]
        assert {f"{result.ipv4}/32", f"{result.ipv6}/128"} <= pod.links["eth0"].addresses
        check = add_request(1)
        check.op = p.OP_CHECK
        assert (await call(world.socket_path, check)).result == {
            "ipv4": result.ipv4, "ipv6": result.ipv6,
        }  # fmt: skip
        gone = await call(world.socket_path, del_request(1))
        assert gone.result == {"released": True, "ipv4": result.ipv4, "ipv6": result.ipv6}
        assert checkpoint_entries(world) == [] and result.host_veth not in world.datapath.links
        stats = daemon.executor.core.v6_stats()
        assert stats.assigned == 0 and stats.prefixes == 1
        again = await call(world.socket_path, add_request(2))
        assert again.result["ipv6"] != result.ipv6  # a released IPv6 is not handed out again
    finally:
        await daemon.stop()
    restarted = world.daemon(**DUAL)
    await restarted.start()
    try:
        same = await call(world.socket_path, add_request(2))
        assert (same.result["ipv4"], same.result["ipv6"]) == (
            again.result["ipv4"], again.result["ipv6"],
        )  # fmt: skip
    finally:
        await restarted.stop()


async def test_introspection_metrics_and_ipamctl_carry_ipv6(world: World) -> None:
    daemon = world.daemon(**DUAL)
    await daemon.start()
    try:
        reply = await call(world.socket_path, add_request(1))
        v4, v6 = reply.result["ipv4"], reply.result["ipv6"]
        assert daemon.introspection is not None and daemon.metrics_server is not None
        url = f"http://127.0.0.1:{daemon.introspection.port}"
        enis = json.loads((await arun("--introspection", url, "--json", "enis"))[1])
        primary = next(e for e in enis["ENIs"].values() if e["IsPrimary"])
        ((prefix, block),) = primary["IPv6Cidrs"].items()
        assert prefix.endswith("/80") and block["AddressFamily"] == "6"
        assert list(block["IPAddresses"]) == [v6]
        code, out = await arun("--introspection", url, "pods")
        assert code == 0 and "IPV6" in out.splitlines()[0] and v4 in out and v6 in out
        code, out = await arun("--introspection", url, "enis")
        assert code == 0 and prefix in out
        code, out = await arun("checkpoint", "--path", world.checkpoint_path)
        assert code == 0 and v4 in out and v6 in out
        metrics = await scrape(daemon)
        assert "ipamcore_ipv6_prefixes 1.0" in metrics
        assert "ipamcore_ipv6_assigned_addresses 1.0" in metrics
    finally:
        await daemon.stop()


async def test_a_throttled_prefix_request_at_start_is_retried(world: World) -> None:
    world.cloud.fail_next("AssignIpv6Addresses", FailureKind.THROTTLED)
    world.cloud.fail_next("AssignIpv6Addresses", FailureKind.THROTTLED)
    daemon = world.daemon(**V6)
    started = asyncio.create_task(daemon.start())
    try:
        await until(started.done, world.clock, step=1.0, limit=60)
        started.result()
        assert len(prefixes_on_primary(world)) == 1
        assert "EC2 throttled the IPv6 prefix request at start; retrying" in logs(world)
        assert (await call(world.socket_path, add_request(1))).result["ipv6"]
    finally:
        await daemon.stop()


async def test_v6_egress_gives_ipv4_pods_a_node_local_ipv6_address(world: World) -> None:
    """ENABLE_V6_EGRESS on a node with an IPv6 address (the fake's metadata gives one): an
    IPv4 pod also gets fd00::ac00:<its IPv4>; the CNI result keeps its IPv4 address only."""
    daemon = world.daemon(ENABLE_V6_EGRESS="true", WARM_IP_TARGET="2")
    await daemon.start()
    try:
        await until(lambda: daemon.executor.stats().available >= 1, world.clock)
        reply = await call(world.socket_path, add_request(1))
        result = p.AddResult.from_dict(reply.result)
        assert result.ipv4 and result.ipv6 is None
        pod = world.datapath.namespaces["/var/run/netns/cni-1"]
        assert f"{egress_v6_for(result.ipv4)}/128" in pod.links["eth0"].addresses
        assert (await call(world.socket_path, del_request(1))).ok
        assert result.host_veth not in world.datapath.links
    finally:
        await daemon.stop()
    plain = world.daemon(WARM_IP_TARGET="2")
    await plain.start()
    try:
        await until(lambda: plain.executor.stats().available >= 1, world.clock)
        reply = await call(world.socket_path, add_request(2))
        pod = world.datapath.namespaces["/var/run/netns/cni-2"]
        assert [a for a in pod.links["eth0"].addresses if ":" in a] == []  # off by default
    finally:
        await plain.stop()
