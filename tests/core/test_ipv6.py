"""IPv6 in the core: upstream's single stack (one /80 on the primary ENI, asked for once) and
this project's dual stack (an IPv4 from the warm pool and an IPv6 from the prefix per key)."""

from __future__ import annotations

import ipaddress
import json

import attrs
import pytest

from ipamcore.checkpoint import decode, encode
from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses
from ipamcore.errors import ConfigError, FailureKind, PoolExhausted
from ipamcore.events import AddressesAssigned, EffectFailed
from ipamcore.ipam import Ipam
from ipamcore.limits import limits_for
from ipamcore.netspec import EGRESS_V4_RANGE, EGRESS_V4_SLOTS, egress_v4_for, egress_v6_for
from tests.core.builders import eni, key, node, pod

PREFIX = "2600:1f14:a0c:ce01:1::/80"
V6 = PoolConfig(ipv6=True, ipv4=False, prefix_delegation=True)
DUAL = PoolConfig(ipv6=True, ipv4=True, warm_ip_target=2)


def with_prefix() -> Ipam:
    return node(config=V6, enis=(attrs.evolve(eni(0), ipv6_prefixes=(PREFIX,)),))


def test_ipv6_mode_asks_once_for_the_primary_enis_prefix_and_hands_out_from_it() -> None:
    ipam = node(config=V6, enis=(eni(0), eni(1)))
    with pytest.raises(PoolExhausted, match="IPv6 prefix"):
        ipam.assign(key(1), pod(1), 0.0)
    (effect,) = ipam.plan(0.0, waiting=1)
    assert isinstance(effect, AssignAddresses)
    assert (effect.eni_id, effect.ipv6_prefix_count, effect.ipv4_count) == ("eni-0000", 1, 0)
    assert ipam.plan(1.0, waiting=1) == []  # in flight: never a second one
    ipam.apply(AddressesAssigned(effect.effect_id, "eni-0000", ipv6_prefixes=(PREFIX,)), 2.0)
    got = [ipam.assign(key(n), pod(n), 3.0) for n in range(50)]
    net = ipaddress.IPv6Network(PREFIX)
    assert len({a.ipv6 for a in got}) == 50
    assert all(ipaddress.IPv6Address(a.ipv6) in net and a.ipv4 is None for a in got)
    assert {a.eni_id for a in got} == {"eni-0000"}
    assert ipam.plan(4.0, waiting=0) == []  # warm targets play no part
    stats = ipam.stats(4.0)
    assert (stats.assigned, stats.total, stats.prefixes) == (50, 2**48, 1)
    assert any("are ignored" in n for n in ipam.notices)


def test_a_failed_prefix_request_is_asked_again_and_touches_no_ipv4() -> None:
    ipam = node(config=V6)
    (effect,) = ipam.plan(0.0)
    ipam.apply(EffectFailed(effect.effect_id, FailureKind.THROTTLED, "slow down"), 1.0)
    assert any("IPv6 prefix assignment failed" in n for n in ipam.notices)
    assert ipam.plan(2.0) == [] and ipam.next_wake_at(2.0) == 6.0  # not before the pause
    (again,) = ipam.plan(6.0)
    assert again.ipv6_prefix_count == 1 and again.effect_id != effect.effect_id  # type: ignore[union-attr]


def test_released_ipv6_addresses_are_not_handed_out_again() -> None:
    ipam = with_prefix()
    first = ipam.assign(key(1), pod(1), 0.0)
    assert ipam.release(key(1), 1.0) == first
    assert ipam.assign(key(2), pod(2), 2.0).ipv6 != first.ipv6
    assert ipam.assign(key(2), pod(2), 3.0).ipv6 == ipam.get(key(2)).ipv6  # type: ignore[union-attr]


def test_live_ipv6_pods_never_share_a_node_local_ipv4_egress_address() -> None:
    ipam = with_prefix()
    keep = ipam.assign(key("kept"), pod("kept"), 0.0)
    live = {keep.ipv6}
    for n in range(2 * EGRESS_V4_SLOTS):  # the counter wraps the slots twice
        a = ipam.assign(key(n), pod(n), 1.0)
        live.add(a.ipv6)
        if n % 3:
            ipam.release(key(n), 2.0)
            live.discard(a.ipv6)
    egress = [egress_v4_for(a or "") for a in live]
    assert len(set(egress)) == len(egress)
    net = ipaddress.IPv4Network(EGRESS_V4_RANGE)
    assert all(ipaddress.IPv4Address(e) in net for e in egress)
    assert "169.254.172.0" not in egress and "169.254.172.1" not in egress


def test_ipv6_allocations_survive_a_restart_from_upstreams_checkpoint() -> None:
    """An IPv6 entry as upstream writes it (``ipv4`` empty) is restored onto its ENI, and
    the next address comes after it."""
    upstream = {"version": "vpc-cni-ipam/1", "allocations": [{
        "networkName": "aws-cni", "containerID": "c7", "ifName": "eth0", "ipv4": "",
        "ipv6": "2600:1f14:a0c:ce01:1::9", "allocationTimestamp": 1_700_000_000_000_000_000,
        "metadata": {"k8sPodNamespace": "default", "k8sPodName": "pod-7"},
    }]}  # fmt: skip
    ipam = with_prefix()
    report = ipam.restore(decode(json.dumps(upstream).encode()), 10.0)
    (restored,) = report.restored
    assert restored.eni_id == "eni-0000" and restored.ipv6 == "2600:1f14:a0c:ce01:1::9"
    assert ipam.assign(key(8), pod(8), 11.0).ipv6 == "2600:1f14:a0c:ce01:1::a"
    assert ipam.v6_stats().assigned == 2


def test_ipv6_needs_a_nitro_type_and_a_family() -> None:
    with pytest.raises(ConfigError, match=r"t2.medium.*nitro"):
        Ipam(V6, limits_for("t2.medium"))
    with pytest.raises(ConfigError, match="nitro"):
        Ipam(DUAL, limits_for("t2.medium"))
    with pytest.raises(ConfigError, match="ENABLE_IPv4"):
        PoolConfig(ipv4=False, ipv6=False)


# -- dual stack ------------------------------------------------------------------------------


def dual() -> Ipam:
    primary = attrs.evolve(eni(0, ips=4), ipv6_prefixes=(PREFIX,))
    return node(config=DUAL, enis=(primary,))


def test_dual_stack_gives_one_key_both_families_and_takes_both_back() -> None:
    ipam = dual()
    a = ipam.assign(key(1), pod(1), 0.0)
    assert a.ipv4 is not None and a.ipv6 is not None and a.eni_id == "eni-0000"
    assert ipam.get(key(1)) == a and ipam.assign(key(1), pod(1), 1.0) == a
    assert ipam.allocations() == [a] and ipam.find_by_pod("default", "pod-1") == [a]
    assert ipam.v6_stats().assigned == 1 and ipam.stats(1.0).assigned == 1
    assert ipam.release(key(1), 2.0) == a
    assert ipam.get(key(1)) is None and ipam.v6_stats().assigned == 0
    assert ipam.stats(2.0).cooling == 1  # the IPv4 cools down as ever


def test_dual_stack_takes_no_ipv4_before_the_node_has_its_ipv6_prefix() -> None:
    ipam = node(config=DUAL, enis=(eni(0, ips=4),))
    with pytest.raises(PoolExhausted, match="IPv6 prefix"):
        ipam.assign(key(1), pod(1), 0.0)
    assert ipam.stats(0.0).assigned == 0
    effects = ipam.plan(0.0, waiting=1)
    (v6,) = [e for e in effects if isinstance(e, AssignAddresses) and e.ipv6_prefix_count]
    ipam.apply(AddressesAssigned(v6.effect_id, "eni-0000", ipv6_prefixes=(PREFIX,)), 1.0)
    assert ipam.assign(key(1), pod(1), 2.0).ipv6 is not None


def test_dual_stack_checkpoint_is_one_entry_per_pod_and_restores_both() -> None:
    ipam = dual()
    a = ipam.assign(key(1), pod(1), 0.0)
    data = encode(ipam.checkpoint())
    (entry,) = json.loads(data)["allocations"]
    assert (entry["ipv4"], entry["ipv6"]) == (a.ipv4, a.ipv6)
    again = dual()
    report = again.restore(decode(data), 5.0)
    (restored,) = report.restored
    assert (restored.ipv4, restored.ipv6) == (a.ipv4, a.ipv6)
    assert again.get(key(1)) == restored
    b = again.assign(key(2), pod(2), 6.0)
    assert b.ipv4 != a.ipv4 and b.ipv6 != a.ipv6


def test_egress_addresses_of_the_other_family() -> None:
    assert egress_v4_for("2600:1f14:a0c:ce01:1::1") != egress_v4_for("2600:1f14:a0c:ce01:1::2")
    assert egress_v6_for("10.0.1.5") == "fd00::ac00:a00:105"
    assert egress_v6_for("10.0.1.5") != egress_v6_for("10.0.5.1")
