"""Reconciliation: exact set diffs, grace windows, no_manage ENIs, force-removed pods."""

from __future__ import annotations

import attrs

from ipamcore.config import PoolConfig
from ipamcore.effects import UnassignAddresses
from ipamcore.events import AddressesUnassigned
from ipamcore.model import ObservedNode
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
    assert ipam.get(key(1)) is None
    assert ipam.stats(100.0).total == 2


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
