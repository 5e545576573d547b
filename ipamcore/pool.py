"""The address pool: ENIs, their address blocks, and which address each pod holds.

How an address is chosen (deterministic, documented, O(log n)):

* Ready addresses sit in buckets, one per ENI's secondary IPs or per /28 prefix, each a small
  heap ordered by ``(released_at, address)``; a heap of bucket keys (one int encoding
  ``(network card, device index, block rank)``) finds the lowest bucket with an address.
  The ENI rank is ``(network card, device index)``: pods are packed onto the lowest ENIs so
  the highest ENIs drain and can be given back. Within an ENI, secondary IPs share block rank
  0 and /28 prefixes are ranked in the order they were added, so whole prefixes drain too.
* Among equal candidates the address released longest ago wins (never used counts as
  released at minus infinity), so a just-released address is the last to be reused.
* A released address first waits in a second heap ordered by the time its cooldown ends; it is
  not counted as available while cooling (upstream counts it, so pods wait: #1700, #2896).

Entries hold the slot itself and are invalidated lazily with a generation number, so removal
is O(1) and every call is amortised O(log n): no scan over ENIs or addresses. The hot path
(assign, release) hashes the allocation key three times per pair and looks nothing else up in
a dictionary: at 65,536 addresses its cost stays close to that at 16.
"""

from __future__ import annotations

import collections
import enum
import heapq
import ipaddress
from collections.abc import Iterable, Iterator

import attrs

from ipamcore.errors import PoolExhausted, UsageError
from ipamcore.model import IPS_PER_PREFIX, Allocation, AllocationKey, ObservedEni, PodRef

NEVER = float("-inf")


class SlotState(enum.Enum):
    FREE = "free"  # ready, or cooling when ready_at > now
    ASSIGNED = "assigned"
    LEAVING = "leaving"  # an unassign or ENI free is in flight


@attrs.define(eq=False)
class Slot:
    """One assignable address."""

    address: str
    eni_id: str
    block: str  # the address itself for a secondary IP, the /28 for a prefix
    gen: int
    ip_int: int = 0
    eni: EniState | None = None  # direct references, so the hot path does no dict lookups
    owner: Block | None = None
    state: SlotState = SlotState.FREE
    released_at: float = NEVER
    ready_at: float = NEVER
    key: AllocationKey | None = None
    cooling: bool = False  # free, and still waiting in the cooling queue


@attrs.define(eq=False)
class Block:
    """A secondary IP (/32) or a /28 prefix on an ENI."""

    block_id: str
    is_prefix: bool
    rank: int
    acquired_at: float
    addresses: tuple[str, ...]
    busy: int = 0  # assigned or cooling slots
    leaving: bool = False
    bucket_key: int = 0  # bucket_key(network card, device index, rank)


@attrs.define(eq=False)
class EniState:
    """An ENI as the pool tracks it."""

    info: ObservedEni
    seen_at: float
    excluded: bool  # carries no pod addresses (unmanaged, trunk, EFA, custom-networking primary)
    blocks: dict[str, Block] = attrs.field(factory=dict)
    next_block_rank: int = 1
    slots: int = 0
    assigned: int = 0
    cooling: int = 0
    leaving: bool = False

    @property
    def eni_id(self) -> str:
        return self.info.eni_id

    @property
    def rank(self) -> tuple[int, int]:
        return (self.info.network_card, self.info.device_index)

    def ipv4_count(self) -> int:
        return sum(1 for b in self.blocks.values() if not b.is_prefix)

    def prefix_count(self) -> int:
        return sum(1 for b in self.blocks.values() if b.is_prefix)


def bucket_key(network_card: int, device_index: int, rank: int) -> int:
    """One int that orders like ``(network card, device index, block rank)``."""
    return (network_card << 48) | (device_index << 32) | rank


def _ip_int(address: str) -> int:
    return int(ipaddress.ip_address(address))


def prefix_addresses(prefix: str) -> tuple[str, ...]:
    net = ipaddress.ip_network(prefix, strict=False)
    return tuple(str(a) for a in net)


@attrs.define(eq=False)
class ReadyBucket:
    """Ready addresses of one packing rank (an ENI's secondary IPs, or one /28 prefix),
    ordered by ``(released_at, address)``.

    Addresses leave their cooldown in the order they were released, so they nearly always
    arrive in order: those go to a FIFO (O(1)); the few that do not (restored release times,
    equal release times in falling address order) go to a heap. The next address is the
    smaller of the two heads.
    """

    key: int  # bucket_key(network card, device index, block rank)
    fifo: collections.deque[tuple[float, int, int, Slot]] = attrs.field(
        factory=collections.deque
    )
    heap: list[tuple[float, int, int, Slot]] = attrs.field(factory=list)
    queued: bool = False  # its key is in the pool's heap of bucket keys
    retired: bool = False  # its block or ENI is gone: dropped once it leaves that heap

    def push(self, entry: tuple[float, int, int, Slot]) -> None:
        fifo = self.fifo
        if not fifo or fifo[-1] < entry:  # gen is unique: the slot is never compared
            fifo.append(entry)
        else:
            heapq.heappush(self.heap, entry)

    def pop(self) -> tuple[float, int, int, Slot]:
        heap, fifo = self.heap, self.fifo
        if heap and (not fifo or heap[0] < fifo[0]):
            return heapq.heappop(heap)
        return fifo.popleft()

    def __bool__(self) -> bool:
        return bool(self.fifo or self.heap)


class AddressPool:
    """ENIs, blocks, slots and allocations, with counters kept up to date on every change.

    Ready addresses live in buckets of at most one ENI's or one prefix's size; a heap of
    bucket keys finds the lowest non-empty bucket. An assignment touches the top bucket only,
    so its cost does not grow with the pool.
    """

    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self.enis: dict[str, EniState] = {}
        self.slots: dict[str, Slot] = {}
        self.allocations: dict[AllocationKey, Allocation] = {}
        self._buckets: dict[int, ReadyBucket] = {}
        self._ready: list[int] = []  # heap of the keys of buckets holding ready entries
        # Cooldown is one constant, so addresses released in time order end their cooldown in
        # that order: a FIFO. Out-of-order release times (from a restored checkpoint) go to a
        # small heap instead. Entries are (ready_at, gen, slot); gen is unique, so the slot
        # itself is never compared.
        self._cooling: collections.deque[tuple[float, int, Slot]] = collections.deque()
        self._cooling_late: list[tuple[float, int, Slot]] = []
        self._gen = 0
        self.total = 0  # slots on ENIs, leaving ones included
        self.assigned = 0
        self.cooling = 0
        self.leaving = 0

    # ----------------------------------------------------------------- counts
    @property
    def available(self) -> int:
        """Addresses a pod could get right now (cooling and leaving ones excluded)."""
        return self.total - self.leaving - self.assigned - self.cooling

    @property
    def usable_total(self) -> int:
        return self.total - self.leaving

    def prefix_total(self) -> int:
        return sum(e.prefix_count() for e in self.enis.values())

    def free_prefixes(self) -> int:
        return sum(
            1
            for e in self.enis.values()
            for b in e.blocks.values()
            if b.is_prefix and b.busy == 0 and not b.leaving
        )

    # ------------------------------------------------------------ time / heaps
    def _next_gen(self) -> int:
        self._gen += 1
        return self._gen

    def _push_ready(self, slot: Slot) -> None:
        owner = slot.owner
        assert slot.eni is not None and owner is not None
        self._gen += 1
        slot.gen = gen = self._gen
        key = owner.bucket_key
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = ReadyBucket(key)
        elif bucket.retired:
            bucket.retired = False  # the key is in use again (an ENI re-attached)
        bucket.push((slot.released_at, slot.ip_int, gen, slot))
        if not bucket.queued:
            bucket.queued = True
            heapq.heappush(self._ready, key)

    def advance(self, now: float) -> None:
        """Move addresses whose cooldown has ended into the ready heap."""
        cooling, late = self._cooling, self._cooling_late
        while (cooling and cooling[0][0] <= now) or (late and late[0][0] <= now):
            if cooling and cooling[0][0] <= now:
                _ready_at, gen, slot = cooling.popleft()
            else:
                _ready_at, gen, slot = heapq.heappop(late)
            if slot.gen != gen or not slot.cooling:
                continue  # re-assigned, re-released or removed since
            self._end_cooling(slot)
            self._push_ready(slot)

    def _end_cooling(self, slot: Slot) -> None:
        assert slot.eni is not None and slot.owner is not None
        slot.cooling = False
        self.cooling -= 1
        slot.eni.cooling -= 1
        slot.owner.busy -= 1

    def is_cooling(self, slot: Slot) -> bool:
        return slot.cooling

    # ------------------------------------------------------------ ENIs, blocks
    def add_eni(self, info: ObservedEni, now: float, excluded: bool) -> EniState:
        if info.eni_id in self.enis:
            raise UsageError(f"ENI {info.eni_id} is already in the pool")
        eni = EniState(info=info, seen_at=now, excluded=excluded)
        self.enis[info.eni_id] = eni
        return eni

    def add_block(self, eni_id: str, block_id: str, is_prefix: bool, now: float) -> bool:
        """Add a secondary IP or a /28 prefix to an ENI; False if it is already there or
        one of its addresses is already in the pool (on another ENI)."""
        eni = self.enis[eni_id]
        if eni.excluded or block_id in eni.blocks:
            return False
        addresses = prefix_addresses(block_id) if is_prefix else (block_id,)
        if any(a in self.slots for a in addresses):
            return False
        rank = eni.next_block_rank if is_prefix else 0
        if is_prefix:
            eni.next_block_rank += 1
        block_state = eni.blocks[block_id] = Block(
            block_id, is_prefix, rank, now, addresses, bucket_key=bucket_key(*eni.rank, rank)
        )
        for address in addresses:
            slot = Slot(address, eni_id, block_id, 0, _ip_int(address), eni, block_state)
            self.slots[address] = slot
            eni.slots += 1
            self.total += 1
            if eni.leaving:
                self.leaving += 1
            self._push_ready(slot)
        return True

    def remove_block(self, eni_id: str, block_id: str) -> list[Allocation]:
        """Drop a block (gone from the cloud or given back); returns allocations it carried."""
        eni = self.enis[eni_id]
        block = eni.blocks.pop(block_id)
        if block.is_prefix:
            self._retire_bucket(block.bucket_key)
        removed: list[Allocation] = []
        for address in block.addresses:
            slot = self.slots.pop(address)
            slot.gen = -1  # every queued entry for it is now stale
            eni.slots -= 1
            self.total -= 1
            if slot.state is SlotState.ASSIGNED and slot.key is not None:
                removed.append(self.allocations.pop(slot.key))
                eni.assigned -= 1
                self.assigned -= 1
            elif slot.state is SlotState.LEAVING or eni.leaving:
                self.leaving -= 1
            elif slot.cooling:
                slot.cooling = False
                self.cooling -= 1
                eni.cooling -= 1
        return removed

    def remove_eni(self, eni_id: str) -> list[Allocation]:
        eni = self.enis[eni_id]
        removed: list[Allocation] = []
        for block_id in list(eni.blocks):
            removed.extend(self.remove_block(eni_id, block_id))
        self._retire_bucket(bucket_key(*eni.rank, 0))
        del self.enis[eni_id]
        return removed

    def _retire_bucket(self, key: int) -> None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return
        if bucket.queued:
            bucket.retired = True
        else:
            del self._buckets[key]

    # --------------------------------------------------------- assign / release
    def assign(self, key: AllocationKey, pod: PodRef, now: float) -> Allocation:
        """Give ``key`` an address; the same address again if it already has one."""
        existing = self.allocations.get(key)
        if existing is not None:
            return existing
        self.advance(now)
        ready, buckets, free = self._ready, self._buckets, SlotState.FREE
        while ready:
            bucket = buckets[ready[0]]
            fifo, heap = bucket.fifo, bucket.heap
            while fifo or heap:
                if heap and (not fifo or heap[0] < fifo[0]):
                    _released, _ip, gen, slot = heapq.heappop(heap)
                else:
                    _released, _ip, gen, slot = fifo.popleft()
                if slot.gen != gen or slot.state is not free:
                    continue
                eni = slot.eni
                assert eni is not None
                if eni.leaving:
                    continue
                if not fifo and not heap:
                    self._dequeue(bucket)
                return self._bind(slot, eni, key, pod, now)
            self._dequeue(bucket)
        raise PoolExhausted("no address is ready (all assigned, cooling or being added)")

    def _dequeue(self, bucket: ReadyBucket) -> None:
        heapq.heappop(self._ready)
        bucket.queued = False  # kept while its block lives: buckets are not churned per pair
        if bucket.retired and self._buckets.get(bucket.key) is bucket:
            del self._buckets[bucket.key]

    def _bind(
        self, slot: Slot, eni: EniState, key: AllocationKey, pod: PodRef, now: float
    ) -> Allocation:
        slot.state = SlotState.ASSIGNED
        slot.key = key
        self._gen += 1
        slot.gen = self._gen
        eni.assigned += 1
        assert slot.owner is not None
        slot.owner.busy += 1
        self.assigned += 1
        self.allocations[key] = allocation = Allocation(
            key=key,
            pod=pod,
            ipv4=slot.address,
            ipv6=None,
            allocated_at=now,
            eni_id=eni.eni_id,
            device_index=eni.info.device_index,
        )
        return allocation

    def bind_address(self, allocation: Allocation) -> Allocation | None:
        """Re-bind a restored allocation to its address; None if the address is not in the
        pool or already taken."""
        if allocation.ipv4 is None or allocation.key in self.allocations:
            return None
        slot = self.slots.get(allocation.ipv4)
        if slot is None or slot.state is not SlotState.FREE:
            return None
        eni = self.enis[slot.eni_id]
        if eni.leaving:
            return None
        if slot.cooling:
            self._end_cooling(slot)
        bound = self._bind(slot, eni, allocation.key, allocation.pod, allocation.allocated_at)
        return bound

    def release(self, key: AllocationKey, now: float) -> Allocation | None:
        """Take an address back; it cools down before anyone gets it again (an IPv6
        allocation, which holds no pool address, is just dropped)."""
        allocation = self.allocations.pop(key, None)
        if allocation is None or allocation.ipv4 is None:
            return allocation
        slot = self.slots[allocation.ipv4]
        eni, block = slot.eni, slot.owner
        assert eni is not None and block is not None
        eni.assigned -= 1
        self.assigned -= 1
        block.busy -= 1
        self.mark_released(slot, now, now)
        return allocation

    def mark_released(self, slot: Slot, released_at: float, now: float) -> None:
        """Put a free slot into cooldown that started at ``released_at``."""
        if slot.cooling:
            self._end_cooling(slot)
        slot.state = SlotState.FREE
        slot.key = None
        slot.released_at = released_at
        slot.ready_at = ready_at = released_at + self.cooldown_s
        if ready_at > now:
            assert slot.eni is not None and slot.owner is not None
            self._gen += 1
            slot.gen = self._gen
            self.cooling += 1
            slot.eni.cooling += 1
            slot.owner.busy += 1
            slot.cooling = True
            entry = (ready_at, self._gen, slot)
            if not self._cooling or self._cooling[-1][0] <= slot.ready_at:
                self._cooling.append(entry)
            else:
                heapq.heappush(self._cooling_late, entry)
        else:
            self._push_ready(slot)

    def record_allocation(self, allocation: Allocation) -> None:
        """Record an allocation that holds no pool address (IPv6)."""
        self.allocations[allocation.key] = allocation

    def find_by_pod(self, namespace: str, name: str) -> list[Allocation]:
        """A pod's allocations: a scan, for inspection (the hot path keeps no pod index)."""
        pod = PodRef(namespace, name)
        return sorted(
            (a for a in self.allocations.values() if a.pod == pod), key=lambda a: str(a.key)
        )

    # -------------------------------------------------------- leaving (shrink)
    def ready_free_slots(self, eni: EniState, block: Block) -> Iterator[Slot]:
        for address in block.addresses:
            slot = self.slots[address]
            if slot.state is SlotState.FREE and not slot.cooling:
                yield slot

    def mark_block_leaving(self, eni_id: str, block_id: str) -> None:
        block = self.enis[eni_id].blocks[block_id]
        if block.busy:
            raise UsageError(f"block {block_id} still has assigned or cooling addresses")
        block.leaving = True
        for address in block.addresses:
            slot = self.slots[address]
            slot.state = SlotState.LEAVING
            slot.gen = self._next_gen()
            self.leaving += 1

    def unmark_block_leaving(self, eni_id: str, block_id: str) -> None:
        eni = self.enis.get(eni_id)
        block = eni.blocks.get(block_id) if eni else None
        if eni is None or block is None or not block.leaving:
            return
        block.leaving = False
        for address in block.addresses:
            slot = self.slots[address]
            slot.state = SlotState.FREE
            self.leaving -= 1
            self._push_ready(slot)

    def mark_eni_leaving(self, eni_id: str) -> None:
        eni = self.enis[eni_id]
        if eni.assigned or eni.cooling:
            raise UsageError(f"ENI {eni_id} still has assigned or cooling addresses")
        eni.leaving = True
        self.leaving += eni.slots

    def unmark_eni_leaving(self, eni_id: str) -> None:
        eni = self.enis.get(eni_id)
        if eni is None or not eni.leaving:
            return
        eni.leaving = False
        self.leaving -= eni.slots
        for block in eni.blocks.values():
            for slot in self.ready_free_slots(eni, block):
                self._push_ready(slot)

    # ------------------------------------------------------------ inspection
    def released_times(self) -> Iterable[tuple[str, float]]:
        for slot in self.slots.values():
            if slot.state is SlotState.FREE and slot.released_at > NEVER:
                yield slot.address, slot.released_at



__all__ = ["IPS_PER_PREFIX", "AddressPool", "Block", "EniState", "Slot", "SlotState"]
