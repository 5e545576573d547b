"""EC2 backend paths moto cannot show, against botocore's Stubber.

The Stubber validates every request against the EC2 service model and checks the exact
parameters, so these tests pin the request shapes (prefix counts, tags, DeleteOnTermination)
as well as the handling of real-EC2 responses and errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError  # type: ignore[import-untyped]
from botocore.stub import Stubber  # type: ignore[import-untyped]

from backends.aws.client import Ec2Config
from backends.aws.convert import rfc3339
from backends.aws.ec2 import Ec2Backend
from backends.aws.errors import translate
from backends.observe import OK, CallCounter
from ipamcore.effects import CreateEni
from ipamcore.errors import CloudError, FailureKind
from ipamcore.model import CLUSTER_NAME_TAG, CREATED_AT_TAG, INSTANCE_ID_TAG
from tests.backends.moto_fixtures import REGION, FakeSleep, session

IID = "i-0123456789abcdef0"
SUBNET = "subnet-0aaaaaaaaaaaaaaaa"
NEW_ENI = "eni-0bbbbbbbbbbbbbbbb"
NOW = 1_700_000_000.0
ATTACHED = [{"Name": "attachment.instance-id", "Values": [IID]}]


def eni_item(
    eni_id: str,
    device: int | None,
    *,
    ips: tuple[str, ...] = (),
    prefixes: tuple[str, ...] = (),
    status: str = "in-use",
    card: int = 0,
    interface_type: str = "interface",
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "NetworkInterfaceId": eni_id,
        "MacAddress": f"02:00:00:00:00:{device or 0:02x}",
        "SubnetId": SUBNET,
        "PrivateIpAddress": "10.0.0.10",
        "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.0.10", "Primary": True}]
        + [{"PrivateIpAddress": ip, "Primary": False} for ip in ips],
        "Ipv4Prefixes": [{"Ipv4Prefix": p} for p in prefixes],
        "Groups": [{"GroupId": "sg-1", "GroupName": "pods"}],
        "Status": status,
        "InterfaceType": interface_type,
        "TagSet": [],
    }
    if device is not None:
        item["Attachment"] = {
            "AttachmentId": f"eni-attach-{eni_id[4:]}",
            "DeviceIndex": device,
            "NetworkCardIndex": card,
            "InstanceId": IID,
            "Status": "attached",
        }
    return item


@pytest.fixture
def counter() -> CallCounter:
    return CallCounter()


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def stubbed(counter: CallCounter, sleep: FakeSleep) -> Iterator[tuple[Ec2Backend, Stubber]]:
    client = session().client("ec2", region_name=REGION)
    config = Ec2Config(region=REGION, cluster_name="prod", extra_tags={"team": "net"})
    backend = Ec2Backend(config, client=client, observer=counter, sleep=sleep, clock=lambda: NOW)
    with Stubber(client) as stub:
        yield backend, stub
        stub.assert_no_pending_responses()


def expect_describe(stub: Stubber, *items: dict[str, Any]) -> None:
    stub.add_response(
        "describe_network_interfaces", {"NetworkInterfaces": list(items)}, {"Filters": ATTACHED}
    )


def expect_describe_one(stub: Stubber, item: dict[str, Any]) -> None:
    stub.add_response(
        "describe_network_interfaces",
        {"NetworkInterfaces": [item]},
        {"NetworkInterfaceIds": [item["NetworkInterfaceId"]]},
    )


def expect_subnet(stub: Stubber) -> None:
    stub.add_response(
        "describe_subnets",
        {
            "Subnets": [
                {"SubnetId": SUBNET, "CidrBlock": "10.0.0.0/20", "AvailableIpAddressCount": 9}
            ]
        },
        {"SubnetIds": [SUBNET]},
    )


def expect_create(stub: Stubber, extra: dict[str, Any], created: dict[str, Any]) -> None:
    tags = {
        INSTANCE_ID_TAG: IID,
        CREATED_AT_TAG: rfc3339(NOW),
        CLUSTER_NAME_TAG: "prod",
        "team": "net",
    }
    params = {
        "SubnetId": SUBNET,
        "Description": f"aws-K8S-{IID}",
        "Groups": ["sg-1"],
        "TagSpecifications": [
            {
                "ResourceType": "network-interface",
                "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
            }
        ],
        **extra,
    }
    stub.add_response("create_network_interface", {"NetworkInterface": created}, params)


def expect_attach(stub: Stubber, index: int) -> None:
    stub.add_response(
        "attach_network_interface",
        {"AttachmentId": "eni-attach-new"},
        {"NetworkInterfaceId": NEW_ENI, "InstanceId": IID, "DeviceIndex": index},
    )


def expect_card_attach(stub: Stubber, device: int, card: int) -> None:
    """AttachNetworkInterface of the new ENI at ``device`` of network card ``card``."""
    stub.add_response(
        "attach_network_interface",
        {"AttachmentId": "eni-attach-new", "NetworkCardIndex": card},
        {"NetworkInterfaceId": NEW_ENI, "InstanceId": IID, "DeviceIndex": device,
         "NetworkCardIndex": card},
    )  # fmt: skip


def expect_delete_on_termination(stub: Stubber) -> None:
    stub.add_response(
        "modify_network_interface_attribute",
        {},
        {
            "NetworkInterfaceId": NEW_ENI,
            "Attachment": {"AttachmentId": "eni-attach-new", "DeleteOnTermination": True},
        },
    )


def test_create_eni_with_prefixes_in_one_call(stubbed: tuple[Ec2Backend, Stubber]) -> None:
    backend, stub = stubbed
    created = eni_item(NEW_ENI, None, prefixes=("10.0.1.0/28", "10.0.1.16/28"), status="available")
    expect_create(stub, {"Ipv4PrefixCount": 2}, created)
    expect_describe(stub, eni_item("eni-primary", 0))
    expect_attach(stub, 1)
    expect_delete_on_termination(stub)
    expect_subnet(stub)
    eni = backend.create_eni(IID, CreateEni(0, SUBNET, ("sg-1",), prefix_count=2))
    assert eni.ipv4_prefixes == ("10.0.1.0/28", "10.0.1.16/28")
    assert (eni.device_index, eni.network_card, eni.is_primary) == (1, 0, False)
    assert eni.subnet_cidr == "10.0.0.0/20"


def test_create_eni_with_secondary_ips_and_ipv6_prefix(stubbed: tuple[Ec2Backend, Stubber]) -> None:
    backend, stub = stubbed
    created = eni_item(NEW_ENI, None, ips=("10.0.0.11", "10.0.0.12"), status="available")
    expect_create(stub, {"SecondaryPrivateIpAddressCount": 2, "Ipv6PrefixCount": 1}, created)
    expect_describe(stub, eni_item("eni-primary", 0))
    expect_attach(stub, 1)
    expect_delete_on_termination(stub)
    expect_subnet(stub)
    eni = backend.create_eni(IID, CreateEni(0, SUBNET, ("sg-1",), ipv4_count=2, ipv6_prefix=True))
    assert eni.ipv4_addresses == ("10.0.0.11", "10.0.0.12")


def test_create_eni_on_a_network_card_sends_network_card_index(
    stubbed: tuple[Ec2Backend, Stubber],
) -> None:
    """AttachNetworkInterface with NetworkCardIndex: the exact request EC2 gets for an ENI
    on card 2 at the device index the core reserved on that card (moto ignores the card)."""
    backend, stub = stubbed
    expect_create(
        stub, {"SecondaryPrivateIpAddressCount": 1}, eni_item(NEW_ENI, None, ips=("10.0.0.11",))
    )
    expect_card_attach(stub, 1, 2)
    expect_delete_on_termination(stub)
    expect_subnet(stub)
    effect = CreateEni(0, SUBNET, ("sg-1",), ipv4_count=1, device_index=1, network_card=2)
    eni = backend.create_eni(IID, effect)
    assert (eni.network_card, eni.device_index, eni.is_primary) == (2, 1, False)


def test_create_eni_on_a_card_with_its_ipv6_prefix_is_one_create_and_a_card_attach(
    stubbed: tuple[Ec2Backend, Stubber],
) -> None:
    """IPv6 mode with ENABLE_MULTI_NIC: the exact requests for card 1's ENI, which moto
    cannot express (it ignores NetworkCardIndex): CreateNetworkInterface with
    Ipv6PrefixCount=1 and no IPv4 count, then AttachNetworkInterface on card 1, device 0."""
    backend, stub = stubbed
    created = eni_item(NEW_ENI, None, status="available")
    created["Ipv6Prefixes"] = [{"Ipv6Prefix": "2600:1f14:0:7:1::/80"}]
    expect_create(stub, {"Ipv6PrefixCount": 1}, created)
    expect_card_attach(stub, 0, 1)
    expect_delete_on_termination(stub)
    expect_subnet(stub)
    effect = CreateEni(0, SUBNET, ("sg-1",), ipv6_prefix=True, device_index=0, network_card=1)
    eni = backend.create_eni(IID, effect)
    assert (eni.network_card, eni.device_index) == (1, 0)
    assert eni.ipv6_prefixes == ("2600:1f14:0:7:1::/80",) and eni.ipv4_addresses == ()
    stub.assert_no_pending_responses()


def test_free_device_index_is_counted_per_card(stubbed: tuple[Ec2Backend, Stubber]) -> None:
    """With no index reserved, the lowest free index of the ENI's own card: devices 1 and 2
    of card 0 do not push card 1's first ENI past device 1."""
    backend, stub = stubbed
    expect_create(stub, {}, eni_item(NEW_ENI, None, status="available"))
    expect_describe(
        stub, eni_item("eni-primary", 0), eni_item("eni-a", 1), eni_item("eni-b", 2),
        eni_item("eni-c", 2, card=1),
    )  # fmt: skip
    stub.add_response(
        "attach_network_interface",
        {"AttachmentId": "eni-attach-new"},
        {"NetworkInterfaceId": NEW_ENI, "InstanceId": IID, "DeviceIndex": 1, "NetworkCardIndex": 1},
    )
    expect_delete_on_termination(stub)
    expect_subnet(stub)
    eni = backend.create_eni(IID, CreateEni(0, SUBNET, ("sg-1",), network_card=1))
    assert (eni.network_card, eni.device_index) == (1, 1)


def test_attach_retries_the_next_index_on_a_device_index_race(
    stubbed: tuple[Ec2Backend, Stubber], counter: CallCounter
) -> None:
    backend, stub = stubbed
    expect_create(stub, {}, eni_item(NEW_ENI, None, status="available"))
    expect_describe(stub, eni_item("eni-primary", 0), eni_item("eni-a", 1))
    stub.add_client_error(
        "attach_network_interface",
        "InvalidParameterValue",
        f"Instance '{IID}' already has an interface attached at device index '2'.",
        expected_params={"NetworkInterfaceId": NEW_ENI, "InstanceId": IID, "DeviceIndex": 2},
    )
    expect_describe(stub, eni_item("eni-primary", 0), eni_item("eni-a", 1), eni_item("eni-b", 2))
    expect_attach(stub, 3)
    expect_delete_on_termination(stub)
    expect_subnet(stub)
    assert backend.create_eni(IID, CreateEni(0, SUBNET, ("sg-1",))).device_index == 3
    assert counter.counts[("AttachNetworkInterface", "other")] == 1
    assert counter.counts[("AttachNetworkInterface", OK)] == 1


def test_failed_attach_deletes_the_new_eni(stubbed: tuple[Ec2Backend, Stubber]) -> None:
    backend, stub = stubbed
    expect_create(stub, {}, eni_item(NEW_ENI, None, status="available"))
    expect_describe(stub, eni_item("eni-primary", 0))
    stub.add_client_error("attach_network_interface", "AttachmentLimitExceeded", "too many")
    stub.add_response("delete_network_interface", {}, {"NetworkInterfaceId": NEW_ENI})
    with pytest.raises(CloudError) as info:
        backend.create_eni(IID, CreateEni(0, SUBNET, ("sg-1",)))
    assert info.value.kind is FailureKind.LIMIT_EXCEEDED
    assert info.value.code == "AttachmentLimitExceeded"


def test_attach_gives_up_after_repeated_races(sleep: FakeSleep) -> None:
    client = session().client("ec2", region_name=REGION)
    backend = Ec2Backend(Ec2Config(region=REGION), client=client, sleep=sleep, attach_attempts=2)
    with Stubber(client) as stub:
        stub.add_response("create_network_interface", {"NetworkInterface": eni_item(NEW_ENI, None)})
        for _ in range(2):
            expect_describe(stub, eni_item("eni-primary", 0))
            stub.add_client_error(
                "attach_network_interface", "InvalidParameterValue", "device index in use"
            )
        stub.add_response("delete_network_interface", {}, {"NetworkInterfaceId": NEW_ENI})
        with pytest.raises(CloudError) as info:
            backend.create_eni(IID, CreateEni(0, SUBNET, ()))
        stub.assert_no_pending_responses()
    assert info.value.kind is FailureKind.OTHER and "no free device index" in info.value.message


def test_failed_delete_on_termination_frees_the_attached_eni(
    stubbed: tuple[Ec2Backend, Stubber],
) -> None:
    backend, stub = stubbed
    expect_create(stub, {}, eni_item(NEW_ENI, None, status="available"))
    expect_describe(stub, eni_item("eni-primary", 0))
    expect_attach(stub, 1)
    stub.add_client_error("modify_network_interface_attribute", "UnauthorizedOperation", "no")
    expect_describe_one(stub, eni_item(NEW_ENI, 1))
    stub.add_response("detach_network_interface", {}, {"AttachmentId": f"eni-attach-{NEW_ENI[4:]}"})
    expect_describe_one(stub, eni_item(NEW_ENI, None, status="available"))
    stub.add_response("delete_network_interface", {}, {"NetworkInterfaceId": NEW_ENI})
    with pytest.raises(CloudError) as info:
        backend.create_eni(IID, CreateEni(0, SUBNET, ("sg-1",)))
    assert info.value.code == "UnauthorizedOperation"


def test_free_eni_polls_until_available_with_the_injected_sleep(
    stubbed: tuple[Ec2Backend, Stubber], sleep: FakeSleep
) -> None:
    backend, stub = stubbed
    expect_describe_one(stub, eni_item(NEW_ENI, 1))
    stub.add_response("detach_network_interface", {}, {"AttachmentId": f"eni-attach-{NEW_ENI[4:]}"})
    expect_describe_one(stub, eni_item(NEW_ENI, 1))  # still detaching
    expect_describe_one(stub, eni_item(NEW_ENI, 1))
    expect_describe_one(stub, eni_item(NEW_ENI, None, status="available"))
    stub.add_response("delete_network_interface", {}, {"NetworkInterfaceId": NEW_ENI})
    backend.free_eni(NEW_ENI)
    assert sleep.calls == [0.5, 1.0]


def test_delete_is_retried_while_the_eni_is_in_use(
    stubbed: tuple[Ec2Backend, Stubber], sleep: FakeSleep
) -> None:
    backend, stub = stubbed
    expect_describe_one(stub, eni_item(NEW_ENI, None, status="available"))
    for _ in range(2):
        stub.add_client_error("delete_network_interface", "InvalidNetworkInterface.InUse", "busy")
    stub.add_response("delete_network_interface", {}, {"NetworkInterfaceId": NEW_ENI})
    backend.free_eni(NEW_ENI)
    assert sleep.calls == [0.5, 1.0]


def test_delete_gives_up_after_its_attempts(sleep: FakeSleep) -> None:
    client = session().client("ec2", region_name=REGION)
    backend = Ec2Backend(Ec2Config(region=REGION), client=client, sleep=sleep, delete_attempts=3)
    with Stubber(client) as stub:
        expect_describe_one(stub, eni_item(NEW_ENI, None, status="available"))
        for _ in range(3):
            stub.add_client_error("delete_network_interface", "InvalidNetworkInterface.InUse", "x")
        with pytest.raises(CloudError) as info:
            backend.free_eni(NEW_ENI)
    assert info.value.code == "InvalidNetworkInterface.InUse"
    assert len(sleep.calls) == 2


def test_assign_returns_what_real_ec2_reports(stubbed: tuple[Ec2Backend, Stubber]) -> None:
    backend, stub = stubbed
    stub.add_response(
        "assign_private_ip_addresses",
        {"AssignedIpv4Prefixes": [{"Ipv4Prefix": "10.0.2.0/28"}]},
        {"NetworkInterfaceId": NEW_ENI, "Ipv4PrefixCount": 1},
    )
    stub.add_response(
        "assign_private_ip_addresses",
        {"AssignedPrivateIpAddresses": [{"PrivateIpAddress": "10.0.0.30"}]},
        {"NetworkInterfaceId": NEW_ENI, "SecondaryPrivateIpAddressCount": 1},
    )
    assert backend.assign_prefixes(NEW_ENI, 1) == ("10.0.2.0/28",)
    assert backend.assign_ipv4(NEW_ENI, 1) == ("10.0.0.30",)


def test_unassign_request_shapes(stubbed: tuple[Ec2Backend, Stubber]) -> None:
    backend, stub = stubbed
    stub.add_response(
        "unassign_private_ip_addresses",
        {},
        {"NetworkInterfaceId": NEW_ENI, "Ipv4Prefixes": ["10.0.2.0/28"]},
    )
    stub.add_response(
        "unassign_private_ip_addresses",
        {},
        {"NetworkInterfaceId": NEW_ENI, "PrivateIpAddresses": ["10.0.0.30", "10.0.0.31"]},
    )
    backend.unassign_prefixes(NEW_ENI, ["10.0.2.0/28"])
    backend.unassign_ipv4(NEW_ENI, ["10.0.0.30", "10.0.0.31"])
    backend.unassign_ipv4(NEW_ENI, [])  # nothing to do: no call
    backend.unassign_prefixes(NEW_ENI, [])
    assert backend.assign_prefixes(NEW_ENI, 0) == ()


def test_describe_enis_reads_cards_types_and_prefixes(stubbed: tuple[Ec2Backend, Stubber]) -> None:
    backend, stub = stubbed
    efa = eni_item("eni-efa", 0, card=1, interface_type="efa")
    efa_only = eni_item("eni-efaonly", 0, card=2, interface_type="efa-only")
    trunk = eni_item("eni-trunk", 1, prefixes=("10.0.3.0/28",), interface_type="trunk")
    trunk["Ipv6Prefixes"] = [{"Ipv6Prefix": "2600:1f14::/80"}]
    expect_describe(stub, efa, efa_only, trunk, eni_item("eni-primary", 0, ips=("10.0.0.20",)))
    expect_subnet(stub)
    enis = backend.describe_enis(IID)
    assert [(e.eni_id, e.network_card, e.device_index) for e in enis] == [
        ("eni-primary", 0, 0),
        ("eni-trunk", 0, 1),
        ("eni-efa", 1, 0),
        ("eni-efaonly", 2, 0),
    ]
    primary, trunk_eni, efa_eni, efa_only_eni = enis
    assert efa_only_eni.is_efa_only and efa_only_eni.is_efa and not efa_eni.is_efa_only
    assert primary.is_primary and primary.ipv4_addresses == ("10.0.0.20",)
    assert trunk_eni.is_trunk and trunk_eni.ipv4_prefixes == ("10.0.3.0/28",)
    assert trunk_eni.ipv6_prefixes == ("2600:1f14::/80",)
    assert efa_eni.is_efa and not efa_eni.is_primary


def test_describe_instance_type_of_a_bare_metal_multi_card_type(
    stubbed: tuple[Ec2Backend, Stubber],
) -> None:
    backend, stub = stubbed
    stub.add_response(
        "describe_instance_types",
        {
            "InstanceTypes": [
                {
                    "InstanceType": "p5.48xlarge",
                    "BareMetal": True,
                    "NetworkInfo": {
                        "MaximumNetworkInterfaces": 64,
                        "Ipv4AddressesPerInterface": 50,
                        "DefaultNetworkCardIndex": 0,
                        "NetworkCards": [
                            {"NetworkCardIndex": 0, "MaximumNetworkInterfaces": 2},
                            {"NetworkCardIndex": 1, "MaximumNetworkInterfaces": 2},
                        ],
                    },
                }
            ]
        },
        {"InstanceTypes": ["p5.48xlarge"]},
    )
    stub.add_response("describe_instance_types", {"InstanceTypes": []})
    limits = backend.describe_instance_type("p5.48xlarge")
    assert (limits.max_enis, limits.ipv4_per_eni) == (64, 50)
    assert limits.is_bare_metal and limits.hypervisor == "unknown"
    assert limits.supports_prefix_delegation
    assert limits.network_cards == ((0, 2), (1, 2))
    with pytest.raises(CloudError) as info:
        backend.describe_instance_type("x9.huge")
    assert info.value.kind is FailureKind.NOT_FOUND


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("RequestLimitExceeded", FailureKind.THROTTLED),
        ("Throttling", FailureKind.THROTTLED),
        ("InsufficientFreeAddressesInSubnet", FailureKind.SUBNET_FULL),
        ("InsufficientCidrBlocks", FailureKind.SUBNET_FULL),
        ("AttachmentLimitExceeded", FailureKind.LIMIT_EXCEEDED),
        ("PrivateIpAddressLimitExceeded", FailureKind.LIMIT_EXCEEDED),
        ("NetworkInterfaceLimitExceeded", FailureKind.LIMIT_EXCEEDED),
        ("InvalidSubnetID.NotFound", FailureKind.NOT_FOUND),
        ("InvalidNetworkInterfaceID.NotFound", FailureKind.NOT_FOUND),
        ("UnauthorizedOperation", FailureKind.OTHER),
        ("InternalError", FailureKind.OTHER),
    ],
)
def test_error_codes_become_failure_kinds(
    stubbed: tuple[Ec2Backend, Stubber], counter: CallCounter, code: str, kind: FailureKind
) -> None:
    backend, stub = stubbed
    stub.add_client_error("describe_subnets", code, "boom")
    with pytest.raises(CloudError) as info:
        backend.describe_subnets([SUBNET])
    assert type(info.value) is CloudError
    assert (info.value.kind, info.value.code, info.value.message) == (kind, code, "boom")
    assert isinstance(info.value.__cause__, ClientError)
    assert counter.counts == {("DescribeSubnets", kind.value): 1}


def test_client_side_validation_errors_are_translated() -> None:
    # botocore validates before sending: nothing reaches the (unused) endpoint
    config = Ec2Config(region=REGION, endpoint_url="http://127.0.0.1:9")
    backend = Ec2Backend(config, session=session())
    with pytest.raises(CloudError) as info:
        backend.unassign_ipv4(NEW_ENI, [3])  # type: ignore[list-item]
    assert (info.value.kind, info.value.code) == (FailureKind.OTHER, "ParamValidationError")
    assert translate(ParamValidationError(report="bad")).code == "ParamValidationError"
    assert translate(ValueError("odd")).kind is FailureKind.OTHER


def test_without_delete_on_termination_create_is_two_mutating_calls(
    counter: CallCounter, sleep: FakeSleep
) -> None:
    client = session().client("ec2", region_name=REGION)
    config = Ec2Config(
        region=REGION, cluster_name="prod", extra_tags={"team": "net"},
        delete_on_termination=False,
    )  # fmt: skip
    backend = Ec2Backend(config, client=client, observer=counter, sleep=sleep, clock=lambda: NOW)
    with Stubber(client) as stub:
        created = eni_item(NEW_ENI, None, ips=("10.0.0.11",), status="available")
        expect_create(stub, {"SecondaryPrivateIpAddressCount": 1}, created)
        expect_attach(stub, 2)
        expect_subnet(stub)  # and no ModifyNetworkInterfaceAttribute: the Stubber would fail
        eni = backend.create_eni(IID, CreateEni(0, SUBNET, ("sg-1",), ipv4_count=1, device_index=2))
        stub.assert_no_pending_responses()
    assert eni.device_index == 2 and eni.ipv4_addresses == ("10.0.0.11",)
    assert counter.mutating() == 2


def test_leak_search_of_any_instance_is_upstreams_filter(
    stubbed: tuple[Ec2Backend, Stubber],
) -> None:
    backend, stub = stubbed
    primary = {**eni_item("eni-primary", 0), "VpcId": "vpc-0ccccccccccccccccc"}
    expect_describe(stub, primary)  # the VPC, once
    old, fresh = rfc3339(NOW - 301), rfc3339(NOW - 299)
    found = [
        {**eni_item(eid, None, status="available"),
         "TagSet": [{"Key": INSTANCE_ID_TAG, "Value": "i-0gone"},
                    {"Key": CREATED_AT_TAG, "Value": created}]}
        for eid, created in (("eni-0old", old), ("eni-0fresh", fresh))
    ]  # fmt: skip
    filters = [
        {"Name": "tag-key", "Values": [INSTANCE_ID_TAG]},
        {"Name": "status", "Values": ["available"]},
        {"Name": "vpc-id", "Values": ["vpc-0ccccccccccccccccc"]},
        {"Name": f"tag:{CLUSTER_NAME_TAG}", "Values": ["prod"]},
    ]
    for _ in range(2):
        stub.add_response(
            "describe_network_interfaces", {"NetworkInterfaces": found}, {"Filters": filters}
        )
    assert backend.find_leaked_enis(IID, NOW, any_instance=True) == ["eni-0old"]
    assert backend.find_leaked_enis(IID, NOW, any_instance=True) == ["eni-0old"]


def test_leak_search_without_the_nodes_vpc_stays_on_the_nodes_own_enis(
    stubbed: tuple[Ec2Backend, Stubber],
) -> None:
    """If no attached ENI shows the node's VPC, the search is never widened to the region."""
    backend, stub = stubbed
    expect_describe(stub)  # no attached ENI: no VPC known
    mine = [{"Name": f"tag:{INSTANCE_ID_TAG}", "Values": [IID]},
            {"Name": "status", "Values": ["available"]}]  # fmt: skip
    stub.add_response("describe_network_interfaces", {"NetworkInterfaces": []}, {"Filters": mine})
    assert backend.find_leaked_enis(IID, NOW, any_instance=True) == []
    stub.assert_no_pending_responses()


# -- IPv6 prefixes (moto ignores Ipv6PrefixCount) ------------------------------------------


def test_assign_ipv6_prefix_request_and_answer(stubbed: tuple[Ec2Backend, Stubber]) -> None:
    """Upstream's AllocIPv6Prefixes: AssignIpv6Addresses with Ipv6PrefixCount, the /80s
    read from AssignedIpv6Prefixes (a list of strings)."""
    backend, stub = stubbed
    stub.add_response(
        "assign_ipv6_addresses",
        {"NetworkInterfaceId": NEW_ENI, "AssignedIpv6Prefixes": ["2600:1f14:a0c:ce01:1::/80"]},
        {"NetworkInterfaceId": NEW_ENI, "Ipv6PrefixCount": 1},
    )
    assert backend.assign_ipv6_prefixes(NEW_ENI, 1) == ("2600:1f14:a0c:ce01:1::/80",)


def test_assign_ipv6_prefix_answered_without_one_is_a_failure(
    stubbed: tuple[Ec2Backend, Stubber],
) -> None:
    backend, stub = stubbed
    stub.add_response(
        "assign_ipv6_addresses",
        {"NetworkInterfaceId": NEW_ENI, "AssignedIpv6Addresses": []},
        {"NetworkInterfaceId": NEW_ENI, "Ipv6PrefixCount": 1},
    )
    with pytest.raises(CloudError, match="returned 0 of 1 prefixes"):
        backend.assign_ipv6_prefixes(NEW_ENI, 1)


def test_assign_ipv6_prefix_in_a_subnet_without_ipv6(stubbed: tuple[Ec2Backend, Stubber]) -> None:
    backend, stub = stubbed
    stub.add_client_error(
        "assign_ipv6_addresses",
        "InvalidParameterValue",
        "You must specify an IPv6 CIDR block for the subnet",
        expected_params={"NetworkInterfaceId": NEW_ENI, "Ipv6PrefixCount": 1},
    )
    with pytest.raises(CloudError) as caught:
        backend.assign_ipv6_prefixes(NEW_ENI, 1)
    assert caught.value.kind is FailureKind.OTHER and "IPv6 CIDR" in caught.value.message


def test_describe_reads_ipv6_prefixes(stubbed: tuple[Ec2Backend, Stubber]) -> None:
    backend, stub = stubbed
    primary = eni_item("eni-primary", 0)
    primary["Ipv6Prefixes"] = [{"Ipv6Prefix": "2600:1f14:a0c:ce01:1::/80"}]
    expect_describe(stub, primary)
    expect_subnet(stub)
    (eni,) = backend.describe_enis(IID)
    assert eni.ipv6_prefixes == ("2600:1f14:a0c:ce01:1::/80",)
