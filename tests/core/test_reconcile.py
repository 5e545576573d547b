"""Reconciliation: exact set diffs, grace windows, no_manage ENIs, force-removed pods."""

from __future__ import annotations

import attrs
import pytest

from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses, UnassignAddresses
from ipamcore.errors import FailureKind, PoolExhausted
from ipamcore.events import AddressesUnassigned, EffectFailed
from ipamcore.model import ObservedEni, ObservedNode
from tests.core.builders import eni, key, node, pod


def test_new_enis_and_addresses_are_added() -> None:
    ipam = node(enis=(eni(0, ips=2),), now=0.0)
    report = ipam.reconcile(ObservedNode((eni(0, ips=3), eni(1, ips=2))), 100.0)
    assert [e.eni_id for e in report.diff.add_enis] == ["eni-0001"]
    assert report.diff.add_blocks == (("eni-0000", "10.0.0.12", False),)
    assert ipam.stats(100.0).total == 5


def test_vanished_addresses_are_removed_and_their_pods_reported() -> None:
    ipam = node(enis=(eni(0, ips=2), eni(1, ips=2)), now=0.0)
    allocation = ipam.assign(key(1), pod(1), 0.0)  # 10.0.0.10 on eni-0000
    report = ipam.reconcile(ObservedNode((eni(0, ips=2, first_host=11), )), 100.0)
    assert report.diff.remove_enis == ("eni-0001",)
    assert report.force_removed == (allocation,)
    assert ipam.stats(100.0).total == 2
    # The pod still holds the address: its record stays (eni unknown) until its DEL.
    assert ipam.get(key(1)) == allocation._replace(eni_id="", device_index=0)
    assert set(ipam.orphaned) == {allocation.address}


def test_a_vanished_address_that_comes_back_stays_with_its_pod() -> None:
    ipam = node(config=PoolConfig(cooldown_s=0), enis=(eni(0, ips=2),), now=0.0)
    held = ipam.assign(key(1), pod(1), 0.0)
    other = next(a for a in ("10.0.0.10", "10.0.0.11") if a != held.address)
    without = ObservedEni(**{**attrs.asdict(eni(0, ips=2), recurse=False),
                             "ipv4_addresses": (other,)})  # fmt: skip
    assert ipam.reconcile(ObservedNode((without,)), 100.0).force_removed == (held,)
    # Out of band, the address is assigned to the ENI again: it must not go to a new pod.
    ipam.reconcile(ObservedNode((eni(0, ips=2),)), 200.0)
    assert ipam.get(key(1)) is not None and ipam.get(key(1)).address == held.address  # type: ignore[union-attr]
    assert ipam.orphaned == {}
    assert ipam.assign(key(2), pod(2), 201.0).address == other
    with pytest.raises(PoolExhausted):
        ipam.assign(key(3), pod(3), 202.0)
    assert ipam.release(key(1), 203.0) is not None
    assert ipam.assign(key(3), pod(3), 204.0).address == held.address


def test_del_of_an_orphaned_allocation_releases_it_and_nothing_else() -> None:
    ipam = node(enis=(eni(0, ips=2), eni(1, ips=2)), now=0.0)
    allocation = ipam.assign(key(1), pod(1), 0.0)
    ipam.reconcile(ObservedNode((eni(0, ips=2, first_host=11),)), 100.0)
    released = ipam.release(key(1), 101.0)
    assert released is not None and released.address == allocation.address
    assert ipam.get(key(1)) is None and ipam.orphaned == {}
    assert ipam.release(key(1), 102.0) is None


def test_stale_view_does_not_remove_what_was_just_acquired() -> None:
    ipam = node(enis=(eni(0, ips=2),), now=0.0)
    ipam.reconcile(ObservedNode((eni(0, ips=4),)), 100.0)  # two new addresses at t=100
    report = ipam.reconcile(ObservedNode((eni(0, ips=2),)), 130.0)  # metadata lags
    assert report.diff.remove_blocks == ()
    report = ipam.reconcile(ObservedNode((eni(0, ips=2),)), 161.0)
    assert len(report.diff.remove_blocks) == 2


def test_recently_released_addresses_are_not_added_back() -> None:
    ipam = node(config=PoolConfig(warm_ip_target=1), enis=(eni(0, ips=3),), now=0.0)
    (unassign,) = ipam.plan(100.0)
    assert isinstance(unassign, UnassignAddresses)
    ipam.apply(AddressesUnassigned(unassign.effect_id), 101.0)
    stale = ObservedNode((eni(0, ips=3),))
    assert ipam.reconcile(stale, 120.0).diff.add_blocks == ()
    assert len(ipam.reconcile(stale, 200.0).diff.add_blocks) == 2


def test_no_manage_eni_is_tracked_but_carries_no_pods() -> None:
    tagged = eni(1, ips=5, tags=(("node.k8s.amazonaws.com/no_manage", "true"),))
    ipam = node(enis=(eni(0, ips=1),), now=0.0)
    ipam.reconcile(ObservedNode((eni(0, ips=1), tagged)), 10.0)
    stats = ipam.stats(10.0)
    assert (stats.enis, stats.total) == (2, 1)


def test_same_view_twice_changes_nothing() -> None:
    view = ObservedNode((eni(0, ips=3), eni(1, prefixes=1)))
    ipam = node(config=PoolConfig(prefix_delegation=True), enis=view.enis, now=0.0)
    assert ipam.reconcile(view, 100.0).diff.empty
    assert ipam.reconcile(attrs.evolve(view), 200.0).diff.empty


WARM_IPS = PoolConfig(warm_ip_target=2, warm_eni_target=0)  # growth tops up eni-0001 only


def test_an_eni_answered_not_found_is_left_alone_until_reconciliation_removes_it() -> None:
    """AssignAddresses answered NotFound: the policy leaves that ENI alone (retrying would
    keep it busy, and reconciliation skips busy ENIs), and the next reconciliation that
    does not see it removes it, keeping its pods' records."""
    ipam = node("m5.large", config=WARM_IPS, enis=(eni(0, ips=9), eni(1, ips=1)), now=0.0)
    held = [ipam.assign(key(n), pod(n), 100.0) for n in range(10)]  # the whole pool
    (on_eni1,) = [a for a in held if a.eni_id == "eni-0001"]
    effects = [e for e in ipam.plan(101.0) if isinstance(e, AssignAddresses)]
    assert [e.eni_id for e in effects] == ["eni-0001"]
    assert ipam.apply(EffectFailed(effects[0].effect_id, FailureKind.NOT_FOUND), 102.0) == ()
    assert "eni-0001" in {v.eni_id for v in ipam.eni_views(102.0)}  # one answer is no proof
    later = ipam.plan(103.0)  # growth goes elsewhere (a new ENI), not to the suspect
    assert later and not any(getattr(e, "eni_id", "") == "eni-0001" for e in later)
    report = ipam.reconcile(ObservedNode((eni(0, ips=9),)), 201.0)
    assert report.diff.remove_enis == ("eni-0001",)
    assert report.force_removed == (on_eni1,)
    assert ipam.get(on_eni1.key) is not None  # the pod keeps its record


def test_an_eni_answered_not_found_but_shown_by_ec2_is_used_again() -> None:
    ipam = node("m5.large", config=WARM_IPS, enis=(eni(0, ips=9), eni(1, ips=1)), now=0.0)
    for n in range(10):
        ipam.assign(key(n), pod(n), 100.0)
    (effect,) = [e for e in ipam.plan(101.0) if isinstance(e, AssignAddresses)]
    ipam.apply(EffectFailed(effect.effect_id, FailureKind.NOT_FOUND), 102.0)
    ipam.reconcile(ObservedNode((eni(0, ips=9), eni(1, ips=1))), 161.0)
    (again,) = ipam.plan(162.0)
    assert isinstance(again, AssignAddresses) and again.eni_id == "eni-0001"
