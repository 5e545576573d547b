"""Upstream v1.23.1 ``pkg/ipamd/ipamd_test.go``, its pool and warm-target tests, case by case.

Upstream drives ``increaseDatastorePool`` / ``decreaseDatastorePool`` / ``nodeIPPoolReconcile``
against mocked EC2 calls and checks the calls expected; the core returns those calls as
effects from :meth:`Ipam.plan` and takes their outcomes through :meth:`Ipam.apply`, so the
expected calls are compared with the effects. Upstream's empty test datastore has no ENI at
all; a core node always has its primary ENI, so "an empty datastore" is a primary ENI with
no room left where upstream would create an ENI. The cases of this file with no counterpart
are listed in ``tests/core/fidelity/__init__.py``.
"""

from __future__ import annotations

import attrs
import pytest

from ipamcore.config import EniPlacement, PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, UnassignAddresses
from ipamcore.errors import ConfigError, FailureKind
from ipamcore.events import AddressesUnassigned, EffectFailed
from ipamcore.ipam import Ipam
from ipamcore.limits import limits_for
from ipamcore.model import ObservedNode, Subnet
from ipamcore.policy import PolicyInput, shortage
from ipamcore.warm import PoolCounts, warm_ip_short_over, warm_ip_short_over_prefixes
from tests.core.fidelity.upstream import (
    IP01,
    IP02,
    IP03,
    IP11,
    IP12,
    PREFIX01,
    PREFIX02,
    PRIMARY_ENI,
    SEC_ENI,
    datastore,
    ipam_key,
    limits,
    metadata,
    observed,
)

SUBNET_DISCOVERY_TAG = (("kubernetes.io/role/cni", "1"),)


def _full_primary(n: int, pd: bool = False) -> list[object]:
    """A primary ENI without room: ``n`` slots, all taken (upstream: no ENI to top up)."""
    if pd:
        prefixes = tuple(f"10.1.{i}.0/28" for i in range(n))
        return [observed(PRIMARY_ENI, 0, primary=True, prefixes=prefixes)]
    return [
        observed(PRIMARY_ENI, 0, primary=True, ips=tuple(f"10.10.10.{20 + i}" for i in range(n)))
    ]


def _fill(ipam: Ipam, count: int) -> None:
    for i in range(count):
        ipam.assign(ipam_key(f"busy-{i}"), metadata(f"busy-{i}"), 0.0)


# ------------------------------------------------------------------------- growth
def test_increase_ip_pool_default() -> None:
    """TestIncreaseIPPoolDefault: WARM_ENI_TARGET=1, 14 IPs per ENI, no room: AllocENI(14)."""
    ipam = datastore(_full_primary(14), PoolConfig(), limits(max_enis=4, per_eni=14))
    _fill(ipam, 14)
    (create,) = ipam.plan(0.0)
    assert isinstance(create, CreateEni)
    assert (create.ipv4_count, create.security_groups) == (14, ("sg-1",))


def test_increase_ip_pool_subnet_discovery_unfilled_eni() -> None:
    """TestIncreaseIPPoolSubnetDiscoveryUnfilledENI (issue 15 item 1): the primary's subnet
    is full, so the top-up fails with InsufficientFreeAddressesInSubnet, and a new ENI with
    14 IPs is created (in the tagged subnet with room). Upstream also retries the top-up
    with one IP before that; the core goes straight to the new ENI."""
    config = PoolConfig(placement=EniPlacement(subnet_discovery=True))
    ipam = datastore([observed(PRIMARY_ENI, 0, primary=True)], config, limits(4, 14))
    ipam.observe_subnets(
        [Subnet("subnet-1", "10.10.10.0/24", "az-1", 0),
         Subnet("subnet-2", "10.10.20.0/24", "az-1", 200, SUBNET_DISCOVERY_TAG)],
        "az-1",
    )  # fmt: skip
    (top_up,) = ipam.plan(0.0)
    assert top_up == AssignAddresses(effect_id=1, eni_id=PRIMARY_ENI, ipv4_count=14)
    ipam.apply(EffectFailed(top_up.effect_id, FailureKind.SUBNET_FULL), 0.0)
    (create,) = ipam.plan(0.0)
    assert isinstance(create, CreateEni)
    assert (create.subnet_id, create.ipv4_count) == ("subnet-2", 14)


def test_increase_ip_pool_custom_eni() -> None:
    """TestIncreaseIPPoolCustomENI: custom networking creates the ENI in the ENIConfig's
    subnet with its security groups: AllocENI(true, [sg1, sg2], subnet1, 14)."""
    placement = EniPlacement("subnet1", ("sg1-id", "sg2-id"), custom_networking=True)
    ipam = datastore(_full_primary(2), PoolConfig(placement=placement), limits(4, 14))
    (create,) = ipam.plan(0.0)
    assert isinstance(create, CreateEni)
    assert (create.subnet_id, create.security_groups, create.ipv4_count) == (
        "subnet1", ("sg1-id", "sg2-id"), 14)  # fmt: skip


def test_increase_prefix_pool_default() -> None:
    """TestIncreasePrefixPoolDefault: prefix mode, WARM_PREFIX_TARGET=1: AllocENI(1 prefix)."""
    config = PoolConfig(prefix_delegation=True)
    lim = attrs.evolve(limits(4, 16), instance_type="m5.large")
    ipam = datastore(_full_primary(16, pd=True), config, lim)
    _fill(ipam, 16 * 16)
    (create,) = ipam.plan(0.0)
    assert isinstance(create, CreateEni) and (create.prefix_count, create.ipv4_count) == (1, 0)


def test_increase_prefix_pool_subnet_discovery_unfilled_eni() -> None:
    """TestIncreasePrefixPoolSubnetDiscoveryUnfilledENI (issue 15 item 1), prefix mode."""
    config = PoolConfig(prefix_delegation=True, placement=EniPlacement(subnet_discovery=True))
    ipam = datastore([observed(PRIMARY_ENI, 0, primary=True)], config, limits(4, 16))
    ipam.observe_subnets(
        [Subnet("subnet-1", "10.10.10.0/24", "az-1", 0),
         Subnet("subnet-2", "10.10.20.0/24", "az-1", 200, SUBNET_DISCOVERY_TAG)],
        "az-1",
    )  # fmt: skip
    (top_up,) = ipam.plan(0.0)
    assert top_up == AssignAddresses(effect_id=1, eni_id=PRIMARY_ENI, prefix_count=1)
    ipam.apply(EffectFailed(top_up.effect_id, FailureKind.SUBNET_FULL), 0.0)
    (create,) = ipam.plan(0.0)
    assert isinstance(create, CreateEni)
    assert (create.subnet_id, create.prefix_count) == ("subnet-2", 1)


def test_increase_prefix_pool_custom_eni() -> None:
    """TestIncreasePrefixPoolCustomENI: AllocENI(true, sgs, subnet1, 1 prefix)."""
    placement = EniPlacement("subnet1", ("sg1-id", "sg2-id"), custom_networking=True)
    ipam = datastore(_full_primary(1), PoolConfig(prefix_delegation=True, placement=placement),
                     limits(4, 16))  # fmt: skip
    (create,) = ipam.plan(0.0)
    assert isinstance(create, CreateEni)
    assert (create.subnet_id, create.prefix_count) == ("subnet1", 1)


def test_prefix_mode_counts_secondary_ips_against_the_eni_limit() -> None:
    """Issue 15 item 3 (upstream's ``tryAssignPrefixes`` counts an ENI's IPs and prefixes
    together): an ENI whose slots hold secondary IPs and prefixes has no room for another
    prefix; a new ENI is created instead of a top-up EC2 would refuse."""
    slots = 4
    enis = [observed(PRIMARY_ENI, 0, primary=True, ips=(IP02, IP03), prefixes=(PREFIX01, PREFIX02))]
    ipam = datastore(enis, PoolConfig(prefix_delegation=True), limits(4, slots))
    _fill(ipam, 32)
    effects = ipam.plan(0.0)
    assert not [e for e in effects if isinstance(e, AssignAddresses)]  # EC2 would refuse it
    assert [e.prefix_count for e in effects if isinstance(e, CreateEni)] == [1]
    # and the free secondary IPs go back (upstream releases them in prefix mode)
    assert UnassignAddresses(2, PRIMARY_ENI, ipv4_addresses=(IP02, IP03)) in effects


def test_try_add_ip_to_eni() -> None:
    """TestTryAddIPToENI: WARM_IP_TARGET=3, nothing to top up: AllocENI(3)."""
    ipam = datastore(_full_primary(14), PoolConfig(warm_ip_target=3), limits(4, 14))
    _fill(ipam, 14)
    (create,) = ipam.plan(0.0)
    assert isinstance(create, CreateEni) and create.ipv4_count == 3


# ------------------------------------------------------------------------- shrink
def test_decrease_ip_pool() -> None:
    """TestDecreaseIPPool: WARM_IP_TARGET=1, two ENIs of 2 IPs with a pod each: over is 1,
    one address is given back once, and a second pass gives back nothing."""
    enis = [
        observed(PRIMARY_ENI, 0, primary=True, ips=(IP01, IP02)),
        observed(SEC_ENI, 2, ips=(IP11, IP12)),
    ]
    ipam = datastore(enis, PoolConfig(warm_ip_target=1), limits(4, 14))
    ipam.assign(ipam_key("container1"), metadata("pod1"), 0.0)
    _second_pod_on(ipam, SEC_ENI)
    counts = _counts(ipam)
    assert warm_ip_short_over(counts, 1, 0) == (0, 1)
    (unassign,) = ipam.plan(100.0)
    assert isinstance(unassign, UnassignAddresses) and len(unassign.ipv4_addresses) == 1
    ipam.apply(AddressesUnassigned(unassign.effect_id), 100.0)
    assert warm_ip_short_over(_counts(ipam), 1, 0) == (0, 0)
    assert ipam.plan(200.0) == []


def _second_pod_on(ipam: Ipam, eni_id: str) -> None:
    """Upstream's datastore puts the second pod on the second ENI (map order); the core packs
    low, so the primary's last free address is held by a placeholder, then given up."""
    ipam.assign(ipam_key("placeholder"), metadata("placeholder"), 0.0)
    allocation = ipam.assign(ipam_key("container2"), metadata("pod2"), 0.0)
    assert allocation.eni_id == eni_id
    ipam.release(ipam_key("placeholder"), -1000.0)  # released long ago: no cooldown left


def _counts(ipam: Ipam) -> PoolCounts:
    stats = ipam.stats(1000.0)
    return PoolCounts(total=stats.total, assigned=stats.assigned, available=stats.available)


# --------------------------------------------------------------------- reconcile
@pytest.mark.parametrize(
    "pd", [False, True], ids=["TestNodeIPPoolReconcile", "TestNodePrefixPoolReconcile"]
)
def test_node_pool_reconcile(pd: bool) -> None:
    """TestNodeIPPoolReconcile / TestNodePrefixPoolReconcile: addresses lost in metadata
    leave the pool, a new ENI joins with its addresses, a detached ENI leaves."""
    size = 16 if pd else 1
    kind = "prefixes" if pd else "ips"
    full = (PREFIX01,) if pd else (IP02, IP03)
    primary = observed(PRIMARY_ENI, 0, primary=True, **{kind: full})
    ipam = datastore([primary], PoolConfig(prefix_delegation=pd), limits(4, 14))
    assert ipam.stats(0.0).total == len(full) * size
    bare = attrs.evolve(primary, ipv4_addresses=(), ipv4_prefixes=())
    ipam.reconcile(ObservedNode((bare,)), 100.0)
    assert (ipam.stats(100.0).enis, ipam.stats(100.0).total) == (1, 0)
    second = observed(SEC_ENI, 2, **{kind: (PREFIX02,) if pd else (IP12,)})
    ipam.reconcile(ObservedNode((bare, second)), 200.0)
    assert (ipam.stats(200.0).enis, ipam.stats(200.0).total) == (2, size)
    ipam.reconcile(ObservedNode((bare,)), 300.0)
    assert (ipam.stats(300.0).enis, ipam.stats(300.0).total) == (1, 0)


@pytest.mark.parametrize(
    "pd",
    [False, True],
    ids=["TestNodeIPPoolReconcileBadIMDSData", "TestNodePrefixPoolReconcileBadIMDSData"],
)
def test_node_pool_reconcile_bad_imds_data(pd: bool) -> None:
    """TestNode{IP,Prefix}PoolReconcileBadIMDSData, "If no ENI is found, we abort the
    reconcile" (issue 15 item 6): an empty snapshot changes nothing. (Its other steps
    check EC2 against a stale metadata view: the daemon reconciles from EC2's describe,
    so the core never sees the metadata view; no counterpart.)"""
    kind, blocks, total = ("prefixes", (PREFIX01,), 16) if pd else ("ips", (IP02, IP03), 2)
    ipam = datastore([observed(PRIMARY_ENI, 0, primary=True, **{kind: blocks})],
                     PoolConfig(prefix_delegation=pd))  # fmt: skip
    report = ipam.reconcile(ObservedNode(()), 1000.0)
    assert report.refused
    assert (ipam.stats(1000.0).enis, ipam.stats(1000.0).total) == (1, total)


# ------------------------------------------------------------------- warm targets
def test_get_warm_prefix_target_default() -> None:
    """TestGetWarmPrefixTarget: unset reads as upstream's ``defaultWarmPrefixTarget`` (0).
    Documented difference (README, Configuration): unset reads as 1 here, as in upstream's
    manifests; 0 is valid (issue 15 items 4 and 8)."""
    assert PoolConfig().warm_prefix_target == 1
    assert PoolConfig(prefix_delegation=True, warm_prefix_target=0).warm_prefix_target == 0


def test_get_warm_ip_target_state() -> None:
    """TestGetWarmIPTargetState: WARM_IP_TARGET=5: short 5, then 3 with two addresses, then
    0 with five; never over."""
    for available, short in ((0, 5), (2, 3), (5, 0)):
        counts = PoolCounts(total=available, assigned=0, available=available)
        assert warm_ip_short_over(counts, 5, 0) == (short, 0)


def test_get_warm_ip_target_state_with_pd_enabled() -> None:
    """TestGetWarmIPTargetStateWithPDenabled: in prefixes: short 1; two free prefixes: over
    1; one: neither."""
    empty = PoolCounts(total=0, assigned=0, available=0)
    assert warm_ip_short_over_prefixes(empty, 5, 0) == (1, 0)
    two = PoolCounts(total=32, assigned=0, available=32, total_prefixes=2, free_prefixes=2)
    assert warm_ip_short_over_prefixes(two, 5, 0) == (0, 1)
    one = PoolCounts(total=16, assigned=0, available=16, total_prefixes=1, free_prefixes=1)
    assert warm_ip_short_over_prefixes(one, 5, 0) == (0, 0)


def _too_low(ipam: Ipam) -> bool:
    inp: PolicyInput = ipam._policy_input(0)
    return shortage(ipam.pool, inp)[0] > 0


@pytest.mark.parametrize(
    ("name", "per_eni", "warm_eni", "warm_ip", "pods", "free", "max_pods", "want"),
    [
        ("Test new ds, all defaults", 14, 1, 0, 0, 0, 500, True),
        ("Test new ds, 0 ENIs", 14, 0, 0, 0, 0, 500, True),  # issue 15 item 4
        ("Test new ds, 3 warm IPs", 14, 0, 3, 0, 0, 500, True),
        ("Test 3 unused IPs, 1 warm", 3, 1, 1, 0, 3, 500, False),
        ("Test 1 used, 1 warm ENI", 3, 1, 0, 1, 3, 500, True),
        ("Test 1 used, 0 warm ENI", 3, 0, 0, 1, 3, 500, False),
        ("Test 3 used, 1 warm ENI", 3, 1, 0, 3, 3, 500, True),
        ("Test 3 used, 0 warm ENI", 3, 0, 0, 3, 3, 500, True),  # issue 15 item 4
        ("Test max pods exceeded", 3, 0, 5, 3, 3, 3, False),
    ],
)
def test_ipam_context_node_ip_pool_too_low(
    name: str, per_eni: int, warm_eni: int, warm_ip: int, pods: int, free: int, max_pods: int,
    want: bool,
) -> None:  # fmt: skip
    """TestIPAMContext_nodeIPPoolTooLow, each row (``name`` is upstream's)."""
    ips = (IP01, IP02, IP03)[:free]
    config = PoolConfig(warm_eni_target=warm_eni, warm_ip_target=warm_ip, max_pods=max_pods)
    ipam = datastore([observed(PRIMARY_ENI, 0, primary=True, ips=ips)], config, limits(4, per_eni))
    _fill(ipam, pods)
    assert _too_low(ipam) is want


@pytest.mark.parametrize(
    ("name", "warm_prefix", "pods", "prefixes", "max_pods", "want"),
    [
        ("Test new ds, all defaults", 1, 0, 0, 500, True),
        ("Test new ds, 0 ENIs", 0, 0, 0, 500, True),  # issue 15 item 4
        ("Test 3 unused IPs, 1 warm", 1, 0, 1, 500, False),
        ("Test 1 used, 1 warm Prefix", 1, 1, 1, 500, True),
        ("Test 1 used, 0 warm Prefix", 0, 1, 1, 500, False),
        ("Test 3 used, 1 warm Prefix", 1, 3, 1, 500, True),
        ("Test 3 used, 0 warm Prefix", 0, 3, 1, 500, False),
        ("Test max pods exceeded", 1, 3, 1, 4, False),
    ],
)
def test_ipam_context_node_prefix_pool_too_low(
    name: str, warm_prefix: int, pods: int, prefixes: int, max_pods: int, want: bool
) -> None:
    """TestIPAMContext_nodePrefixPoolTooLow, each row. Upstream's "max pods exceeded" row
    (3 pods, max 4) counts the pool's 16 addresses against max pods; so does the core."""
    config = PoolConfig(prefix_delegation=True, warm_prefix_target=warm_prefix, max_pods=max_pods)
    enis = [observed(PRIMARY_ENI, 0, primary=True, prefixes=(PREFIX01,)[:prefixes])]
    ipam = datastore(enis, config, limits(4, 16))
    _fill(ipam, pods)
    assert _too_low(ipam) is want


# ---------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("name", "ipv6", "pd", "nitro", "valid"),
    [
        ("v4 enabled in non-PD mode and v6 disabled", False, False, True, True),
        ("v4 enabled in PD mode and v6 disabled", False, True, True, True),
        ("v4 disabled and v6 enabled in PD mode", True, False, True, True),
        ("v4 disabled and v6 enabled in PD mode on Non-Nitro instance", True, False, False, False),
    ],
)
def test_is_config_valid(name: str, ipv6: bool, pd: bool, nitro: bool, valid: bool) -> None:
    """TestIsConfigValid, the rows about address families and prefix delegation. Documented
    difference (README): ``prefix_delegation`` is IPv4 /28s here; IPv6 mode always uses the
    ENI's delegated IPv6 prefix, so upstream's "v6 in PD mode" is ``ipv6=True`` and "v6 in
    non-PD mode" cannot be configured; upstream's "both v4 and v6" has no counterpart (one
    family per node). The security-groups-for-pods rows have no counterpart."""
    lim = limits_for("m5.large" if nitro else "m4.large")
    try:
        Ipam(PoolConfig(ipv6=ipv6, prefix_delegation=pd), lim)
    except ConfigError:
        assert not valid
    else:
        assert valid
