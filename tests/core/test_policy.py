"""The warm-pool policy end to end through Ipam.plan/apply, with worked scenarios."""

from __future__ import annotations

import attrs
import pytest

from ipamcore.config import EniPlacement, PolicyName, PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, FreeEni, UnassignAddresses
from ipamcore.errors import FailureKind, UsageError
from ipamcore.events import AddressesAssigned, EffectFailed, EniCreated, EniFreed
from ipamcore.model import Subnet
from tests.core.builders import eni, key, node, pod


def test_warm_eni_target_fills_the_primary_then_creates_one_eni_with_its_ips() -> None:
    ipam = node("m5.large")  # 3 ENIs x 9 secondary IPs
    effects = ipam.plan(0.0)
    assert effects == [
        AssignAddresses(effect_id=1, eni_id="eni-0000", ipv4_count=9),
    ]
    ipam.apply(
        AddressesAssigned(1, "eni-0000", tuple(f"10.0.0.{i}" for i in range(10, 19))), 0.0
    )
    assert ipam.plan(1.0) == []  # 9 available = WARM_ENI_TARGET(1) x 9
    ipam.assign(key(1), pod(1), 2.0)
    (create,) = ipam.plan(3.0)
    assert isinstance(create, CreateEni)
    assert (create.subnet_id, create.security_groups, create.ipv4_count) == (
        "subnet-0a", ("sg-1",), 9)


def test_an_effect_in_flight_is_not_issued_again() -> None:
    ipam = node("m5.large")
    assert len(ipam.plan(0.0)) == 1
    assert ipam.plan(1.0) == []
    assert ipam.plan(6.0) == []


def test_warm_ip_target_asks_for_exactly_the_shortage() -> None:
    ipam = node("m5.large", PoolConfig(warm_ip_target=3), enis=(eni(0, ips=1),))
    (effect,) = ipam.plan(0.0)
    assert effect == AssignAddresses(effect_id=1, eni_id="eni-0000", ipv4_count=2)


def test_minimum_ip_target_grows_total() -> None:
    ipam = node("m5.large", PoolConfig(warm_ip_target=1, minimum_ip_target=12),
                enis=(eni(0, ips=2),))
    effects = ipam.plan(0.0)
    assert effects[0] == AssignAddresses(effect_id=1, eni_id="eni-0000", ipv4_count=7)
    assert isinstance(effects[1], CreateEni) and effects[1].ipv4_count == 3


def test_waiting_pods_add_to_the_shortage_and_several_enis_are_created_at_once() -> None:
    full = eni(0, ips=29)
    ipam = node("c5.4xlarge", enis=(full,))
    for i in range(29):
        ipam.assign(key(i), pod(i), 0.0)
    effects = ipam.plan(0.0, waiting=42)
    creates = [e for e in effects if isinstance(e, CreateEni)]
    assert [c.ipv4_count for c in creates] == [29, 29, 29]  # 42 waiting + 29 warm = 71


def test_growth_stops_at_the_eni_limit() -> None:
    ipam = node("t3.medium", PoolConfig(warm_ip_target=50), enis=(eni(0, ips=5),))
    total_requested = sum(e.ipv4_count for e in ipam.plan(0.0))  # type: ignore[union-attr]
    assert 5 + total_requested == 15  # 3 ENIs x 5 secondary IPs


def test_pool_never_grows_past_max_pods() -> None:
    ipam = node("m5.large", PoolConfig(warm_ip_target=50, max_pods=12), enis=(eni(0, ips=5),))
    total_requested = sum(e.ipv4_count for e in ipam.plan(0.0))  # type: ignore[union-attr]
    assert 5 + total_requested == 12


def test_prefix_mode_counts_in_prefixes() -> None:
    ipam = node("m5.large", PoolConfig(prefix_delegation=True, warm_prefix_target=1))
    assert ipam.plan(0.0) == [AssignAddresses(effect_id=1, eni_id="eni-0000", prefix_count=1)]


def test_prefix_delegation_falls_back_on_xen() -> None:
    ipam = node("m4.large", PoolConfig(prefix_delegation=True))
    assert not ipam.prefix_mode
    assert "ENABLE_PREFIX_DELEGATION ignored" in ipam.notices[0]


def test_subnet_full_pauses_growth_for_two_minutes() -> None:
    ipam = node("m5.large")
    (effect,) = ipam.plan(0.0)
    ipam.apply(EffectFailed(effect.effect_id, FailureKind.SUBNET_FULL), 1.0)
    assert ipam.plan(2.0) == []
    assert ipam.plan(120.9) == []
    assert len(ipam.plan(121.0)) == 1


def test_shrink_gives_back_surplus_addresses_from_the_highest_eni_first() -> None:
    cfg = PoolConfig(warm_ip_target=2)
    ipam = node("m5.large", cfg, enis=(eni(0, ips=4), eni(1, ips=3), eni(2, ips=3)), now=0.0)
    effects = ipam.plan(10.0)
    assert [type(e) for e in effects] == [UnassignAddresses] * 3
    assert [e.eni_id for e in effects] == ["eni-0002", "eni-0001", "eni-0000"]  # type: ignore[union-attr]
    assert sum(len(e.ipv4_addresses) for e in effects) == 8  # type: ignore[union-attr]
    assert ipam.stats(10.0).available == 2


def test_an_eni_is_freed_only_once_it_is_old_enough() -> None:
    cfg = PoolConfig(warm_ip_target=2)
    ipam = node("m5.large", cfg, enis=(eni(0, ips=4), eni(1)), now=0.0)
    assert ipam.plan(10.0) == [
        UnassignAddresses(effect_id=1, eni_id="eni-0000", ipv4_addresses=("10.0.0.13",
                                                                           "10.0.0.12"))
    ]
    assert ipam.plan(50.0) == []  # eni-0001 is empty but only 50 s old
    assert ipam.plan(60.0) == [FreeEni(effect_id=2, eni_id="eni-0001")]


def test_shrink_in_warm_eni_mode_frees_the_highest_idle_eni_only_when_too_high() -> None:
    ipam = node("m5.large", enis=(eni(0, ips=9), eni(1, ips=9), eni(2, ips=9)), now=0.0)
    (free,) = ipam.plan(100.0)
    assert free == FreeEni(effect_id=1, eni_id="eni-0002")
    assert ipam.stats(100.0).available == 18  # the leaving ENI no longer counts
    ipam.apply(EniFreed(1), 101.0)
    # 18 available >= (WARM_ENI_TARGET + 1) x 9: upstream frees one more (shouldRemoveExtraENIs)
    assert ipam.plan(200.0) == [FreeEni(effect_id=2, eni_id="eni-0001")]
    ipam.apply(EniFreed(2), 201.0)
    assert ipam.plan(300.0) == []  # 9 available: one ENI's worth, the target


def test_shrink_never_frees_an_eni_with_cooling_addresses_or_the_primary() -> None:
    ipam = node("m5.large", PoolConfig(cooldown_s=30),
                enis=(eni(0, ips=9), eni(1, ips=9), eni(2, ips=9)), now=0.0)
    for i in range(27):
        ipam.assign(key(i), pod(i), 0.0)
    for i in range(27):
        ipam.release(key(i), 99.0)
    assert ipam.plan(100.0) == []  # everything is cooling
    (free,) = ipam.plan(130.0)
    assert free == FreeEni(effect_id=1, eni_id="eni-0002")


def test_shrink_runs_at_most_every_30_seconds() -> None:
    ipam = node("m5.large", PoolConfig(warm_ip_target=1),
                enis=(eni(0, ips=9), eni(1, ips=9)), now=0.0)
    first = ipam.plan(100.0)
    assert first
    for e in first:
        ipam.apply(EffectFailed(e.effect_id, FailureKind.OTHER), 100.0)
    assert ipam.plan(110.0) == []
    assert ipam.plan(130.0) != []


def test_cooling_counted_as_available_only_by_the_faithful_upstream_policy() -> None:
    def run(policy: PolicyName) -> list[object]:
        ipam = node("m5.large", PoolConfig(warm_ip_target=2, policy=policy),
                    enis=(eni(0, ips=2),))
        ipam.assign(key(1), pod(1), 0.0)
        ipam.assign(key(2), pod(2), 0.0)
        ipam.release(key(1), 1.0)
        ipam.release(key(2), 1.0)
        return list(ipam.plan(2.0))

    assert run(PolicyName.UPSTREAM) != []  # both addresses cool: 2 short
    assert run(PolicyName.UPSTREAM_FAITHFUL) == []  # upstream thinks 2 are available


def test_custom_networking_places_new_enis_and_keeps_pods_off_the_primary() -> None:
    cfg = PoolConfig(placement=EniPlacement("subnet-pods", ("sg-pods",), custom_networking=True))
    ipam = node("m5.large", cfg, enis=(eni(0, ips=5),))
    assert ipam.stats(0.0).total == 0
    (create,) = ipam.plan(0.0)
    assert isinstance(create, CreateEni)
    assert (create.subnet_id, create.security_groups) == ("subnet-pods", ("sg-pods",))


def test_subnet_discovery_places_new_enis_in_the_freest_tagged_subnet() -> None:
    cfg = PoolConfig(placement=EniPlacement(subnet_discovery=True, cluster_name="blue"))
    ipam = node("m5.large", cfg, enis=(eni(0, ips=9),))
    ipam.observe_subnets(
        [
            Subnet("subnet-0a", "10.0.0.0/16", "az1", 50),
            Subnet("subnet-b", "10.1.0.0/16", "az1", 900, (("kubernetes.io/role/cni", "1"),)),
            Subnet("subnet-c", "10.2.0.0/16", "az2", 5000, (("kubernetes.io/role/cni", "1"),)),
        ],
        "az1",
    )
    ipam.assign(key(1), pod(1), 0.0)
    (create,) = ipam.plan(0.0)
    assert isinstance(create, CreateEni) and create.subnet_id == "subnet-b"


def test_created_eni_joins_the_pool_with_the_addresses_the_cloud_returned() -> None:
    ipam = node("m5.large", enis=(eni(0, ips=9),))
    ipam.assign(key(1), pod(1), 0.0)
    (create,) = ipam.plan(0.0)
    created = attrs.evolve(eni(1, ips=4))  # the cloud gave fewer than asked
    ipam.apply(EniCreated(create.effect_id, created), 1.0)
    assert ipam.stats(1.0).total == 13


def test_unknown_outcome_is_a_usage_error() -> None:
    ipam = node()
    with pytest.raises(UsageError):
        ipam.apply(EniFreed(42), 0.0)


@pytest.mark.parametrize(
    ("filled", "waiting", "expected_indexes"),
    [
        ((), 100, [1, 2, 3, 4]),  # empty c5.4xlarge, 100 pods: primary filled + 4 ENIs at once
        ((0, 1, 3), 60, [2, 4, 5, 6]),  # a gap left by a freed ENI is reused first
        ((0, 2), 30, [1, 3, 4]),
    ],
)
def test_enis_created_at_once_each_reserve_their_own_device_index(
    filled: tuple[int, ...], waiting: int, expected_indexes: list[int]
) -> None:
    enis = tuple(eni(i, ips=29) for i in filled) or (eni(0),)
    ipam = node("c5.4xlarge", enis=enis)
    for n in range(29 * len(filled)):
        ipam.assign(key(n), pod(n), 0.0)
    creates = [e for e in ipam.plan(0.0, waiting=waiting) if isinstance(e, CreateEni)]
    assert [c.device_index for c in creates] == expected_indexes
    assert all(c.ipv4_count == 29 for c in creates)  # addresses in the create call


def test_a_device_index_stays_reserved_while_its_create_is_in_flight() -> None:
    ipam = node("c5.4xlarge", enis=(eni(0, ips=29),))
    for n in range(29):
        ipam.assign(key(n), pod(n), 0.0)
    (first,) = [e for e in ipam.plan(0.0) if isinstance(e, CreateEni)]
    assert first.device_index == 1
    (second,) = [e for e in ipam.plan(1.0, waiting=29) if isinstance(e, CreateEni)]
    assert second.device_index == 2  # 1 is still reserved by the create in flight
    ipam.apply(EffectFailed(first.effect_id, FailureKind.OTHER, "boom"), 2.0)
    (again,) = [e for e in ipam.plan(10.0, waiting=29) if isinstance(e, CreateEni)]
    assert again.device_index == 1  # released with the failed create


@pytest.mark.parametrize(
    ("policy", "waiting", "expected"),
    [
        # empty c5.4xlarge primary, 100 ADDs waiting
        (PolicyName.UPSTREAM, 100, ["assign 29"] + ["create 29"] * 4),
        (PolicyName.UPSTREAM_FAITHFUL, 100, ["assign 29"]),  # one step; waiting not counted
        (PolicyName.UPSTREAM, 0, ["assign 29"]),
        (PolicyName.UPSTREAM_FAITHFUL, 0, ["assign 29"]),
    ],
)
def test_burst_growth_in_one_round_or_one_step_per_pass_like_upstream(
    policy: PolicyName, waiting: int, expected: list[str]
) -> None:
    ipam = node("c5.4xlarge", PoolConfig(policy=policy))
    effects = ipam.plan(0.0, waiting=waiting)
    described = [
        f"create {e.ipv4_count}" if isinstance(e, CreateEni) else f"assign {e.ipv4_count}"
        for e in effects
        if isinstance(e, CreateEni | AssignAddresses)
    ]
    assert described == expected


def test_faithful_policy_creates_one_eni_per_pass_when_existing_enis_are_full() -> None:
    ipam = node("c5.4xlarge", PoolConfig(policy=PolicyName.UPSTREAM_FAITHFUL),
                enis=(eni(0, ips=29),))  # fmt: skip
    for n in range(29):
        ipam.assign(key(n), pod(n), 0.0)
    (create,) = ipam.plan(0.0, waiting=71)
    assert isinstance(create, CreateEni) and create.ipv4_count == 29
    assert ipam.plan(1.0, waiting=71) == []  # its 29 addresses are coming: warm target met
