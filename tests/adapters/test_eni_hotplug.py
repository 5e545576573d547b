"""The local node's hypervisor (tests/rigs/eni_hotplug.py) between the EC2 backend and moto_server:
links are plugged on attach with the ENI's MAC and unplugged on free; a second attach at a used
device index is refused in EC2's words. ``ip link`` is recorded, not run (no root needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backends.aws.client import Ec2Config
from backends.aws.ec2 import Ec2Backend
from backends.aws.errors import CloudError
from ipamcore.effects import CreateEni
from tests.backends import moto_fixtures
from tests.backends.moto_fixtures import REGION, MotoEnv, session
from tests.rigs.eni_hotplug import EniHotplug

moto_server_url = moto_fixtures.moto_server_url
pytestmark = pytest.mark.moto_server


class IpLinkLog:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail_with: str | None = None

    def __call__(self, args: list[str]) -> None:
        if self.fail_with is not None:
            raise OSError(self.fail_with)
        self.calls.append(args)


@pytest.fixture
def world(moto_server_url: str) -> Iterator[MotoEnv]:
    with moto_fixtures.moto_world("server", lambda: moto_server_url) as env:
        yield env


@pytest.fixture
def links() -> IpLinkLog:
    return IpLinkLog()


@pytest.fixture
def hotplug(world: MotoEnv, links: IpLinkLog) -> Iterator[EniHotplug]:
    def mac_of(eni_id: str) -> str:
        found = world.client.describe_network_interfaces(NetworkInterfaceIds=[eni_id])
        return str(found["NetworkInterfaces"][0]["MacAddress"])

    proxy = EniHotplug(world.endpoint_url, world.instance_id, mac_of, links).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def backend_via(proxy: EniHotplug) -> Ec2Backend:
    config = Ec2Config(region=REGION, endpoint_url=proxy.url, max_attempts=1)
    return Ec2Backend(config, session=session(), sleep=lambda _s: None, clock=lambda: 1.7e9)


def test_attach_plugs_a_link_with_the_enis_mac_and_free_unplugs_it(
    world: MotoEnv, hotplug: EniHotplug, links: IpLinkLog
) -> None:
    backend = backend_via(hotplug)
    first = backend.create_eni(
        world.instance_id, CreateEni(0, world.subnet_id, (world.sg_id,), ipv4_count=2)
    )
    second = backend.create_eni(world.instance_id, CreateEni(0, world.subnet_id, (world.sg_id,)))
    assert (first.device_index, second.device_index) == (1, 2)
    assert links.calls == [
        ["add", "eth1", "address", first.mac.lower(), "type", "veth", "peer", "uplink1"],
        ["set", "uplink1", "up"],
        ["add", "eth2", "address", second.mac.lower(), "type", "veth", "peer", "uplink2"],
        ["set", "uplink2", "up"],
    ]
    assert {p.eni_id: p.link for p in hotplug.plugged.values()} == {
        first.eni_id: "eth1",
        second.eni_id: "eth2",
    }

    backend.free_eni(first.eni_id)
    assert links.calls[-1] == ["del", "eth1"]
    assert list(hotplug.plugged) == [second.eni_id]
    # Every other call went through unchanged.
    assert {e.eni_id for e in backend.describe_enis(world.instance_id)} >= {second.eni_id}


def test_a_used_device_index_is_refused_as_ec2_refuses_it(
    world: MotoEnv, hotplug: EniHotplug, links: IpLinkLog
) -> None:
    backend = backend_via(hotplug)
    backend.create_eni(world.instance_id, CreateEni(0, world.subnet_id, (world.sg_id,)))
    client = session().client("ec2", endpoint_url=hotplug.url)
    loose = client.create_network_interface(SubnetId=world.subnet_id)["NetworkInterface"]
    with pytest.raises(client.exceptions.ClientError) as info:
        client.attach_network_interface(
            NetworkInterfaceId=loose["NetworkInterfaceId"],
            InstanceId=world.instance_id,
            DeviceIndex=1,
        )
    error = info.value.response["Error"]
    assert error["Code"] == "InvalidParameterValue"
    assert "already has an interface attached at device index '1'" in error["Message"]
    assert len(hotplug.plugged) == 1 and len(links.calls) == 2
    # The backend's own attach steps over the used index (its device-index race handling).
    third = backend.create_eni(world.instance_id, CreateEni(0, world.subnet_id, (world.sg_id,)))
    assert third.device_index == 2 and hotplug.plugged[third.eni_id].link == "eth2"


def test_a_failed_plug_is_an_ec2_error_and_plugs_nothing(
    world: MotoEnv, hotplug: EniHotplug, links: IpLinkLog
) -> None:
    links.fail_with = "RTNETLINK answers: Operation not permitted"
    backend = backend_via(hotplug)
    with pytest.raises(CloudError) as info:
        backend.create_eni(world.instance_id, CreateEni(0, world.subnet_id, (world.sg_id,)))
    assert "hot-plug failed: RTNETLINK answers: Operation not permitted" in info.value.message
    assert hotplug.plugged == {}
