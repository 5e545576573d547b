"""The fake cloud: the cloud contract, plus what only the fake shows (throttling buckets in
virtual time, metadata lag, /28 fragmentation, fault injection, buckets shared by nodes)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.fakecloud import BucketSpec, CallInfo, FakeCloud, FakeEc2, Throttle
from backends.fakecloud.cloud import DEFAULT_SECURITY_GROUP
from backends.observe import OK, CallCounter, CallObserver, CallRecord
from ipamcore.effects import CreateEni
from ipamcore.errors import CloudError, FailureKind
from ipamcore.limits import InstanceLimits, limits_for
from ipamcore.model import INSTANCE_ID_TAG, NO_MANAGE_TAG, SUBNET_DISCOVERY_TAG
from tests.contract.cloud_contract import MULTI_CARD_TYPE, CloudContract, CloudEnv, expect_failure

AZ = "us-west-2a"
HUGE = InstanceLimits("test.huge", max_enis=4, ipv4_per_eni=250)


def make_env(**cloud_args: object) -> tuple[FakeCloud, CloudEnv]:
    cloud = FakeCloud(**cloud_args)  # type: ignore[arg-type]
    tagged = cloud.add_subnet("10.0.0.0/24", AZ, {SUBNET_DISCOVERY_TAG: "1"})
    untagged = cloud.add_subnet("10.0.1.0/24", AZ)
    small = cloud.add_subnet("10.0.2.0/28", AZ)
    v6 = cloud.add_subnet("10.0.3.0/24", AZ, ipv6_cidr="2600:1f14:a0c:ce03::/64")
    iid = cloud.launch_instance("m5.large", tagged)

    def leak(instance_id: str) -> str:
        return cloud.create_detached_eni(instance_id, tagged)

    def detached(tags: Mapping[str, str]) -> str:
        with cloud.lock:
            return cloud.vpc.create_eni(
                tagged, (DEFAULT_SECURITY_GROUP,), dict(tags), "out of band", cloud.now,
                limits_for("m5.large"),
            ).eni_id  # fmt: skip

    def make_cloud(
        instance_id: str,
        *,
        delete_on_termination: bool = True,
        cluster_name: str = "",
        observer: CallObserver | None = None,
    ) -> FakeEc2:
        return cloud.port(
            instance_id, observer, cluster_name=cluster_name,
            delete_on_termination=delete_on_termination,
        )  # fmt: skip

    env = CloudEnv(
        cloud=cloud.port(iid), instance_id=iid, instance_type="m5.large", subnet_id=tagged,
        untagged_subnet_id=untagged, small_subnet_id=small, now=lambda: cloud.now,
        advance=cloud.advance, make_leaked_eni=leak, make_detached_eni=detached,
        make_cloud=make_cloud, launch_instance=lambda: cloud.launch_instance("m5.large", tagged),
        terminate_instance=cloud.terminate_instance, ipv6_subnet_id=v6,
        launch_multi_card=lambda: cloud.launch_instance(MULTI_CARD_TYPE, tagged),
    )  # fmt: skip
    return cloud, env


class TestFakeCloudContract(CloudContract):
    @pytest.fixture
    def env(self) -> CloudEnv:
        return make_env()[1]


@attrs.define
class Node:
    cloud: FakeCloud
    iid: str
    subnet: str
    port: FakeEc2
    records: list[CallRecord]

    @property
    def primary(self) -> str:
        return self.port.describe_enis(self.iid)[0].eni_id


def node(instance_type: str = "test.huge", cidr: str = "10.0.0.0/22", **args: object) -> Node:
    """A cloud with one big subnet and one instance whose port records its calls."""
    cloud = FakeCloud(**args)  # type: ignore[arg-type]
    cloud.add_instance_type(HUGE)
    subnet = cloud.add_subnet(cidr, AZ)
    iid = cloud.launch_instance(instance_type, subnet)
    records: list[CallRecord] = []
    return Node(cloud, iid, subnet, cloud.port(iid, observer=records.append), records)


# -- throttling ----------------------------------------------------------------------------


def test_resource_bucket_holds_100_and_refills_5_per_second() -> None:
    n = node()
    eni = n.primary
    for _ in range(100):
        n.port.assign_ipv4(eni, 1)
    err = expect_failure(FailureKind.THROTTLED, lambda: n.port.assign_ipv4(eni, 1))
    assert err.code == "RequestLimitExceeded"
    assert n.records[-1] == CallRecord("AssignPrivateIpAddresses", 0.0, "throttled", err.code)
    n.cloud.advance(0.2)  # one token
    n.port.assign_ipv4(eni, 1)
    expect_failure(FailureKind.THROTTLED, lambda: n.port.assign_ipv4(eni, 1))
    n.cloud.advance(1000)  # refills to the capacity, not beyond
    assigned = 0
    while assigned < 200:
        try:
            n.port.unassign_ipv4(eni, n.port.describe_enis(n.iid)[0].ipv4_addresses[:1])
            n.port.assign_ipv4(eni, 1)
        except CloudError as err:
            assert err.kind is FailureKind.THROTTLED
            break
        assigned += 1
    assert assigned == 100


def test_describe_bucket_refills_20_per_second() -> None:
    n = node()
    for _ in range(100):
        n.port.describe_subnets([n.subnet])
    expect_failure(FailureKind.THROTTLED, lambda: n.port.describe_subnets([n.subnet]))
    n.cloud.advance(0.5)
    for _ in range(10):
        n.port.describe_subnets([n.subnet])
    expect_failure(FailureKind.THROTTLED, lambda: n.port.describe_subnets([n.subnet]))


def test_other_mutations_have_buckets_of_50_and_actions_do_not_share() -> None:
    throttle = Throttle()
    for _ in range(50):
        throttle.check("AttachNetworkInterface", 0.0)
    expect_failure(FailureKind.THROTTLED, lambda: throttle.check("AttachNetworkInterface", 0.0))
    throttle.check("CreateTags", 0.0)
    throttle.configure("AttachNetworkInterface", BucketSpec(capacity=2, refill_per_s=1))
    throttle.check("AttachNetworkInterface", 0.0)
    throttle.check("AttachNetworkInterface", 0.0)
    expect_failure(FailureKind.THROTTLED, lambda: throttle.check("AttachNetworkInterface", 0.0))


def test_buckets_are_shared_by_every_instance_of_the_account() -> None:
    a = node()
    b_iid = a.cloud.launch_instance("m5.large", a.subnet)
    b = a.cloud.port(b_iid)
    for _ in range(100):
        a.port.describe_enis(a.iid)
    expect_failure(FailureKind.THROTTLED, lambda: b.describe_enis(b_iid))
    assert len(b.assign_ipv4(a.cloud.enis_of(b_iid)[0].eni_id, 1)) == 1


def test_throttling_can_be_switched_off() -> None:
    n = node(throttling=False)
    for _ in range(1000):
        n.port.describe_enis(n.iid)
    n.cloud.throttle.enabled = True
    for _ in range(100):
        n.port.describe_enis(n.iid)
    expect_failure(FailureKind.THROTTLED, lambda: n.port.describe_enis(n.iid))


# -- calls, latency, time --------------------------------------------------------------------


def test_create_eni_is_four_ec2_actions_each_with_its_latency() -> None:
    n = node()
    actions = [
        "DescribeInstances", "CreateNetworkInterface", "AttachNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
    ]  # fmt: skip
    for i, action in enumerate(actions):
        n.cloud.set_latency(action, 0.1 * (i + 1))
    start = n.cloud.now
    n.port.create_eni(n.iid, CreateEni(0, n.subnet, ()))
    assert [(r.action, r.outcome) for r in n.records] == [(a, OK) for a in actions]
    assert [r.latency_s for r in n.records] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert n.port.last_latency_s == pytest.approx(1.0)
    assert n.cloud.now == start  # latency is reported, never slept nor added to the clock


def test_free_eni_is_describe_detach_delete_and_observers_see_only_their_port() -> None:
    n = node(default_latency=0.05)
    counter = CallCounter()
    n.cloud.observers.append(counter)
    eni = n.port.create_eni(n.iid, CreateEni(0, n.subnet, ()))
    other = n.cloud.port(n.iid)  # no observer of its own
    del n.records[:]
    other.free_eni(eni.eni_id)
    assert n.records == []
    assert counter.total("DetachNetworkInterface") == counter.total("DeleteNetworkInterface") == 1
    assert other.last_latency_s == pytest.approx(0.15)


def test_virtual_clock() -> None:
    cloud = FakeCloud(start=100.0)
    assert cloud.advance(2.5) == cloud.now == 102.5
    with pytest.raises(ValueError):
        cloud.advance(-1)
    ticks = [5.0]
    follower = FakeCloud(clock=lambda: ticks[0])
    ticks[0] = 9.0
    assert follower.now == 9.0
    with pytest.raises(RuntimeError):
        follower.advance(1)


# -- metadata ----------------------------------------------------------------------------------


def test_metadata_identity_and_untagged_enis() -> None:
    n = node(instance_type="m5.large")
    ident = n.cloud.metadata(n.iid).identity()
    primary = n.port.describe_enis(n.iid)[0]
    assert (ident.instance_id, ident.instance_type, ident.availability_zone) == (
        n.iid, "m5.large", AZ,
    )  # fmt: skip
    assert ident.primary_mac == primary.mac and ident.vpc_cidrs == ("10.0.0.0/16",)
    eni = n.port.create_eni(n.iid, CreateEni(0, n.subnet, (), ipv4_count=2))
    seen = n.cloud.metadata(n.iid).enis()
    assert [e.eni_id for e in seen] == [primary.eni_id, eni.eni_id]
    assert seen[1].ipv4_addresses == eni.ipv4_addresses and seen[1].tags == ()


def test_metadata_lags_behind_ec2() -> None:
    n = node(metadata_lag=2.0)
    imds = n.cloud.metadata(n.iid)
    assert len(imds.enis()) == 1  # the launch state is there from the start
    eni = n.port.create_eni(n.iid, CreateEni(0, n.subnet, ()))
    n.cloud.advance(1.0)
    got = n.port.assign_ipv4(eni.eni_id, 2)
    assert len(imds.enis()) == 1
    n.cloud.advance(1.0)
    assert [e.ipv4_addresses for e in imds.enis()] == [(), ()]
    n.cloud.advance(1.0)
    assert imds.enis()[1].ipv4_addresses == got
    n.port.free_eni(eni.eni_id)
    n.cloud.advance(1.9)
    assert len(imds.enis()) == 2
    n.cloud.advance(0.1)
    assert len(imds.enis()) == 1


# -- addresses, prefixes, fragmentation ----------------------------------------------------------


def test_prefixes_are_aligned_and_never_overlap_addresses() -> None:
    n = node(cidr="10.0.4.0/24")
    eni = n.primary  # primary IP 10.0.4.4, in the first block
    assert n.port.assign_prefixes(eni, 2) == ("10.0.4.16/28", "10.0.4.32/28")
    singles = n.port.assign_ipv4(eni, 20)
    assert singles[:11] == tuple(f"10.0.4.{i}" for i in range(5, 16))
    assert all(int(a.rsplit(".", 1)[1]) >= 48 for a in singles[11:])


def test_fragmented_subnet_has_addresses_but_no_prefix() -> None:
    n = node(cidr="10.0.4.0/24")
    eni = n.primary
    for block in range(1, 15):  # one address in every block that was fully free
        n.cloud.add_address(eni, f"10.0.4.{block * 16 + 3}")
    [subnet] = n.port.describe_subnets([n.subnet])
    assert subnet.free_addresses == 251 - 1 - 14
    err = expect_failure(FailureKind.SUBNET_FULL, lambda: n.port.assign_prefixes(eni, 1))
    assert err.code == "InsufficientCidrBlocks"
    n.cloud.remove_address(eni, "10.0.4.83")
    assert n.port.assign_prefixes(eni, 1) == ("10.0.4.80/28",)


def test_limits_reject_without_side_effects() -> None:
    n = node(instance_type="m5.large", cidr="10.0.4.0/24")
    free = n.cloud.free_addresses(n.subnet)
    err = expect_failure(
        FailureKind.LIMIT_EXCEEDED,
        lambda: n.port.create_eni(n.iid, CreateEni(0, n.subnet, (), ipv4_count=10)),
    )
    assert err.code == "PrivateIpAddressLimitExceeded"
    assert n.cloud.free_addresses(n.subnet) == free and len(n.cloud.vpc.enis) == 1
    eni = n.primary
    n.port.assign_prefixes(eni, 5)  # prefixes and addresses share the 9 slots
    n.port.assign_ipv4(eni, 4)
    expect_failure(FailureKind.LIMIT_EXCEEDED, lambda: n.port.assign_ipv4(eni, 1))
    bad = expect_failure(FailureKind.OTHER, lambda: n.port.unassign_ipv4(eni, ["10.0.4.250"]))
    assert bad.code == "InvalidParameterValue"


def test_prefixes_need_nitro_and_ipv6_needs_a_v6_subnet() -> None:
    n = node(instance_type="t2.micro")
    assert expect_failure(FailureKind.OTHER, lambda: n.port.assign_prefixes(n.primary, 1)).code
    expect_failure(
        FailureKind.OTHER,
        lambda: n.port.create_eni(n.iid, CreateEni(0, n.subnet, (), ipv6_prefix=True)),
    )
    v6 = n.cloud.add_subnet("10.0.8.0/24", AZ, ipv6_cidr="2600:1f14:0:1::/64")
    eni = n.port.create_eni(n.iid, CreateEni(0, v6, (), ipv6_prefix=True))
    assert eni.ipv6_prefixes == ("2600:1f14:0:1:1::/80",)


def test_device_index_conflicts_and_detach_before_delete() -> None:
    n = node()
    eni = n.port.create_eni(n.iid, CreateEni(0, n.subnet, ()))
    loose = n.cloud.create_detached_eni(n.iid)
    assert expect_failure(FailureKind.OTHER, lambda: n.cloud.attach_eni(loose, n.iid, 1)).code
    err = expect_failure(FailureKind.OTHER, lambda: n.cloud.delete_eni(eni.eni_id))
    assert err.code == "InvalidNetworkInterface.InUse"
    n.cloud.detach_eni(eni.eni_id)
    n.cloud.delete_eni(eni.eni_id)
    primary = n.primary
    assert expect_failure(FailureKind.OTHER, lambda: n.port.free_eni(primary)).code == (
        "OperationNotPermitted"
    )
    elsewhere = n.cloud.add_subnet("10.0.9.0/24", "us-west-2b")
    far = n.cloud.create_detached_eni(n.iid, elsewhere)
    expect_failure(FailureKind.OTHER, lambda: n.cloud.attach_eni(far, n.iid, 2))


def test_describe_instance_type_knows_custom_types() -> None:
    n = node()
    assert n.port.describe_instance_type("test.huge") == HUGE
    assert n.port.describe_instance_type("m5.large").max_enis == 3


# -- faults --------------------------------------------------------------------------------------


def test_fail_next_fails_that_many_calls_and_takes_no_token() -> None:
    n = node()
    n.cloud.throttle.configure("AssignPrivateIpAddresses", BucketSpec(1, 0))
    n.cloud.fail_next("AssignPrivateIpAddresses", FailureKind.SUBNET_FULL, times=2)
    for _ in range(2):
        expect_failure(FailureKind.SUBNET_FULL, lambda: n.port.assign_ipv4(n.primary, 1))
    assert len(n.port.assign_ipv4(n.primary, 1)) == 1  # the one token was still there
    assert [r.outcome for r in n.records if r.action == "AssignPrivateIpAddresses"] == [
        "subnet_full", "subnet_full", OK,
    ]  # fmt: skip


def test_fault_predicates_and_unreachable() -> None:
    n = node()
    eni = n.port.create_eni(n.iid, CreateEni(0, n.subnet, ())).eni_id

    def only_eni(call: CallInfo) -> bool:
        return call.target == eni

    rule = n.cloud.fail_when(only_eni, FailureKind.LIMIT_EXCEEDED)
    for _ in range(3):
        expect_failure(FailureKind.LIMIT_EXCEEDED, lambda: n.port.assign_ipv4(eni, 1))
    n.port.assign_ipv4(n.primary, 1)
    n.cloud.faults.remove(rule)
    n.port.assign_ipv4(eni, 1)
    n.cloud.set_unreachable()
    assert expect_failure(FailureKind.OTHER, lambda: n.port.describe_enis(n.iid)).code
    expect_failure(FailureKind.OTHER, lambda: n.port.describe_subnets())
    n.cloud.set_unreachable(False)
    assert len(n.port.describe_enis(n.iid)) == 2


def test_failed_attach_deletes_the_new_eni_unless_the_delete_fails_too() -> None:
    n = node()
    free = n.cloud.free_addresses(n.subnet)
    n.cloud.fail_next("AttachNetworkInterface", FailureKind.OTHER)
    expect_failure(
        FailureKind.OTHER,
        lambda: n.port.create_eni(n.iid, CreateEni(0, n.subnet, (), ipv4_count=3)),
    )
    assert n.records[-1].action == "DeleteNetworkInterface" and n.records[-1].outcome == OK
    assert n.cloud.free_addresses(n.subnet) == free
    n.cloud.fail_next("ModifyNetworkInterfaceAttribute", FailureKind.THROTTLED)
    expect_failure(
        FailureKind.THROTTLED, lambda: n.port.create_eni(n.iid, CreateEni(0, n.subnet, ()))
    )
    assert len(n.cloud.vpc.enis) == 1
    n.cloud.fail_next("AttachNetworkInterface", FailureKind.OTHER)
    n.cloud.fail_next("DeleteNetworkInterface", FailureKind.THROTTLED)
    expect_failure(FailureKind.OTHER, lambda: n.port.create_eni(n.iid, CreateEni(0, n.subnet, ())))
    assert n.port.find_leaked_enis(n.iid, n.cloud.now) == []
    leaked = n.port.find_leaked_enis(n.iid, n.cloud.advance(301))
    assert len(leaked) == 1 and n.cloud.eni_status(leaked[0]) == "available"


# -- out-of-band changes ---------------------------------------------------------------------------


def test_out_of_band_changes_show_in_describe() -> None:
    n = node()
    eni = n.port.create_eni(n.iid, CreateEni(0, n.subnet, ())).eni_id
    n.cloud.add_address(eni, "10.0.3.200")
    assert "10.0.3.200" in n.port.describe_enis(n.iid)[1].ipv4_addresses
    with pytest.raises(CloudError, match="in use"):
        n.cloud.add_address(n.primary, "10.0.3.200")
    n.cloud.remove_eni(eni)
    expect_failure(FailureKind.NOT_FOUND, lambda: n.port.assign_ipv4(eni, 1))
    unmanaged = n.cloud.add_eni(n.iid, tags={NO_MANAGE_TAG: "true"})
    assert n.port.describe_enis(n.iid)[1].unmanaged
    assert n.port.create_eni(n.iid, CreateEni(0, n.subnet, ())).device_index == 2
    n.cloud.terminate_instance(n.iid)
    assert n.cloud.eni_status(unmanaged) == "available"  # no DeleteOnTermination: it stays
    assert list(n.cloud.vpc.enis) == [unmanaged]
    expect_failure(FailureKind.NOT_FOUND, lambda: n.port.describe_enis(n.iid))


def test_deterministic() -> None:
    def run() -> list[object]:
        n = node()
        eni = n.port.create_eni(n.iid, CreateEni(0, n.subnet, (), ipv4_count=2, prefix_count=1))
        return [eni, n.port.assign_ipv4(eni.eni_id, 3), n.cloud.create_detached_eni(n.iid)]

    assert run() == run()


OPS = st.lists(st.tuples(st.sampled_from(["ip", "prefix", "free"]), st.integers(0, 2)), max_size=30)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_addresses_stay_unique_and_counted(ops: list[tuple[str, int]]) -> None:
    n = node(cidr="10.0.0.0/25", throttling=False)
    enis = [n.primary] + [
        n.port.create_eni(n.iid, CreateEni(0, n.subnet, ())).eni_id for _ in range(2)
    ]
    for op, i in ops:
        current = {e.eni_id: e for e in n.cloud.enis_of(n.iid)}[enis[i]]
        try:
            if op == "ip":
                n.port.assign_ipv4(enis[i], 7)
            elif op == "prefix":
                n.port.assign_prefixes(enis[i], 1)
            else:
                n.port.unassign_ipv4(enis[i], current.ipv4_addresses[::2])
                n.port.unassign_prefixes(enis[i], current.ipv4_prefixes[:1])
        except CloudError as err:
            assert err.kind in (FailureKind.SUBNET_FULL, FailureKind.LIMIT_EXCEEDED)
    held: list[int] = []
    for e in n.cloud.enis_of(n.iid):
        held += [int(a.rsplit(".", 1)[1]) for a in (e.primary_ip, *e.ipv4_addresses)]
        for p in e.ipv4_prefixes:
            first = int(p.split("/")[0].rsplit(".", 1)[1])
            assert first % 16 == 0
            held += range(first, first + 16)
    assert len(held) == len(set(held))
    assert all(4 <= a <= 126 for a in held)
    assert n.cloud.free_addresses(n.subnet) == 128 - 5 - len(held)
    assert all(e.tag_map.get(INSTANCE_ID_TAG) in (None, n.iid) for e in n.cloud.enis_of(n.iid))


def test_ports_can_be_called_from_several_threads() -> None:
    n = node(throttling=False)
    enis = [n.primary] + [
        n.port.create_eni(n.iid, CreateEni(0, n.subnet, ())).eni_id for _ in range(3)
    ]
    free = n.cloud.free_addresses(n.subnet)
    clashes: list[str] = []

    def churn(eni: str) -> None:
        port = n.cloud.port(n.iid)
        for _ in range(300):
            got = port.assign_ipv4(eni, 5)
            owners = [e.eni_id for e in n.cloud.enis_of(n.iid) if got[0] in e.ipv4_addresses]
            if owners != [eni]:
                clashes.append(got[0])
            port.unassign_ipv4(eni, got)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=churn, args=(e,)) for e in enis]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert clashes == []
    assert n.cloud.free_addresses(n.subnet) == free


# -- real-time latency (a daemon against the fake), device indexes chosen by the caller -------


def test_with_sleep_each_action_sleeps_its_latency_before_it_takes_effect() -> None:
    slept: list[tuple[float, int]] = []
    n = node(throttling=False)
    n.cloud.sleep = lambda s: slept.append((s, len(n.cloud.enis_of(n.iid))))
    n.cloud.set_latency("CreateNetworkInterface", 0.4)
    n.cloud.set_latency("AttachNetworkInterface", 0.25)
    n.port.create_eni(n.iid, CreateEni(0, n.subnet, (), ipv4_count=3, device_index=2))
    # attach sleeps while the ENI is not attached yet: the latency comes before the effect
    assert slept == [(0.4, 1), (0.25, 1)]


def test_a_given_device_index_skips_the_describe_and_is_where_the_eni_goes() -> None:
    n = node(throttling=False)
    eni = n.port.create_eni(n.iid, CreateEni(0, n.subnet, (), ipv4_count=2, device_index=3))
    assert eni.device_index == 3
    assert [r.action for r in n.records] == [
        "CreateNetworkInterface", "AttachNetworkInterface", "ModifyNetworkInterfaceAttribute",
    ]  # fmt: skip
    assert [r.target for r in n.records[1:]] == [eni.eni_id, eni.eni_id]
    with pytest.raises(CloudError):
        n.port.create_eni(
            n.iid, CreateEni(0, n.subnet, (), ipv4_count=2, device_index=3)
        )  # taken: EC2 says so
    assert len(n.cloud.enis_of(n.iid)) == 2  # and the failed create was undone


def test_realistic_profile_and_the_least_time_it_allows() -> None:
    from backends.fakecloud.latency import (
        REALISTIC_LATENCIES,
        least_burst_time,
        least_new_eni_time,
        use_realistic_latency,
    )

    cloud = FakeCloud()
    use_realistic_latency(cloud)
    assert cloud.latency_for("CreateNetworkInterface") == 0.4
    assert cloud.metadata_lag == 1.5
    assert least_new_eni_time() == pytest.approx(0.4 + 0.25 + 1.5)
    slow_assign = {**REALISTIC_LATENCIES, "AssignPrivateIpAddresses": 3.0}
    assert least_burst_time(slow_assign) == 3.0  # the primary's fill is then the longer path
    assert least_new_eni_time(metadata_lag_s=0.0) == pytest.approx(0.4 + 0.25 + 0.15)
    # without DeleteOnTermination there is no Modify call: create + attach + the lag only
    no_modify = least_new_eni_time(metadata_lag_s=0.0, delete_on_termination=False)
    assert no_modify == pytest.approx(0.4 + 0.25)
    assert least_burst_time(delete_on_termination=False) == pytest.approx(0.4 + 0.25 + 1.5)


def test_metadata_lists_each_enis_network_card() -> None:
    """The fake cloud's instance metadata shows the card of every ENI (IMDS ``network-card``
    per MAC), and EC2's describe agrees."""
    cloud, env = make_env()
    assert env.launch_multi_card is not None
    iid = env.launch_multi_card()
    port = env.make_cloud(iid)
    on_1 = port.create_eni(iid, CreateEni(0, env.subnet_id, (), network_card=1))
    on_0 = port.create_eni(iid, CreateEni(0, env.subnet_id, ()))
    seen = {e.eni_id: (e.network_card, e.device_index) for e in cloud.metadata(iid).enis()}
    assert seen[on_1.eni_id] == (1, 1) and seen[on_0.eni_id] == (0, 1)
    described = {e.eni_id: (e.network_card, e.device_index) for e in port.describe_enis(iid)}
    assert described == seen


def test_an_efa_only_interface_has_no_address_and_takes_a_place_on_its_card() -> None:
    """As EC2: an efa-only interface (p5 launch templates attach one per card) carries no IP
    address at all, is described as EFA-only, takes a device index and counts against its
    card's ENI limit, and refuses any address it is asked for."""
    cloud, env = make_env()
    assert env.launch_multi_card is not None
    iid = env.launch_multi_card()
    port = env.make_cloud(iid)
    efa = cloud.add_eni(iid, network_card=1, interface_type="efa-only")
    seen = {e.eni_id: e for e in port.describe_enis(iid)}[efa]
    assert seen.is_efa_only and seen.is_efa and seen.network_card == 1
    assert (seen.primary_ip, seen.ipv4_addresses, seen.ipv4_prefixes) == ("", (), ())
    assert {e.eni_id: e for e in cloud.metadata(iid).enis()}[efa].primary_ip == ""
    before = cloud.free_addresses(env.subnet_id)
    with pytest.raises(CloudError, match="efa-only"):
        cloud.vpc.assign_ipv4(efa, 1)
    assert cloud.free_addresses(env.subnet_id) == before
    limit = cloud.vpc.instance(iid).card_limit(1)
    for _ in range(limit - 1):  # the efa-only one holds the first place
        port.create_eni(iid, CreateEni(0, env.subnet_id, (), network_card=1))
    with pytest.raises(CloudError, match=r"allows \d+ network interfaces on network card 1"):
        port.create_eni(iid, CreateEni(0, env.subnet_id, (), network_card=1))
    with pytest.raises(CloudError, match="efa-only"):
        cloud.add_eni(iid, ipv4_count=1, interface_type="efa-only")


def test_an_eni_on_a_card_above_0_is_created_with_its_ipv6_prefix() -> None:
    """IPv6 mode with ENABLE_MULTI_NIC (upstream v1.20+): the ENI of card 1 gets its /80 in
    the create call, on that card's device 0, and the primary IPv4 address EC2 always gives
    (no secondary); another /80 comes from the same subnet's /64, never the same one."""
    cloud, env = make_env()
    assert env.launch_multi_card is not None
    iid = env.launch_multi_card()
    port = env.make_cloud(iid)
    v6_subnet = cloud.add_subnet("10.0.7.0/24", AZ, ipv6_cidr="2600:1f14:0:7::/64")
    on_1 = port.create_eni(
        iid, CreateEni(0, v6_subnet, (), ipv6_prefix=True, device_index=0, network_card=1)
    )
    assert (on_1.network_card, on_1.device_index) == (1, 0)
    assert on_1.ipv6_prefixes == ("2600:1f14:0:7:1::/80",)
    assert on_1.primary_ip and on_1.ipv4_addresses == () and on_1.ipv4_prefixes == ()
    described = {e.eni_id: e for e in port.describe_enis(iid)}[on_1.eni_id]
    assert (described.network_card, described.ipv6_prefixes) == (1, on_1.ipv6_prefixes)
    more = port.assign_ipv6_prefixes(on_1.eni_id, 1)
    assert more and more[0] not in on_1.ipv6_prefixes
