"""ENI_DELETE_ON_TERMINATION and the leaked-ENI cleanup at upstream's scope, in the daemon
(FakeCloud, virtual time): with ``false`` new ENIs are created and attached without the
ModifyNetworkInterfaceAttribute call, and the ENIs a terminated node leaves detached are freed
by another node's cleanup, but only those of its cluster, with our tags, over 5 minutes old."""

from __future__ import annotations

import pytest

from ipamcore.effects import CreateEni
from ipamcore.model import CLUSTER_NAME_TAG
from tests.adapters.harness import World, logs, until


@pytest.mark.parametrize("setting", ["", "true", "false"])
async def test_new_enis_get_delete_on_termination_unless_set_false(
    world: World, setting: str
) -> None:
    env = {"ENI_DELETE_ON_TERMINATION": setting} if setting else {}
    d = world.daemon(WARM_ENI_TARGET="2", **env)  # m5.large: fill the primary, create one ENI
    await d.start()
    try:
        await until(lambda: d.executor.stats().enis == 2, world.clock, step=0.25)
        [_, new] = world.cloud.enis_of(world.instance_id)
        wanted = setting != "false"
        assert world.cloud.vpc.enis[new.eni_id].delete_on_termination is wanted
        assert d.executor.calls.total("ModifyNetworkInterfaceAttribute") == int(wanted)
        assert d.executor.calls.total("AttachNetworkInterface") == 1
    finally:
        await d.stop()


async def test_cleanup_frees_a_terminated_nodes_eni_and_nothing_else(world: World) -> None:
    cloud, subnet = world.cloud, world.subnet_id

    def terminated_node_eni(cluster: str) -> str:
        node = cloud.launch_instance("m5.large", subnet)
        port = cloud.port(node, cluster_name=cluster, delete_on_termination=False)
        eni = port.create_eni(node, CreateEni(0, subnet, (), ipv4_count=3)).eni_id
        cloud.terminate_instance(node)
        assert cloud.eni_status(eni) == "available"
        return eni

    theirs = terminated_node_eni("c1")
    other_cluster = terminated_node_eni("c2")
    running = cloud.launch_instance("m5.large", subnet)
    not_ours = cloud.add_eni(running)  # created out of band, without our tags
    cloud.detach_eni(not_ours)
    d = world.daemon(
        CLUSTER_NAME="c1", ENI_DELETE_ON_TERMINATION="false",
        IPAMD_LEAKED_ENI_INTERVAL_SECONDS="400",
    )  # fmt: skip
    await d.start()
    try:
        assert theirs in cloud.vpc.enis  # the start sweep frees only this node's own
        await world.clock.advance(301)
        fresh = cloud.create_detached_eni(running, subnet, tags={CLUSTER_NAME_TAG: "c1"})
        await until(lambda: theirs not in cloud.vpc.enis, world.clock, step=10.0, limit=20)
        assert {other_cluster, not_ours, fresh} <= set(cloud.vpc.enis)
        assert "leaked ENI freed" in logs(world)
        # The running node never attached it: leaked once over 5 minutes old, at the next pass.
        await until(lambda: fresh not in cloud.vpc.enis, world.clock, step=10.0, limit=100)
        assert {other_cluster, not_ours} <= set(cloud.vpc.enis)
    finally:
        await d.stop()
