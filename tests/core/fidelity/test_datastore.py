"""Upstream v1.23.1 ``pkg/ipamd/datastore/data_store_test.go``, case by case, against the core.

Upstream's datastore is driven call by call (``AddENI``, ``AddIPv4CidrToStore``,
``AssignPodIPv4Address``, ``RemoveUnusedENIFromStore``...); the core takes the same facts as
observed ENIs (:meth:`Ipam.load`, :meth:`Ipam.reconcile`), pods through ``assign`` and
``release``, and gives ENIs back through ``plan``. Each test names its upstream test; a
check that differs on purpose says "documented difference" and names the README entry.
"""

from __future__ import annotations

import attrs
import pytest

from ipamcore.checkpoint import Checkpoint
from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses
from ipamcore.errors import DataError, PoolExhausted
from ipamcore.events import AddressesAssigned
from ipamcore.limits import limits_for
from ipamcore.model import NO_MANAGE_TAG, Allocation, ObservedNode
from tests.core.fidelity.upstream import (
    OLD,
    datastore,
    eni_ids,
    ipam_key,
    limits,
    metadata,
    observed,
    shrink_answered,
    total_of,
)

GRACE_PAST = 61.0  # past the reconcile grace (a block or ENI younger is not removed)


def test_add_eni() -> None:
    """TestAddENI: an ENI added twice is an error; two distinct ENIs are two."""
    with pytest.raises(DataError, match="given twice"):
        datastore([observed("eni-1", 0, primary=True), observed("eni-1", 1)])
    ipam = datastore([observed("eni-1", 0, primary=True), observed("eni-2", 2)])
    assert eni_ids(ipam, 0.0) == ["eni-1", "eni-2"]
    ipam.reconcile(ObservedNode((observed("eni-1", 0, primary=True), observed("eni-2", 2))), 1.0)
    assert len(ipam.eni_views(1.0)) == 2  # seen again: still two


@pytest.mark.parametrize("pd", [False, True], ids=["TestDeleteENI", "TestDeleteENIwithPDEnabled"])
def test_delete_eni(pd: bool) -> None:
    """TestDeleteENI / TestDeleteENIwithPDEnabled: an ENI gone from the instance leaves the
    pool; one carrying a pod goes too (upstream: only with ``force``, counted as force
    removed). Documented difference ("An address that vanishes under a pod is never lent to
    another pod"): the pod's allocation is kept on record as orphaned until its DEL."""
    block = {"prefixes": ("10.0.0.0/28",)} if pd else {"ips": ("1.1.1.1",)}
    config = PoolConfig(prefix_delegation=pd)
    enis = [observed("eni-1", 0, primary=True), observed("eni-2", 2), observed("eni-3", 3),
            observed("eni-4", 4, **block)]  # fmt: skip
    ipam = datastore(enis, config, limits_for("m5.4xlarge"))
    assert len(ipam.eni_views(0.0)) == 4
    ipam.reconcile(ObservedNode(tuple(e for e in enis if e.eni_id != "eni-2")), GRACE_PAST)
    assert eni_ids(ipam, GRACE_PAST) == ["eni-1", "eni-3", "eni-4"]
    allocation = ipam.assign(ipam_key("sandbox1", "net1"), metadata("sample-pod"), GRACE_PAST)
    assert (allocation.ipv4, allocation.device_index) == (
        ("10.0.0.0", 4) if pd else ("1.1.1.1", 4)
    )  # upstream hands out the prefix's first address too
    report = ipam.reconcile(ObservedNode(tuple(enis[:1] + enis[2:3])), 2 * GRACE_PAST)
    assert report.force_removed == (allocation,)
    assert ipam.orphaned[allocation.address].key == allocation.key  # documented difference


@pytest.mark.parametrize(
    "pd", [False, True], ids=["TestAddENIIPv4Address", "TestAddENIIPv4AddressWithPDEnabled"]
)
def test_add_eni_ipv4_address(pd: bool) -> None:
    """TestAddENIIPv4Address(WithPDEnabled): addresses add up per ENI and in total; the same
    address twice, or one for an unknown ENI, is refused and changes nothing."""
    blocks = ["10.0.0.0/28", "20.0.0.0/28", "30.0.0.0/28"] if pd else [
        "1.1.1.1", "1.1.1.2", "1.1.2.2"]  # fmt: skip
    size = 16 if pd else 1

    def eni(eni_id: str, device: int, mine: list[str]) -> object:
        kind = "prefixes" if pd else "ips"
        return observed(eni_id, device, primary=device == 0, **{kind: tuple(mine)})

    ipam = datastore([eni("eni-1", 0, blocks[:1]), eni("eni-2", 2, [])],
                     PoolConfig(prefix_delegation=pd))  # fmt: skip
    assert ipam.stats(0.0).total == size
    # the same address again (from the cloud) is a DataError, the pool unchanged
    with pytest.raises(DataError):
        ipam.reconcile(ObservedNode((eni("eni-1", 0, blocks[:1] * 2), eni("eni-2", 2, []))), 1.0)
    assert ipam.stats(1.0).total == size
    ipam.reconcile(ObservedNode((eni("eni-1", 0, blocks[:2]), eni("eni-2", 2, blocks[2:]))), 1.0)
    assert ipam.stats(1.0).total == 3 * size
    assert (total_of(ipam, "eni-1", 1.0), total_of(ipam, "eni-2", 1.0)) == (2 * size, size)


def test_add_addresses_to_an_unknown_eni_is_refused() -> None:
    """TestAddENIIPv4Address, its "dummy-eni" step: addresses answered for an ENI the pool
    does not have are refused (not dropped), and the total stays."""
    ipam = datastore([observed("eni-1", 0, primary=True)], PoolConfig(warm_ip_target=1))
    (effect,) = ipam.plan(0.0)
    assert isinstance(effect, AssignAddresses)
    with pytest.raises(Exception, match="dummy-eni"):
        ipam.apply(AddressesAssigned(effect.effect_id, "dummy-eni", ("1.1.2.2",)), 0.0)
    assert ipam.stats(0.0).total == 0


@pytest.mark.parametrize("pd", [False, True], ids=["TestGetENIIPs", "TestGetENIIPsWithPDEnabled"])
def test_get_eni_ips(pd: bool) -> None:
    """TestGetENIIPs(WithPDEnabled): an ENI's addresses are listed per block."""
    if pd:
        enis = [observed("eni-1", 0, primary=True, prefixes=("10.0.0.0/28", "20.0.0.0/28")),
                observed("eni-2", 2, prefixes=("30.0.0.0/28",))]  # fmt: skip
    else:
        enis = [observed("eni-1", 0, primary=True, ips=("1.1.1.1", "1.1.1.2")),
                observed("eni-2", 2, ips=("1.1.2.2",))]  # fmt: skip
    ipam = datastore(enis, PoolConfig(prefix_delegation=pd))
    views = {v.eni_id: v for v in ipam.eni_views(0.0)}
    assert len(views["eni-1"].blocks) == 2 and len(views["eni-2"].blocks) == 1
    assert all(b.is_prefix == pd for v in views.values() for b in v.blocks)
    assert "dummy-eni" not in views


@pytest.mark.parametrize(
    "pd", [False, True], ids=["TestDelENIIPv4Address", "TestDelENIIPv4AddressWithPDEnabled"]
)
def test_del_eni_ipv4_address(pd: bool) -> None:
    """TestDelENIIPv4Address(WithPDEnabled): an address gone from the ENI leaves the pool;
    one under a pod is force-removed (upstream: only with ``force``; documented difference:
    the allocation is kept as orphaned)."""
    blocks = ("10.0.0.0/28", "20.0.0.0/28", "30.0.0.0/28") if pd else (
        "1.1.1.1", "1.1.1.2", "1.1.1.3")  # fmt: skip
    kind, size = ("prefixes", 16) if pd else ("ips", 1)
    ipam = datastore([observed("eni-1", 0, primary=True, **{kind: blocks})],
                     PoolConfig(prefix_delegation=pd))  # fmt: skip
    pod = ipam.assign(ipam_key("sandbox-1"), metadata("sample-pod-1"), 0.0)
    assert pod.ipv4 == ("10.0.0.0" if pd else "1.1.1.1")
    keep = (blocks[0], blocks[1])
    ipam.reconcile(ObservedNode((observed("eni-1", 0, primary=True, **{kind: keep}),)), GRACE_PAST)
    assert ipam.stats(GRACE_PAST).total == 2 * size
    report = ipam.reconcile(
        ObservedNode((observed("eni-1", 0, primary=True, **{kind: keep[1:]}),)), GRACE_PAST
    )
    assert report.force_removed == (pod,) and ipam.stats(GRACE_PAST).total == size


def test_toggle_pd() -> None:
    """TestTogglePD: a pod keeps its secondary IP after prefix delegation is turned on, new
    pods get prefix addresses, never the /32s (issue 15 item 3), and the freed /32 goes back."""
    limits = limits_for("m5.large")
    ipam = datastore(
        [observed("eni-1", 0, primary=True, ips=("1.1.1.1",), prefixes=("10.0.0.0/28",))],
        PoolConfig(prefix_delegation=True), limits,
    )  # fmt: skip
    old = Allocation(ipam_key("sandbox-1"), metadata("sample-pod-1"), "1.1.1.1", None, 0.0)
    ipam.restore(Checkpoint(allocations=(old,)), 0.0)
    assert ipam.get(ipam_key("sandbox-1")) is not None
    assert ipam.stats(0.0).total == 17  # as upstream: 1 + 16
    new = ipam.assign(ipam_key("sandbox-2"), metadata("sample-pod-2"), 0.0)
    assert new.ipv4 == "10.0.0.0"
    for i in range(15):
        ipam.assign(ipam_key(f"fill-{i}"), metadata(f"fill-{i}"), 0.0)
    with pytest.raises(PoolExhausted):  # the /32 is not handed out in prefix mode
        ipam.assign(ipam_key("one-more"), metadata("one-more"), 0.0)
    ipam.release(ipam_key("sandbox-1"), 1.0)
    later = 1.0 + ipam.config.cooldown_s
    (grow,) = ipam.plan(later)  # the pool is full: a prefix first (the ENI is then busy)
    assert isinstance(grow, AssignAddresses) and grow.prefix_count == 1
    ipam.apply(AddressesAssigned(grow.effect_id, "eni-1", prefixes=("10.0.1.0/28",)), later)
    assert ipam.stats(later).total == 32  # the free /32 no longer counts
    effects = ipam.plan(later)
    gives_back = [e for e in effects if getattr(e, "ipv4_addresses", ()) == ("1.1.1.1",)]
    assert gives_back, effects  # upstream releases unused secondary IPs in prefix mode


@pytest.mark.parametrize(
    "pd", [False, True], ids=["TestPodIPv4Address", "TestPodIPv4AddressWithPDEnabled"]
)
def test_pod_ipv4_address(pd: bool) -> None:
    """TestPodIPv4Address(WithPDEnabled): assignment, the same key twice gets the same
    address, no address left is an error, releasing an unknown key changes nothing
    (upstream: an error; here None, so a repeated CNI DEL is harmless), a released address
    cools down, and an idle ENI is given back once its cooldown ended.

    Not translated: the "checkpoint error" step (persisting is the shell's job, before it
    acknowledges: ``adapters/ipamd``)."""
    if pd:
        enis = [observed("eni-1", 0, primary=True, prefixes=("10.0.0.0/28",)), observed("eni-2", 2)]
        expected = ["10.0.0.0", "10.0.0.1", "10.0.0.2"]
    else:
        enis = [observed("eni-1", 0, primary=True, ips=("1.1.1.1", "1.1.1.2")),
                observed("eni-2", 2, ips=("1.1.2.2",))]  # fmt: skip
        expected = ["1.1.1.1", "1.1.1.2", "1.1.2.2"]  # packed low (upstream picks in map order)
    # RemoveUnusedENIFromStore(0, 0, 0): no target needs the idle ENI; MINIMUM_IP_TARGET=2
    # (what eni-1 holds) says the same in the core's configuration.
    config = PoolConfig(prefix_delegation=pd, minimum_ip_target=2)
    ipam = datastore(enis, config, limits(per_eni=2))
    got = [ipam.assign(ipam_key(f"sandbox-{i}"), metadata(f"sample-pod-{i}"), 0.0).ipv4
           for i in (1, 2, 3)]  # fmt: skip
    assert got == expected
    assert ipam.assign(ipam_key("sandbox-1"), metadata("sample-pod-1"), 0.0).ipv4 == got[0]
    assert ipam.stats(0.0).assigned == 3
    if not pd:
        with pytest.raises(PoolExhausted):
            ipam.assign(ipam_key("sandbox-4"), metadata("sample-pod-4"), 0.0)
    assert ipam.release(ipam_key("sandbox-4"), 0.0) is None
    released = ipam.release(ipam_key("sandbox-3"), 0.0)
    assert released is not None and ipam.stats(0.0).cooling == 1
    if not pd:  # eni-2 idle: not given back while its address cools, given back after
        assert shrink_answered(ipam, 10.0) == [] and "eni-2" in eni_ids(ipam, 10.0)
        for step in range(3):
            shrink_answered(ipam, OLD + 100 * step)
        assert eni_ids(ipam, OLD + 300) == ["eni-1"]


@pytest.mark.parametrize("pd", [False, True], ids=["TestGetIPStatsV4", "TestGetIPStatsV4WithPD"])
def test_get_ip_stats_v4(pd: bool) -> None:
    """TestGetIPStatsV4(WithPD): total, assigned and cooling addresses (cooldown 1 s)."""
    block = {"prefixes": ("10.0.0.0/28",)} if pd else {"ips": ("1.1.1.1", "1.1.1.2")}
    ipam = datastore([observed("eni-1", 0, primary=True, **block)],
                     PoolConfig(prefix_delegation=pd, cooldown_s=1.0))  # fmt: skip
    ipam.assign(ipam_key("sandbox-1"), metadata("sample-pod-1"), 0.0)
    ipam.assign(ipam_key("sandbox-2"), metadata("sample-pod-2"), 0.0)
    total, prefixes = (16, 1) if pd else (2, 0)
    stats = ipam.stats(0.0)
    assert (stats.total, stats.prefixes, stats.assigned, stats.cooling) == (total, prefixes, 2, 0)
    ipam.release(ipam_key("sandbox-2"), 0.0)
    stats = ipam.stats(0.0)
    assert (stats.total, stats.assigned, stats.cooling) == (total, 1, 1)
    stats = ipam.stats(1.0)  # the cooldown is over: no sleep needed, time is an input
    assert (stats.total, stats.assigned, stats.cooling) == (total, 1, 0)


def test_get_ip_stats_v6() -> None:
    """TestGetIPStatsV6 (issue 15 item 7): IPv6 stats count the /80's addresses and pods."""
    eni = attrs.evolve(observed("eni-1", 0, primary=True), ipv6_prefixes=("21db::/80",))
    ipam = datastore([eni], PoolConfig(ipv6=True, ipv4=False), limits_for("m5.large"))
    ipam.assign(ipam_key("sandbox-3", "netv6"), metadata("sample-pod-3"), 0.0)
    stats = ipam.stats(0.0)
    assert (stats.total, stats.prefixes, stats.assigned, stats.cooling) == (2**48, 1, 1, 0)


def test_warm_eni_interactions() -> None:
    """TestWarmENIInteractions: with WARM_IP_TARGET / MINIMUM_IP_TARGET an idle ENI goes only
    if the others still meet both; trunk and EFA ENIs never go; an empty normal ENI does.

    Upstream calls ``RemoveUnusedENIFromStore(warmIP, minIP, 0)`` alone; the core's shrink
    first gives back surplus addresses from the highest ENI, then frees it once empty: the
    ENIs left at the end are compared."""
    base = [
        observed("eni-1", 1, primary=True, ips=("1.1.1.1", "1.1.1.2")),
        observed("eni-2", 2, ips=("1.1.2.1", "1.1.2.2")),
        observed("eni-3", 3, ips=("1.1.3.1",)),
    ]

    def settled(warm_ip: int, minimum: int, enis: list[object]) -> list[str]:
        config = PoolConfig(warm_ip_target=warm_ip, minimum_ip_target=minimum)
        ipam = datastore(enis, config, limits_for("m5.4xlarge"))  # type: ignore[arg-type]
        ipam.assign(ipam_key("sandbox-1"), metadata("sample-pod-1"), 0.0)
        ipam.assign(ipam_key("sandbox-2"), metadata("sample-pod-2"), 0.0)
        for step in range(10):
            shrink_answered(ipam, OLD + step * 100)
        return eni_ids(ipam, OLD + 1000)

    assert settled(3, 1, base) == ["eni-1", "eni-2", "eni-3"]
    assert settled(1, 5, base) == ["eni-1", "eni-2", "eni-3"]
    assert settled(2, 4, base) == ["eni-1", "eni-2"]  # 2 free IPs left, which eni-2 has
    assert settled(0, 3, base[:2]) == ["eni-1", "eni-2"]
    assert settled(0, 2, base[:2]) == ["eni-1"]  # eni-1 alone meets MINIMUM_IP_TARGET=2
    special = [base[0], observed("eni-4", 4, ips=("1.1.4.1",), trunk=True),
               observed("eni-5", 5, ips=("1.1.5.1",), efa=True)]  # fmt: skip
    assert settled(0, 2, special) == ["eni-1", "eni-4", "eni-5"]  # trunk and EFA stay
    assert settled(0, 2, [*special, observed("eni-6", 6)]) == ["eni-1", "eni-4", "eni-5"]


def test_normalize_checkpoint_by_pod_existence() -> None:
    """TestDataStore_normalizeCheckpointDataByPodVethExistence and
    TestDataStore_validateAllocationByPodVethExistence: allocations whose pod is gone are
    dropped at restore. The veth and netlink checks themselves are the shell's (the ``keep``
    callable; ``adapters/ipamd`` asks the datapath), so only the core's side is here: what
    ``keep`` rejects is dropped and its address cools down, the rest is restored."""
    ipam = datastore([observed("eni-1", 0, primary=True, ips=("192.168.9.106", "192.168.1.1"))])
    live = Allocation(
        ipam_key("5a1f", "aws-cni"), metadata("coredns-q"), "192.168.9.106", None, 0.0
    )
    gone = Allocation(ipam_key("b472", "aws-cni"), metadata("coredns-8"), "192.168.1.1", None, 0.0)
    report = ipam.restore(Checkpoint(allocations=(live, gone)), 5.0, keep=lambda a: a is live)
    assert [a.key for a in report.restored] == [live.key]
    assert report.dropped == ((gone, "pod is gone"),)
    assert ipam.stats(5.0).cooling == 1


def test_force_removal_metrics() -> None:
    """TestForceRemovalMetrics: an address, then an ENI, removed under a pod are each
    reported as force-removed (upstream counts them in ``awscni_force_removed_*``; the
    daemon counts the report's ``force_removed``)."""
    primary = observed("eni-0", 0, primary=True)
    eni1 = observed("eni-1", 1, ips=("1.1.1.1", "1.1.1.2"))
    ipam = datastore([primary, eni1])
    first = ipam.assign(ipam_key("sandbox-1"), metadata("sample-pod-1"), 0.0)
    second = ipam.assign(ipam_key("sandbox-2"), metadata("sample-pod-2"), 0.0)
    no_first = attrs.evolve(eni1, ipv4_addresses=("1.1.1.2",))
    report = ipam.reconcile(ObservedNode((primary, no_first)), GRACE_PAST)
    assert report.force_removed == (first,)
    report = ipam.reconcile(ObservedNode((primary,)), GRACE_PAST)
    assert report.force_removed == (second,)


def test_primary_eni_tagged_no_manage_is_managed() -> None:
    """TestIPAMContext_filterUnmanagedENIs, "Primary ENI unmanaged" (issue 15 item 5):
    the primary ENI is always managed, whatever its tags."""
    tagged = observed("eni-1", 0, primary=True, ips=("1.1.1.1",), tags=((NO_MANAGE_TAG, "true"),))
    ipam = datastore([tagged])
    assert ipam.assign(ipam_key("sandbox-1"), metadata("p"), 0.0).ipv4 == "1.1.1.1"
