"""The address pool: ENIs, their address blocks, and which address each pod holds.

How an address is chosen (deterministic, documented, O(log n)):

* Ready addresses sit in buckets, one per ENI's secondary IPs or per /28 prefix, each ordered
  by ``(released_at, address)``; the lowest bucket with an address is kept apart (``_top``)
  above a heap of the other buckets' keys (one int encoding
  ``(network card, device index, block rank)``).
  The ENI rank is ``(network card, device index)``: pods are packed onto the lowest ENIs so
  the highest ENIs drain and can be given back. Within an ENI, secondary IPs share block rank
  0 and /28 prefixes are ranked in the order they were added, so whole prefixes drain too.
* Among equal candidates the address released longest ago wins (never used counts as
  released at minus infinity), so a just-released address is the last to be reused.
* A released address first waits in a second queue ordered by the time its cooldown ends; it
  is not counted as available while cooling (upstream counts it, so pods wait: #1700, #2896).

How it is stored, and why: the pool may hold tens of thousands of addresses, and at that size
the cost of an assign+release pair is set by how many cold cache lines and garbage-collected
objects it touches, not by the number of steps. So an address is a slot number, and its state
is one record in flat arrays (a tag packing the slot's generation and state, the address as an
int, the release time and allocation time as floats; the ENI, address string, and the key and
pod of its allocation as references); the ready time is the release time plus the one
cooldown. The pool keeps no Allocation object: it makes one from the record when asked.
Queue entries are single ints, ``tag << 24 | slot``, kept in flat arrays (no object per
entry), and a pair allocates no container object of the pool's own. A slot takes its next
generation whenever it becomes free or starts cooling, and any state change alters the tag,
so older entries for it are stale: removal is O(1) and stale entries are dropped when they
reach a queue's head. The pool maps an allocation key straight to its slot, so a pair hashes
the key three times and probes no other dictionary. :class:`Slot`, :attr:`AddressPool.slots`
and :attr:`AddressPool.allocations` are views over that storage.
"""

from __future__ import annotations

import array
import heapq
import ipaddress
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ipamcore.errors import PoolExhausted, UsageError
from ipamcore.inventory import (
    NEVER,
    Block,
    EniState,
    EntryFifo,
    ReadyBucket,
    SlotState,
    bucket_key,
    prefix_addresses,
)
from ipamcore.model import IPS_PER_PREFIX, Allocation, AllocationKey, ObservedEni, PodRef

# A slot's tag is ``generation << 2 | state``; a queue entry is ``tag << _SHIFT | slot``,
# valid while the slot's tag is still the one it was made with. Generations count per slot,
# so an entry fits a signed 64-bit word for 2**37 state changes of one slot.
_FREE = 0  # ready (or leaving with its ENI)
_COOLING = 1  # free, waiting for its cooldown to end
_ASSIGNED = 2
_LEAVING = 3  # its block is being given back
_STATE = 3  # tag & _STATE is the state

_SHIFT = 24
_MASK = (1 << _SHIFT) - 1  # at most 2**24 slot numbers

# A slot's record sits at ``slot << _RECORD`` in two arrays, so that touching a slot touches
# about two cache lines, not one per column: four machine words in ``_num`` (the tag and the
# address as an int, then, read as floats through ``_time``, the release time and the time
# of the allocation) and four references in ``_ref`` (the ENI, the address string, and the
# key and pod of the allocation holding it, if any). The block is in ``_block``: a release
# does not need it.
_RECORD = 2  # a record is 1 << _RECORD entries long
_TAG, _IP, _RELEASED, _ALLOCATED = 0, 1, 2, 3  # in _num / _time
_ENI, _ADDRESS, _KEY, _POD = 0, 1, 2, 3  # in _ref


_LAST_CARD = 1 << 12  # added to the network card of buckets ranked after every real one

_STATES = (SlotState.FREE, SlotState.FREE, SlotState.ASSIGNED, SlotState.LEAVING)


def _float_view(words: array.array[int]) -> memoryview[float]:
    """The same memory as float64 words: a slot record's release time is kept as one."""
    return memoryview(words).cast("B").cast("d")


class Slot:
    """A read-only view of one address of the pool, valid until the pool next changes."""

    __slots__ = ("_pool", "index")

    def __init__(self, pool: AddressPool, index: int) -> None:
        self._pool = pool
        self.index = index

    @property
    def address(self) -> str:
        """The address this slot holds."""
        address: str = self._pool._ref[self.index << _RECORD | _ADDRESS]
        return address

    @property
    def block(self) -> str:
        """The block id: the address itself for a secondary IP, the /28 for a prefix."""
        return self._owner.block_id

    @property
    def eni_id(self) -> str:
        """The ENI the address is on."""
        return self._owner.eni.eni_id

    @property
    def state(self) -> SlotState:
        """Free, assigned or leaving (a free slot may be cooling)."""
        return _STATES[self._pool._num[self.index << _RECORD | _TAG] & _STATE]

    @property
    def cooling(self) -> bool:
        """Whether the address is in its cooldown after a release."""
        return self._pool._num[self.index << _RECORD | _TAG] & _STATE == _COOLING

    @property
    def released_at(self) -> float:
        """When the address was last released (``-inf`` if never)."""
        return self._pool._time[self.index << _RECORD | _RELEASED]

    @property
    def ready_at(self) -> float:
        """When the address may be handed out again: release time plus cooldown."""
        return self.released_at + self._pool.cooldown_s

    @property
    def key(self) -> AllocationKey | None:
        """The allocation holding the address, or None."""
        key: AllocationKey | None = self._pool._ref[self.index << _RECORD | _KEY]
        return key

    @property
    def _owner(self) -> Block:
        return self._pool._block[self.index]

    def __repr__(self) -> str:
        return f"Slot({self.address!r}, {self.state.value}, cooling={self.cooling})"


class SlotsView(Mapping[str, Slot]):
    """Address -> :class:`Slot`, for every address on the pool's ENIs."""

    def __init__(self, pool: AddressPool) -> None:
        self._pool = pool

    def __getitem__(self, address: str) -> Slot:
        return Slot(self._pool, self._pool._index[address])

    def __contains__(self, address: object) -> bool:
        return address in self._pool._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._pool._index)

    def __len__(self) -> int:
        return len(self._pool._index)


class AllocationsView(Mapping[AllocationKey, Allocation]):
    """Allocation key -> :class:`Allocation`, those holding a slot and those recorded with
    :meth:`AddressPool.record_allocation` alike. Only the latter can be deleted here: a slot's
    allocation leaves through :meth:`AddressPool.release` (or its block's removal)."""

    def __init__(self, pool: AddressPool) -> None:
        self._pool = pool

    def get(self, key: AllocationKey, default: Allocation | None = None) -> Allocation | None:  # type: ignore[override]
        """The allocation of ``key``, including one whose address is gone, else ``default``."""
        pool = self._pool
        index = pool._slot_of.get(key)
        if index is not None:
            return pool._allocation(index)
        return pool._slotless.get(key, default)

    def __getitem__(self, key: AllocationKey) -> Allocation:
        allocation = self.get(key)
        if allocation is None:
            raise KeyError(key)
        return allocation

    def __contains__(self, key: object) -> bool:
        return key in self._pool._slot_of or key in self._pool._slotless

    def __delitem__(self, key: AllocationKey) -> None:
        if key in self._pool._slot_of:
            raise UsageError(f"{key} holds a pool address: release it instead")
        del self._pool._slotless[key]

    def __iter__(self) -> Iterator[AllocationKey]:
        yield from self._pool._slot_of
        yield from self._pool._slotless

    def __len__(self) -> int:
        return len(self._pool._slot_of) + len(self._pool._slotless)


class AddressPool:
    """ENIs, blocks, slots and allocations, with counters kept up to date on every change.

    Ready addresses live in buckets of at most one ENI's or one prefix's size. The lowest
    non-empty bucket is held apart from the heap of the others' keys: a slot that ends its
    cooldown in a bucket below all others, and is assigned next (the usual case when pods are
    packed low), comes and goes without a heap operation; when it is the only slot to end its
    cooldown, it is taken without being queued at all (:meth:`_take_cooled`), so a large
    pool's pair costs what a small pool's does. An assignment touches the top bucket only, so
    its cost does not grow with the pool.
    """

    def __init__(self, cooldown_s: float, secondary_ips_last: bool = False) -> None:
        self.cooldown_s = cooldown_s
        # Prefix mode: an ENI's secondary IPs (left from before prefix delegation) are handed
        # out only when no prefix address is ready, after every prefix of every ENI.
        self.secondary_ips_last = secondary_ips_last
        self.enis: dict[str, EniState] = {}
        # Per slot number, a record of what a Slot object would hold (see _RECORD). A removed
        # slot keeps its block and address until the number is reused.
        self._num: array.array[int] = array.array("q")  # tag: generation << 2 | state
        self._time = _float_view(self._num)
        self._ref: list[Any] = []  # EniState, address, AllocationKey | None, PodRef | None
        self._block: list[Block] = []  # per slot number
        self._unused: list[int] = []  # slot numbers of removed blocks, for reuse
        self._index: dict[str, int] = {}  # address -> slot number
        self._slot_of: dict[AllocationKey, int] = {}  # the pool's one per-pair dictionary
        # Allocations holding no pool address: IPv6 ones, and the caller's records (orphans).
        self._slotless: dict[AllocationKey, Allocation] = {}
        self._buckets: dict[int, ReadyBucket] = {}
        self._top: ReadyBucket | None = None  # the lowest queued bucket
        self._ready: list[int] = []  # heap of the keys of the other queued buckets
        # Cooldown is one constant, so addresses released in time order end their cooldown in
        # that order: a FIFO of entries. Out-of-order release times (from a restored
        # checkpoint) go to a small heap of (ready_at, entry) instead.
        self._cooling = EntryFifo()
        self._cooling_last = NEVER  # ready_at of the FIFO's last entry
        self._cooling_late: list[tuple[float, int]] = []
        self.slots = SlotsView(self)
        self.allocations = AllocationsView(self)
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
        """Addresses in the pool less those leaving."""
        return self.total - self.leaving

    def prefix_total(self) -> int:
        """/28 prefixes on all ENIs."""
        return sum(e.prefix_count() for e in self.enis.values())

    def free_prefixes(self) -> int:
        """Prefixes with no assigned or cooling address, not leaving."""
        return sum(
            1
            for e in self.enis.values()
            for b in e.blocks.values()
            if b.is_prefix and b.busy == 0 and not b.leaving
        )

    # ------------------------------------------------------------ time / queues
    def _push_ready(self, index: int) -> None:
        """Queue a free slot in its ready bucket (with its next generation)."""
        at = index << _RECORD
        self._num[at] = tag = (self._num[at] | _STATE) + 1  # at | _TAG; state _FREE
        released, ip = self._time[at | _RELEASED], self._num[at | _IP]
        bucket = self._block[index].bucket
        last = bucket.last_released
        fifo = bucket.fifo.items
        if not fifo or last < released or (last == released and bucket.last_ip < ip):
            fifo.append(tag << _SHIFT | index)
            bucket.last_released, bucket.last_ip = released, ip
        else:
            heapq.heappush(bucket.heap, (released, ip, tag << _SHIFT | index))
        if not bucket.queued:
            ready = self._ready
            if self._top is None and not (ready and ready[0] < bucket.key):
                # The usual case in a large pool: a slot just out of its cooldown, in an empty
                # bucket below all others (pods are packed low), taken by the next assign.
                bucket.queued = True
                self._top = bucket
            else:
                self._queue(bucket)

    def _queue(self, bucket: ReadyBucket) -> None:
        bucket.queued = True
        top, ready = self._top, self._ready
        if top is None:
            if ready and ready[0] < bucket.key:
                self._top = self._buckets[heapq.heapreplace(ready, bucket.key)]
            else:
                self._top = bucket
        elif bucket.key < top.key:
            heapq.heappush(ready, top.key)
            self._top = bucket
        else:
            heapq.heappush(ready, bucket.key)

    def advance(self, now: float) -> None:
        """Move addresses whose cooldown has ended into their ready buckets."""
        cooling, late, num = self._cooling, self._cooling_late, self._num
        cooldown, time, items = self.cooldown_s, self._time, self._cooling.items
        while items:
            entry = items[cooling.head]  # (cooling.first(), inline: it runs twice a pair)
            index = entry & _MASK
            at = index << _RECORD
            if num[at] != entry >> _SHIFT:  # at | _TAG
                cooling.popleft()  # re-assigned, re-released or removed since
                continue
            if time[at | _RELEASED] + cooldown > now:
                break
            cooling.popleft()
            num[at] ^= _COOLING  # (self._end_cooling(index), inline: once a pair)
            block = self._block[index]
            self.cooling -= 1
            block.eni.cooling -= 1
            block.busy -= 1
            self._push_ready(index)
        while late and late[0][0] <= now:
            entry = heapq.heappop(late)[1]
            index = entry & _MASK
            if num[index << _RECORD] == entry >> _SHIFT:
                self._end_cooling(index)
                self._push_ready(index)

    def _cooling_entries(self) -> Iterator[tuple[float, int]]:
        """``(ready_at, slot)`` of the slots cooling now, FIFO first (not in time order
        across the two queues)."""
        num, time, cooldown = self._num, self._time, self.cooldown_s
        items = self._cooling.items
        for position in range(self._cooling.head, len(items)):
            entry = items[position]
            index = entry & _MASK
            if num[index << _RECORD] == entry >> _SHIFT:
                yield time[index << _RECORD | _RELEASED] + cooldown, index
        for ready_at, entry in self._cooling_late:
            index = entry & _MASK
            if num[index << _RECORD] == entry >> _SHIFT:
                yield ready_at, index

    def cooled_by(self, now: float) -> int:
        """Cooling slots whose cooldown is over by ``now`` (a query: :meth:`advance` moves
        them)."""
        count = 0
        for ready_at, _ in self._cooling_entries():
            if ready_at <= now:
                count += 1
            elif not self._cooling_late:
                break  # the FIFO alone is in time order
        return count

    def next_ready_at(self) -> float:
        """When the next cooling slot ends its cooldown (inf when none is cooling)."""
        first = math.inf
        for ready_at, _ in self._cooling_entries():
            first = min(first, ready_at)
            if not self._cooling_late:
                break
        return first

    def _end_cooling(self, index: int) -> None:
        at = index << _RECORD
        self._num[at] ^= _COOLING  # -> _FREE, same generation
        block = self._block[index]
        self.cooling -= 1
        block.eni.cooling -= 1
        block.busy -= 1

    def is_cooling(self, slot: Slot) -> bool:
        """Whether ``slot``'s address is in its cooldown."""
        return slot.cooling

    # ------------------------------------------------------------ ENIs, blocks
    def add_eni(self, info: ObservedEni, now: float, excluded: bool) -> EniState:
        """Add an observed ENI (no addresses yet); UsageError if the pool holds it already."""
        if info.eni_id in self.enis:
            raise UsageError(f"ENI {info.eni_id} is already in the pool")
        eni = EniState(info=info, seen_at=now, excluded=excluded)
        self.enis[info.eni_id] = eni
        return eni

    def _bucket(self, key: int) -> ReadyBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = ReadyBucket(key)
        bucket.retired = False  # the key may be in use again (an ENI re-attached)
        return bucket

    def _new_slots(self, owner: Block) -> tuple[int, ...]:
        """Slot numbers for a new block's addresses (reused ones first), with records."""
        addresses = owner.addresses
        reused = min(len(self._unused), len(addresses))
        fresh = len(addresses) - reused
        if fresh:  # the float view must be let go while the words array grows
            first = len(self._num) >> _RECORD
            if first + fresh > _MASK + 1:
                raise UsageError(f"the pool holds at most {_MASK + 1} addresses")
            self._time.release()
            self._num.extend([_LEAVING, 0, 0, 0] * fresh)  # made free by _push_ready
            self._time = _float_view(self._num)
            self._ref.extend([None] * (fresh << _RECORD))
            self._block.extend([owner] * fresh)
        indexes = [self._unused.pop() for _ in range(reused)]
        if fresh:
            indexes.extend(range(first, first + fresh))
        num, time, ref = self._num, self._time, self._ref
        for index, address in zip(indexes, addresses, strict=True):
            at = index << _RECORD
            num[at | _IP] = int(ipaddress.ip_address(address))
            time[at | _RELEASED] = NEVER
            ref[at : at + (1 << _RECORD)] = (owner.eni, address, None, None)
            self._block[index] = owner
            self._index[address] = index
        return tuple(indexes)

    def add_block(self, eni_id: str, block_id: str, is_prefix: bool, now: float) -> bool:
        """Add a secondary IP or a /28 prefix to an ENI; False if it is already there or
        one of its addresses is already in the pool (on another ENI)."""
        eni = self.enis[eni_id]
        if eni.excluded or block_id in eni.blocks:
            return False
        addresses = prefix_addresses(block_id) if is_prefix else (block_id,)
        if any(a in self._index for a in addresses):
            return False
        rank = eni.next_block_rank if is_prefix else 0
        if is_prefix:
            eni.next_block_rank += 1
        bucket = self._bucket(
            bucket_key(*eni.rank, rank) if is_prefix else self._secondary_bucket_key(eni)
        )
        block = eni.blocks[block_id] = Block(
            block_id, is_prefix, rank, now, addresses, eni, bucket, ()
        )
        block.slots = self._new_slots(block)
        eni.slots += len(addresses)
        self.total += len(addresses)
        if eni.leaving:
            self.leaving += len(addresses)
        for index in block.slots:
            self._push_ready(index)
        return True

    def remove_block(self, eni_id: str, block_id: str) -> list[Allocation]:
        """Drop a block (gone from the cloud or given back); returns allocations it carried."""
        eni = self.enis[eni_id]
        block = eni.blocks.pop(block_id)
        if block.is_prefix:
            self._retire_bucket(block.bucket)
        removed: list[Allocation] = []
        num, ref = self._num, self._ref
        for index in block.slots:
            at = index << _RECORD
            state = num[at] & _STATE
            allocation = self._allocation(index) if ref[at | _KEY] is not None else None
            eni.slots -= 1
            self.total -= 1
            if state == _ASSIGNED and allocation is not None:
                removed.append(allocation)
                del self._slot_of[allocation.key]
                eni.assigned -= 1
                self.assigned -= 1
            elif state == _LEAVING or eni.leaving:
                self.leaving -= 1
            elif state == _COOLING:
                self.cooling -= 1
                eni.cooling -= 1
            del self._index[ref[at | _ADDRESS]]
            num[at] |= _LEAVING  # every queued entry for it is now stale
            ref[at | _KEY] = ref[at | _POD] = None
            self._unused.append(index)
        return removed

    def remove_eni(self, eni_id: str) -> list[Allocation]:
        """Remove an ENI and its addresses; the allocations that were on it."""
        eni = self.enis[eni_id]
        removed: list[Allocation] = []
        for block_id in list(eni.blocks):
            removed.extend(self.remove_block(eni_id, block_id))
        bucket = self._buckets.get(self._secondary_bucket_key(eni))
        if bucket is not None:
            self._retire_bucket(bucket)
        del self.enis[eni_id]
        return removed

    def _secondary_bucket_key(self, eni: EniState) -> int:
        card, device = eni.rank
        if self.secondary_ips_last:
            card += _LAST_CARD
        return bucket_key(card, device, 0)

    def _retire_bucket(self, bucket: ReadyBucket) -> None:
        if self._buckets.get(bucket.key) is not bucket:
            return
        if bucket.queued:
            bucket.retired = True
        else:
            del self._buckets[bucket.key]

    # --------------------------------------------------------- assign / release
    def assign(self, key: AllocationKey, pod: PodRef, now: float) -> Allocation:
        """Give ``key`` an address; the same address again if it already has one."""
        index = self._slot_of.get(key)
        if index is not None:
            return self._allocation(index)
        if self._slotless and key in self._slotless:
            return self._slotless[key]
        if self._top is None:
            index = self._take_cooled(now)
            if index >= 0:
                return self._bind(index, key, pod, now)
        self.advance(now)
        num = self._num
        while True:
            bucket = self._top
            if bucket is None:
                if not self._ready:
                    break
                bucket = self._top = self._buckets[heapq.heappop(self._ready)]
            fifo, heap = bucket.fifo, bucket.heap
            while fifo.items or heap:
                if not heap:
                    entry = fifo.popleft()
                elif not fifo.items:
                    entry = heapq.heappop(heap)[2]
                else:  # the smaller head, once stale FIFO heads are dropped
                    entry = fifo.first()
                    at = (entry & _MASK) << _RECORD
                    if num[at] != entry >> _SHIFT:
                        fifo.popleft()
                        continue
                    if heap[0] < (self._time[at | _RELEASED], num[at | _IP], entry):
                        entry = heapq.heappop(heap)[2]
                    else:
                        fifo.popleft()
                index = entry & _MASK
                if num[index << _RECORD] != entry >> _SHIFT:
                    continue  # assigned, re-queued, leaving or removed since
                if self._ref[index << _RECORD].leaving:  # | _ENI
                    continue
                if not fifo.items and not heap:  # (_dequeue, inline: once a pair in a large pool)
                    self._top = None
                    bucket.queued = False
                    if bucket.retired:
                        self._dequeue(bucket)
                return self._bind(index, key, pod, now)
            self._dequeue(bucket)
        raise PoolExhausted("no address is ready (all assigned, cooling or being added)")

    def _take_cooled(self, now: float) -> int:
        """The usual case in a large pool, in one step: the one slot whose cooldown has ended
        since the last call is alone in its bucket, below every queued bucket, so it is the
        slot :meth:`assign` would take; it is made ready and taken without being queued (the
        pool ends as if :meth:`advance` had queued it and :meth:`assign` had taken it). -1
        when the case does not hold (the general path decides); call with no top bucket."""
        cooling = self._cooling
        items = cooling.items
        if not items:
            return -1
        head = cooling.head
        entry = items[head]
        index = entry & _MASK
        at = index << _RECORD
        num, time, cooldown = self._num, self._time, self.cooldown_s
        if num[at] != entry >> _SHIFT or time[at | _RELEASED] + cooldown > now:
            return -1  # a stale head, or no cooldown over
        if head + 1 < len(items):  # the next one must still be cooling (and current)
            after = items[head + 1]
            after_at = (after & _MASK) << _RECORD
            if num[after_at] != after >> _SHIFT or time[after_at | _RELEASED] + cooldown <= now:
                return -1
        late = self._cooling_late
        if late and late[0][0] <= now:
            return -1
        bucket = self._block[index].bucket
        ready = self._ready
        if bucket.queued or (ready and ready[0] < bucket.key) or self._ref[at].leaving:
            return -1  # (a bucket not queued is empty)
        cooling.popleft()
        self._end_cooling(index)
        num[at] = (num[at] | _STATE) + 1  # its next generation, free: _bind assigns it
        return index

    def _dequeue(self, bucket: ReadyBucket) -> None:
        """Take the top bucket, now empty, out of the search."""
        self._top = None
        bucket.queued = False  # kept while its block lives: buckets are not churned per pair
        if bucket.retired and self._buckets.get(bucket.key) is bucket:
            del self._buckets[bucket.key]

    def _bind(self, index: int, key: AllocationKey, pod: PodRef, now: float) -> Allocation:
        """Give a free slot to ``key`` (its queue entries go stale with the state change)."""
        at = index << _RECORD
        self._num[at] |= _ASSIGNED
        self._time[at | _ALLOCATED] = now
        ref = self._ref
        ref[at | _KEY], ref[at | _POD] = key, pod
        eni = ref[at]  # at | _ENI
        eni.assigned += 1
        self._block[index].busy += 1
        self.assigned += 1
        self._slot_of[key] = index
        info = eni.info
        return Allocation(key, pod, ref[at | _ADDRESS], None, now, info.eni_id, info.device_index)

    def _allocation(self, index: int) -> Allocation:
        """The allocation an assigned slot holds (made on demand: the pool keeps its parts)."""
        at = index << _RECORD
        ref = self._ref
        info = ref[at].info  # at | _ENI
        return Allocation(
            ref[at | _KEY], ref[at | _POD], ref[at | _ADDRESS], None,
            self._time[at | _ALLOCATED], info.eni_id, info.device_index,
        )  # fmt: skip

    def bind_address(self, allocation: Allocation) -> Allocation | None:
        """Re-bind a restored allocation to its address; None if the address is not in the
        pool or already taken."""
        if allocation.ipv4 is None or allocation.key in self.allocations:
            return None
        index = self._index.get(allocation.ipv4)
        if index is None:
            return None
        state = self._num[index << _RECORD] & _STATE
        if state not in (_FREE, _COOLING) or self._ref[index << _RECORD].leaving:  # | _ENI
            return None
        if state == _COOLING:
            self._end_cooling(index)
        return self._bind(index, allocation.key, allocation.pod, allocation.allocated_at)

    def release(self, key: AllocationKey, now: float) -> Allocation | None:
        """Take an address back; it cools down before anyone gets it again (an IPv6
        allocation, which holds no pool address, is just dropped)."""
        index = self._slot_of.pop(key, None)
        if index is None:
            return self._slotless.pop(key, None) if self._slotless else None
        allocation = self._allocation(index)
        at = index << _RECORD
        ref = self._ref
        ref[at | _KEY] = ref[at | _POD] = None
        ref[at].assigned -= 1  # at | _ENI
        self.assigned -= 1
        if not self._start_cooling(index, now, now):
            self._block[index].busy -= 1  # (a cooling slot is busy too)
        return allocation

    def mark_released(self, slot: Slot, released_at: float, now: float) -> None:
        """Put a free slot into cooldown that started at ``released_at``."""
        index = slot.index
        if slot.cooling:
            self._end_cooling(index)
        if self._start_cooling(index, released_at, now):
            self._block[index].busy += 1

    def _start_cooling(self, index: int, released_at: float, now: float) -> bool:
        """Cool a slot down from ``released_at``, or make it ready if that is over: True if
        it is cooling (the caller counts it in its block's ``busy``)."""
        at = index << _RECORD
        self._time[at | _RELEASED] = released_at
        ready_at = released_at + self.cooldown_s
        if ready_at <= now:
            self._push_ready(index)
            return False
        self._num[at] = tag = (self._num[at] | _STATE) + 1 + _COOLING  # next generation
        self.cooling += 1
        self._ref[at].cooling += 1  # at | _ENI
        if not self._cooling.items or self._cooling_last <= ready_at:
            self._cooling.items.append(tag << _SHIFT | index)
            self._cooling_last = ready_at
        else:
            heapq.heappush(self._cooling_late, (ready_at, tag << _SHIFT | index))
        return True

    def record_allocation(self, allocation: Allocation) -> None:
        """Record an allocation that holds no pool address (IPv6, or one the caller keeps
        on record while its address is off the pool)."""
        self._slotless[allocation.key] = allocation

    def find_by_pod(self, namespace: str, name: str) -> list[Allocation]:
        """A pod's allocations: a scan, for inspection (the hot path keeps no pod index)."""
        pod = PodRef(namespace, name)
        return sorted(
            (a for a in self.allocations.values() if a.pod == pod), key=lambda a: str(a.key)
        )

    # -------------------------------------------------------- leaving (shrink)
    def mark_block_leaving(self, eni_id: str, block_id: str) -> None:
        """Mark an idle block as being unassigned: no longer handed out."""
        block = self.enis[eni_id].blocks[block_id]
        if block.leaving:
            return
        if block.busy:
            raise UsageError(f"block {block_id} still has assigned or cooling addresses")
        block.leaving = True
        num = self._num
        for index in block.slots:
            num[index << _RECORD] |= _LEAVING
            self.leaving += 1

    def unmark_block_leaving(self, eni_id: str, block_id: str) -> None:
        """Undo :meth:`mark_block_leaving` (the unassign failed); no-op if gone."""
        eni = self.enis.get(eni_id)
        block = eni.blocks.get(block_id) if eni else None
        if eni is None or block is None or not block.leaving:
            return
        block.leaving = False
        for index in block.slots:
            self.leaving -= 1
            self._push_ready(index)

    def mark_eni_leaving(self, eni_id: str) -> None:
        """Mark an idle ENI as being freed: its addresses are no longer handed out."""
        eni = self.enis[eni_id]
        if eni.assigned or eni.cooling:
            raise UsageError(f"ENI {eni_id} still has assigned or cooling addresses")
        eni.leaving = True
        self.leaving += eni.slots

    def unmark_eni_leaving(self, eni_id: str) -> None:
        """Undo :meth:`mark_eni_leaving` (the free failed); no-op if gone."""
        eni = self.enis.get(eni_id)
        if eni is None or not eni.leaving:
            return
        eni.leaving = False
        self.leaving -= eni.slots
        for block in eni.blocks.values():
            for index in block.slots:
                if self._num[index << _RECORD] & _STATE == _FREE:
                    self._push_ready(index)

    # ------------------------------------------------------------ inspection
    def released_time(self, address: str) -> float | None:
        """The release time :meth:`released_times` holds for ``address``: None when it is
        not in this pool, is assigned or leaving, or was never released. O(1)."""
        index = self._index.get(address)
        if index is None:
            return None
        at = index << _RECORD
        released = self._time[at | _RELEASED]
        if self._num[at] & _STATE in (_FREE, _COOLING) and released > NEVER:
            return released
        return None

    def released_times(self) -> Iterable[tuple[str, float]]:
        """``(address, release time)`` of every free or cooling address ever released."""
        num, time = self._num, self._time
        for address, index in self._index.items():
            at = index << _RECORD
            released = time[at | _RELEASED]
            if num[at] & _STATE in (_FREE, _COOLING) and released > NEVER:
                yield address, released


__all__ = ["IPS_PER_PREFIX", "AddressPool", "Slot"]
