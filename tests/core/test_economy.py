"""ipamcore.economy: addresses by ENI and subnet, prefix fragmentation and the repacking
plan, subnet figures; pure functions of the pool's views."""

from __future__ import annotations

from ipamcore import economy
from ipamcore.config import PoolConfig
from ipamcore.model import Subnet
from tests.core.builders import SUBNET, SUBNET_CIDR, eni, key, node, pod


def test_counts_by_eni_and_subnet_by_state() -> None:
    ipam = node(enis=(eni(0, ips=6), eni(1, ips=4)))
    for n in range(7):
        ipam.assign(key(n), pod(n), now=1.0)
    ipam.release(key(0), now=2.0)  # cools down for 30 s
    counts = {c.eni_id: c for c in economy.eni_counts(ipam.eni_views(3.0))}
    assert counts["eni-0000"].by_state() == {"assigned": 5, "available": 0, "cooling": 1,
                                             "leaving": 0}  # fmt: skip
    assert counts["eni-0001"].by_state() == {"assigned": 1, "available": 3, "cooling": 0,
                                             "leaving": 0}  # fmt: skip
    (subnet,) = economy.subnet_counts(ipam.eni_views(3.0))
    assert (subnet.subnet_id, subnet.held, subnet.enis, subnet.taken_from_subnet) == (
        SUBNET, 10, 2, 12)
    later = {c.eni_id: c for c in economy.eni_counts(ipam.eni_views(40.0))}
    assert later["eni-0000"].cooling == 0 and later["eni-0000"].available == 1


def test_fragmentation_plans_the_least_used_prefixes_to_drain() -> None:
    config = PoolConfig(prefix_delegation=True, warm_prefix_target=1)
    ipam = node("m5.xlarge", config, enis=(eni(0, prefixes=4),))
    # fill 40 addresses (prefixes 0, 1 and half of 2), then release most of prefix 1's pods
    for n in range(40):
        ipam.assign(key(n), pod(n), now=1.0)
    for n in range(16, 30):
        ipam.release(key(n), now=2.0)
    (frag,) = economy.fragmentation(ipam.eni_views(100.0))
    assert frag.prefixes == 4 and frag.assigned == 26
    assert frag.by_use == {"empty": 1, "sparse": 1, "partial": 1, "full": 1}
    assert frag.needed == 2 and frag.freeable == 1
    (drained,) = frag.drain
    assert drained.assigned == 2 and drained.prefix == "10.0.100.16/28"
    assert frag.pods_to_move == 2 and frag.addresses_freed == 32


def test_no_prefixes_no_fragmentation() -> None:
    ipam = node(enis=(eni(0, ips=5),))
    assert economy.fragmentation(ipam.eni_views(0.0)) == []


def test_subnet_uses_and_the_free_prefix_bound() -> None:
    ipam = node(enis=(eni(0, ips=5),))
    ipam.assign(key(1), pod(1), now=0.0)
    subnets = [Subnet(SUBNET, SUBNET_CIDR, "us-west-2a", free_addresses=100),
               Subnet("subnet-other", "10.1.0.0/28", "us-west-2a", free_addresses=11)]
    uses = {u.subnet_id: u for u in economy.subnet_uses(subnets, ipam.eni_views(0.0),
                                                        {SUBNET: 5.0})}  # fmt: skip
    mine = uses[SUBNET]
    assert mine.usable == 65_536 - 5 and mine.available == 100
    assert mine.free_prefixes_at_most == 6  # 100 // 16
    assert mine.node_taken == 6 and mine.node_idle == 4 and mine.described_at == 5.0
    assert uses["subnet-other"].free_prefixes_at_most == 0  # a /28: EC2 reserves 5 of 16
    assert uses["subnet-other"].node_taken == 0
    assert economy.usable_addresses("10.0.0.0/24") == 251
    assert economy.free_prefixes_at_most("10.0.0.0/24", 251) == 14  # not the first or last
