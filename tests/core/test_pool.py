"""The address pool: idempotent ADD, no-op DEL, cooldown, packing order, lookups."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from ipamcore.config import PoolConfig
from ipamcore.errors import PoolExhausted, UsageError
from ipamcore.model import Allocation, AllocationKey
from ipamcore.pool import AddressPool
from tests.core.builders import eni, key, node, pod


def test_add_is_idempotent_and_del_of_unknown_key_is_a_noop() -> None:
    ipam = node(enis=(eni(0, ips=3),))
    first = ipam.assign(key(1), pod(1), 10.0)
    assert ipam.assign(key(1), pod(1), 11.0) == first
    assert ipam.stats(11.0).assigned == 1
    assert ipam.release(key("unknown"), 12.0) is None
    assert ipam.stats(12.0).assigned == 1


def test_released_address_cools_down_and_is_not_available_meanwhile() -> None:
    ipam = node(config=PoolConfig(cooldown_s=30), enis=(eni(0, ips=1),))
    address = ipam.assign(key(1), pod(1), 0.0).address
    ipam.release(key(1), 100.0)
    stats = ipam.stats(100.0)
    assert (stats.cooling, stats.available) == (1, 0)
    with pytest.raises(PoolExhausted):
        ipam.assign(key(2), pod(2), 129.9)
    assert ipam.assign(key(2), pod(2), 130.0).address == address
    assert ipam.stats(130.0).cooling == 0


def test_pods_are_packed_onto_the_lowest_eni_first() -> None:
    ipam = node(enis=(eni(0, ips=2), eni(2, ips=2), eni(1, ips=2)))
    got = [ipam.assign(key(i), pod(i), 0.0).eni_id for i in range(6)]
    assert got == ["eni-0000"] * 2 + ["eni-0001"] * 2 + ["eni-0002"] * 2


def test_among_equal_addresses_the_one_released_longest_ago_is_reused() -> None:
    ipam = node(config=PoolConfig(cooldown_s=10), enis=(eni(0, ips=3),))
    a = [ipam.assign(key(i), pod(i), 0.0).address for i in range(3)]
    ipam.release(key(2), 1.0)
    ipam.release(key(0), 2.0)
    ipam.release(key(1), 3.0)
    order = [ipam.assign(key(10 + i), pod(10 + i), 100.0).address for i in range(3)]
    assert order == [a[2], a[0], a[1]]


def test_never_used_addresses_come_before_reused_ones() -> None:
    ipam = node(config=PoolConfig(cooldown_s=0), enis=(eni(0, ips=2),))
    first = ipam.assign(key(1), pod(1), 0.0).address
    ipam.release(key(1), 1.0)
    assert ipam.assign(key(2), pod(2), 2.0).address != first


def test_prefixes_fill_in_order_so_later_prefixes_drain() -> None:
    ipam = node(config=PoolConfig(prefix_delegation=True), instance_type="m5.large",
                enis=(eni(0, prefixes=2),))
    first, second = ip_network("10.0.100.0/28"), ip_network("10.0.100.16/28")
    got = [ip_address(ipam.assign(key(i), pod(i), 0.0).address) for i in range(17)]
    assert all(a in first for a in got[:16])
    assert got[16] in second


def test_find_by_pod() -> None:
    ipam = node(enis=(eni(0, ips=3),))
    ipam.assign(AllocationKey("aws-cni", "c1", "eth0"), pod("a"), 0.0)
    ipam.assign(AllocationKey("aws-cni", "c1", "eth1"), pod("a"), 0.0)
    ipam.assign(key(2), pod("b"), 0.0)
    assert [a.key.if_name for a in ipam.find_by_pod("default", "pod-a")] == ["eth0", "eth1"]
    ipam.release(AllocationKey("aws-cni", "c1", "eth0"), 1.0)
    assert [a.key.if_name for a in ipam.find_by_pod("default", "pod-a")] == ["eth1"]
    assert ipam.find_by_pod("default", "nobody") == []


def test_excluded_enis_carry_no_pod_addresses() -> None:
    unmanaged = eni(1, ips=3, tags=(("node.k8s.amazonaws.com/no_manage", "true"),))
    ipam = node(enis=(eni(0), unmanaged))
    assert ipam.stats(0.0).total == 0
    assert ipam.stats(0.0).enis == 2  # still counts against the ENI limit
    with pytest.raises(PoolExhausted):
        ipam.assign(key(1), pod(1), 0.0)


def test_ipv6_mode_hands_out_addresses_from_the_eni_prefix() -> None:
    primary = eni(0)
    import attrs

    primary = attrs.evolve(primary, ipv6_prefixes=("2600:1f14::/80",))
    ipam = node(config=PoolConfig(ipv6=True), enis=(primary,))
    a = ipam.assign(key(1), pod(1), 0.0)
    b = ipam.assign(key(2), pod(2), 0.0)
    assert (a.ipv6, b.ipv6) == ("2600:1f14::1", "2600:1f14::2")
    assert a.ipv4 is None
    assert ipam.plan(0.0) == []
    assert ipam.release(key(1), 1.0) == a


def test_equal_release_times_are_reused_in_address_order() -> None:
    ipam = node(config=PoolConfig(cooldown_s=10), enis=(eni(0, ips=3),))
    a = sorted((ipam.assign(key(i), pod(i), 0.0).address for i in range(3)), key=ip_address)
    for address in reversed(a):  # released at one instant, highest address first
        holder = next(x.key for x in ipam.allocations() if x.address == address)
        ipam.release(holder, 5.0)
    order = [ipam.assign(key(10 + i), pod(10 + i), 100.0).address for i in range(3)]
    assert order == a


def test_prefix_churn_does_not_grow_the_ready_index() -> None:
    from ipamcore.model import ObservedEni
    from ipamcore.pool import AddressPool

    pool = AddressPool(cooldown_s=0)
    info = ObservedEni(eni_id="eni-a", mac="02:00:00:00:00:01", device_index=0,
                       subnet_id="subnet-a", subnet_cidr="10.0.0.0/16",
                       primary_ip="10.0.255.1", is_primary=True)  # fmt: skip
    pool.add_eni(info, 0.0, excluded=False)
    for n in range(200):
        prefix = f"10.0.{n % 250}.0/28"
        assert pool.add_block("eni-a", prefix, True, float(n))
        k = AllocationKey("net", f"c{n}", "eth0")
        pool.assign(k, pod(n), float(n))
        pool.release(k, float(n))
        pool.remove_block("eni-a", prefix)
    assert len(pool._buckets) <= 1  # one bucket per live block, not one per block ever seen
    assert pool.total == pool.assigned == pool.cooling == 0


def _pool_with_eni(cooldown_s: float) -> AddressPool:
    from ipamcore.model import ObservedEni

    pool = AddressPool(cooldown_s=cooldown_s)
    info = ObservedEni(eni_id="eni-a", mac="02:00:00:00:00:01", device_index=0,
                       subnet_id="subnet-a", subnet_cidr="10.0.0.0/16",
                       primary_ip="10.0.255.1", is_primary=True)  # fmt: skip
    pool.add_eni(info, 0.0, excluded=False)
    return pool


def test_a_removed_blocks_queued_entries_never_hand_out_the_next_blocks_addresses_twice() -> None:
    pool = _pool_with_eni(cooldown_s=10)
    assert pool.add_block("eni-a", "10.0.1.0/28", True, 0.0)
    for n in range(8):  # some cooling, some ready: queue entries for every slot
        pool.assign(key(n), pod(n), 0.0)
        if n % 2:
            pool.release(key(n), 1.0)
    removed = pool.remove_block("eni-a", "10.0.1.0/28")
    assert {a.key for a in removed} == {key(n) for n in range(0, 8, 2)}
    assert pool.add_block("eni-a", "10.0.2.0/28", True, 2.0)  # reuses the slot numbers
    got = [pool.assign(key(100 + n), pod(n), 50.0).address for n in range(16)]
    assert sorted(got, key=ip_address) == [str(a) for a in ip_network("10.0.2.0/28")]
    with pytest.raises(PoolExhausted):
        pool.assign(key(200), pod(200), 50.0)
    assert (pool.total, pool.assigned, pool.cooling) == (16, 16, 0)


def test_an_allocation_holding_an_address_cannot_be_deleted_from_the_view() -> None:
    pool = _pool_with_eni(cooldown_s=10)
    pool.add_block("eni-a", "10.0.1.0/28", True, 0.0)
    held = pool.assign(key(1), pod(1), 0.0)
    with pytest.raises(UsageError):
        del pool.allocations[key(1)]
    assert pool.allocations[key(1)] == held and pool.assigned == 1
    kept = Allocation(key(2), pod(2), "10.9.9.9", None, 0.0)  # on record, no pool address
    pool.record_allocation(kept)
    assert pool.assign(key(2), pod(2), 1.0) == kept
    del pool.allocations[key(2)]
    assert key(2) not in pool.allocations and len(pool.allocations) == 1


@pytest.mark.parametrize("cooldown_s", [0.0, 10.0])
def test_a_blocks_busy_count_follows_assignments_releases_and_cooldowns(cooldown_s: float) -> None:
    pool = _pool_with_eni(cooldown_s=cooldown_s)
    pool.add_block("eni-a", "10.0.1.0/28", True, 0.0)
    block = pool.enis["eni-a"].blocks["10.0.1.0/28"]
    for n in range(4):
        pool.assign(key(n), pod(n), 0.0)
    pool.release(key(0), 1.0)
    pool.release(key(1), 1.0)
    cooling = 2 if cooldown_s else 0
    assert (block.busy, pool.cooling) == (2 + cooling, cooling)
    pool.advance(1.0 + cooldown_s)  # the cooldowns end
    assert (block.busy, pool.cooling) == (2, 0)
    free = next(s for s in pool.slots.values() if s.state.value == "free")
    pool.mark_released(free, 2.0, 2.0)  # a restored release time
    assert block.busy == (3 if cooldown_s else 2)


def test_a_long_queue_keeps_its_order_across_compactions() -> None:
    from ipamcore.inventory import EntryFifo

    fifo, expected = EntryFifo(), []
    for n in range(1000):
        fifo.items.append(n)
        expected.append(n)
        if n % 3:  # takes two entries in three, so the queue never empties: it is compacted
            assert fifo.popleft() == expected.pop(0)
    assert len(fifo) == len(expected) == 334 and len(fifo.items) < 500
    assert [fifo.popleft() for _ in range(len(expected))] == expected
    assert not fifo.items and fifo.head == 0


def _expected_choice(pool: AddressPool, now: float) -> str | None:
    """The documented choice, found the slow way: among the free addresses whose cooldown is
    over (not leaving), the lowest ready bucket (ENI rank, block rank), then the one released
    longest ago, then the lowest address."""
    candidates = []
    for address, slot in pool.slots.items():
        eni_state = pool.enis[slot.eni_id]
        block = eni_state.blocks[slot.block]
        if slot.state.value != "free" or eni_state.leaving or block.leaving:
            continue
        if slot.cooling and slot.ready_at > now:
            continue
        candidates.append((block.bucket_key, slot.released_at, int(ip_address(address)), address))
    return min(candidates)[3] if candidates else None


@pytest.mark.parametrize("seed", range(6))
def test_every_choice_is_the_documented_one_under_churn(seed: int) -> None:
    """Random churn over two ENIs of /28 prefixes and secondary IPs, with release times that
    tie, run out of order and cool one by one (the one-step path of a large pool) or in
    groups: each address handed out is the one the documented order picks."""
    import random

    from ipamcore.model import ObservedEni

    rng = random.Random(seed)
    pool = AddressPool(cooldown_s=5.0, secondary_ips_last=True)
    for n in range(2):
        info = ObservedEni(eni_id=f"eni-{n}", mac=f"02:00:00:00:00:0{n}", device_index=n,
                           subnet_id="subnet-a", subnet_cidr="10.0.0.0/16",
                           primary_ip=f"10.0.255.{n}", is_primary=n == 0)  # fmt: skip
        pool.add_eni(info, 0.0, excluded=False)
        for p in range(3):
            pool.add_block(f"eni-{n}", f"10.0.{n}.{p * 16}/28", True, 0.0)
        pool.add_block(f"eni-{n}", f"10.0.{n}.200", False, 0.0)
    live: list[AllocationKey] = []
    now, made = 0.0, 0
    for _ in range(3000):
        now += rng.choice((0.0, 0.0, 0.01, 0.3, 1.0, 2.5))
        if live and (rng.random() < 0.45 or len(live) > 90):
            pool.release(live.pop(rng.randrange(len(live)) if rng.random() < 0.3 else 0), now)
            continue
        expected = _expected_choice(pool, now)
        made += 1
        k = AllocationKey("net", f"c{made}", "eth0")
        if expected is None:
            with pytest.raises(PoolExhausted):
                pool.assign(k, pod(made), now)
            continue
        assert pool.assign(k, pod(made), now).address == expected
        live.append(k)
    assert pool.assigned == len(live)
