"""The EC2 backend against moto, both in-process (mock_aws) and through moto_server."""

from __future__ import annotations

import pytest

from backends.aws.client import Ec2Config
from backends.aws.convert import rfc3339
from backends.aws.ec2 import Ec2Backend
from backends.observe import OK
from ipamcore.effects import CreateEni
from ipamcore.errors import CloudError, FailureKind
from ipamcore.model import (
    CLUSTER_NAME_TAG,
    CREATED_AT_TAG,
    INSTANCE_ID_TAG,
    SUBNET_DISCOVERY_TAG,
)
from tests.backends import moto_fixtures
from tests.backends.moto_fixtures import REGION, SUBNET_CIDR, ZONE, MotoEnv, free_port, session

moto_env = moto_fixtures.moto_env
moto_server_url = moto_fixtures.moto_server_url

pytestmark = pytest.mark.moto_server


def test_describe_enis_shows_the_primary_eni(moto_env: MotoEnv) -> None:
    enis = moto_env.backend().describe_enis(moto_env.instance_id)
    assert len(enis) == 1
    (eni,) = enis
    assert eni.is_primary and eni.device_index == 0 and eni.network_card == 0
    assert eni.subnet_id == moto_env.subnet_id
    assert eni.subnet_cidr == SUBNET_CIDR
    assert eni.ipv4_addresses == ()
    assert eni.primary_ip.startswith("10.0.")
    assert moto_env.sg_id in eni.security_groups
    assert eni.subnet_gateway == "10.0.0.1"


def test_create_eni_tags_attaches_and_sets_delete_on_termination(moto_env: MotoEnv) -> None:
    config = Ec2Config(
        region=REGION,
        endpoint_url=moto_env.endpoint_url,
        cluster_name="demo",
        extra_tags={"team": "net"},
    )
    backend = moto_env.backend(config=config)
    eni = backend.create_eni(
        moto_env.instance_id,
        CreateEni(0, moto_env.subnet_id, (moto_env.sg_id,), ipv4_count=3),
        {"purpose": "pods"},
    )
    assert eni.device_index == 1 and not eni.is_primary
    assert len(eni.ipv4_addresses) == 3 and eni.primary_ip not in eni.ipv4_addresses
    assert eni.security_groups == (moto_env.sg_id,)
    assert eni.subnet_cidr == SUBNET_CIDR
    tags = eni.tag_map
    assert tags[INSTANCE_ID_TAG] == moto_env.instance_id
    assert tags[CREATED_AT_TAG] == rfc3339(moto_env.now) == "2023-11-14T22:13:20Z"
    assert tags[CLUSTER_NAME_TAG] == "demo"
    assert tags["team"] == "net" and tags["purpose"] == "pods"

    raw = moto_env.client.describe_network_interfaces(NetworkInterfaceIds=[eni.eni_id])
    (described,) = raw["NetworkInterfaces"]
    assert described["Description"] == f"aws-K8S-{moto_env.instance_id}"
    # moto ignores Attachment.DeleteOnTermination; the request shape is checked with a Stubber
    assert moto_env.counter.total("ModifyNetworkInterfaceAttribute", OK) == 1
    assert described["Attachment"]["InstanceId"] == moto_env.instance_id

    observed = backend.describe_enis(moto_env.instance_id)
    assert [e.device_index for e in observed] == [0, 1]
    assert observed[1].ipv4_addresses == eni.ipv4_addresses
    assert observed[1].tag_map == tags


def test_create_eni_takes_the_lowest_free_device_index(moto_env: MotoEnv) -> None:
    backend = moto_env.backend()
    effect = CreateEni(0, moto_env.subnet_id, (moto_env.sg_id,))
    first = backend.create_eni(moto_env.instance_id, effect)
    second = backend.create_eni(moto_env.instance_id, effect)
    assert (first.device_index, second.device_index) == (1, 2)
    backend.free_eni(first.eni_id)
    third = backend.create_eni(moto_env.instance_id, effect)
    assert third.device_index == 1


def test_create_eni_attaches_at_the_device_index_the_core_reserved(moto_env: MotoEnv) -> None:
    backend = moto_env.backend()
    effect = CreateEni(0, moto_env.subnet_id, (moto_env.sg_id,), ipv4_count=2, device_index=3)
    eni = backend.create_eni(moto_env.instance_id, effect)
    assert eni.device_index == 3 and len(eni.ipv4_addresses) == 2
    observed = backend.describe_enis(moto_env.instance_id)
    assert sorted(e.device_index for e in observed) == [0, 3]


def test_assign_returns_only_new_addresses_and_unassign_removes_them(moto_env: MotoEnv) -> None:
    backend = moto_env.backend()
    eni = backend.create_eni(
        moto_env.instance_id, CreateEni(0, moto_env.subnet_id, (moto_env.sg_id,), ipv4_count=2)
    )
    added = backend.assign_ipv4(eni.eni_id, 3)
    assert len(added) == 3
    assert not set(added) & {*eni.ipv4_addresses, eni.primary_ip}
    (after,) = [e for e in backend.describe_enis(moto_env.instance_id) if e.eni_id == eni.eni_id]
    assert set(after.ipv4_addresses) == {*eni.ipv4_addresses, *added}

    backend.unassign_ipv4(eni.eni_id, added[:2])
    (after,) = [e for e in backend.describe_enis(moto_env.instance_id) if e.eni_id == eni.eni_id]
    assert set(after.ipv4_addresses) == {*eni.ipv4_addresses, added[2]}
    assert backend.assign_ipv4(eni.eni_id, 0) == ()


def test_free_eni_detaches_and_deletes_then_is_not_found(moto_env: MotoEnv) -> None:
    backend = moto_env.backend()
    eni = backend.create_eni(
        moto_env.instance_id, CreateEni(0, moto_env.subnet_id, (moto_env.sg_id,))
    )
    backend.free_eni(eni.eni_id)
    assert [e.device_index for e in backend.describe_enis(moto_env.instance_id)] == [0]
    with pytest.raises(Exception) as info:
        moto_env.client.describe_network_interfaces(NetworkInterfaceIds=[eni.eni_id])
    assert "NotFound" in str(info.value)
    with pytest.raises(CloudError) as gone:
        backend.free_eni(eni.eni_id)
    assert gone.value.kind is FailureKind.NOT_FOUND
    assert moto_env.sleep.calls == []  # moto detaches at once: no polling needed


def test_describe_subnets_by_id_by_tag_and_cached_cidrs(moto_env: MotoEnv) -> None:
    backend = moto_env.backend()
    (subnet,) = backend.describe_subnets([moto_env.subnet_id])
    assert subnet.cidr == SUBNET_CIDR and subnet.availability_zone == ZONE
    assert 4000 < subnet.free_addresses <= 4091
    tagged = backend.describe_subnets(tag_key=SUBNET_DISCOVERY_TAG)
    assert [s.subnet_id for s in tagged] == [moto_env.subnet_id]
    assert tagged[0].tag_map == {SUBNET_DISCOVERY_TAG: "1"}

    moto_env.counter.counts.clear()
    backend.describe_enis(moto_env.instance_id)
    backend.describe_enis(moto_env.instance_id)
    assert moto_env.counter.total("DescribeSubnets") == 0  # CIDR came from the cache
    assert moto_env.counter.total("DescribeNetworkInterfaces", OK) == 2


def test_describe_enis_describes_an_unknown_subnet_once(moto_env: MotoEnv) -> None:
    backend = moto_env.backend()
    backend.describe_enis(moto_env.instance_id)
    backend.describe_enis(moto_env.instance_id)
    assert moto_env.counter.total("DescribeSubnets") == 1


def test_find_leaked_enis_by_tag_status_and_age(moto_env: MotoEnv) -> None:
    backend = moto_env.backend()
    now = moto_env.now

    def make(created: str | None, owner: str) -> str:
        tags = [{"Key": INSTANCE_ID_TAG, "Value": owner}]
        if created is not None:
            tags.append({"Key": CREATED_AT_TAG, "Value": created})
        return str(
            moto_env.client.create_network_interface(
                SubnetId=moto_env.subnet_id,
                TagSpecifications=[{"ResourceType": "network-interface", "Tags": tags}],
            )["NetworkInterface"]["NetworkInterfaceId"]
        )

    old = make(rfc3339(now - 301), moto_env.instance_id)
    make(rfc3339(now - 60), moto_env.instance_id)  # too young
    make(rfc3339(now - 3600), "i-someoneelse")  # another node's
    untagged = make(None, moto_env.instance_id)  # no createdAt: stamped now, not yet leaked
    attached = backend.create_eni(
        moto_env.instance_id, CreateEni(0, moto_env.subnet_id, (moto_env.sg_id,))
    )

    assert backend.find_leaked_enis(moto_env.instance_id, now) == [old]
    (raw,) = moto_env.client.describe_network_interfaces(NetworkInterfaceIds=[untagged])[
        "NetworkInterfaces"
    ]
    assert {t["Key"]: t["Value"] for t in raw["TagSet"]}[CREATED_AT_TAG] == rfc3339(now)
    later = backend.find_leaked_enis(moto_env.instance_id, now + 3600)
    assert attached.eni_id not in later
    assert old in later and untagged in later and len(later) == 3


def test_describe_instance_type_reads_network_limits(moto_env: MotoEnv) -> None:
    limits = moto_env.backend().describe_instance_type("m5.large")
    assert (limits.max_enis, limits.ipv4_per_eni) == (3, 10)
    assert limits.hypervisor == "nitro" and not limits.is_bare_metal
    assert limits.network_cards == ((0, 3),)
    assert limits.max_pods == 29
    with pytest.raises(CloudError) as info:
        moto_env.backend().describe_instance_type("no.such-type")
    assert info.value.kind is FailureKind.NOT_FOUND and info.value.code == "InvalidInstanceType"


def test_missing_eni_is_not_found(moto_env: MotoEnv) -> None:
    backend = moto_env.backend()
    with pytest.raises(CloudError) as info:
        backend.assign_ipv4("eni-0000000000000000f", 1)
    assert info.value.kind is FailureKind.NOT_FOUND
    assert info.value.code == "InvalidNetworkInterfaceID.NotFound"
    assert moto_env.counter.total("AssignPrivateIpAddresses", "not_found") == 1


def test_every_call_is_observed(moto_env: MotoEnv) -> None:
    backend = moto_env.backend()
    eni = backend.create_eni(
        moto_env.instance_id, CreateEni(0, moto_env.subnet_id, (moto_env.sg_id,))
    )
    backend.free_eni(eni.eni_id)
    counts = {action for action, outcome in moto_env.counter.counts if outcome == OK}
    assert {
        "CreateNetworkInterface",
        "DescribeNetworkInterfaces",
        "AttachNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
        "DetachNetworkInterface",
        "DeleteNetworkInterface",
    } <= counts
    assert moto_env.counter.mutating() == 5
    assert all(v >= 0 for v in moto_env.counter.latency_s.values())


def test_unreachable_endpoint_is_a_cloud_error() -> None:
    config = Ec2Config(
        region=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        max_attempts=1,
        connect_timeout_s=1,
    )
    backend = Ec2Backend(config, session=session())
    with pytest.raises(CloudError) as info:
        backend.describe_enis("i-0123")
    assert info.value.kind is FailureKind.OTHER
    assert info.value.code == "EndpointConnectionError"
