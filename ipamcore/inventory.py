"""What the address pool holds, and in which order it hands it out: the ENIs and their
address blocks (:class:`EniState`, :class:`Block`), and the ready buckets and queues that
keep free addresses in packing order, lowest ENI and block first (:class:`ReadyBucket`,
:class:`EntryFifo`). :mod:`ipamcore.pool` explains the choice of address and the storage
these serve.
"""

from __future__ import annotations

import array
import enum
import ipaddress

import attrs

from ipamcore.model import ObservedEni

NEVER = float("-inf")


class SlotState(enum.Enum):
    """The state of one address slot in the pool."""

    FREE = "free"  # ready, or cooling when ready_at > now
    ASSIGNED = "assigned"
    LEAVING = "leaving"  # an unassign or ENI free is in flight


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
        """The ENI's id."""
        return self.info.eni_id

    @property
    def rank(self) -> tuple[int, int]:
        """``(network card, device index)``: lower ranks are filled first."""
        return (self.info.network_card, self.info.device_index)

    def ipv4_count(self) -> int:
        """Secondary /32 blocks on this ENI."""
        return sum(1 for b in self.blocks.values() if not b.is_prefix)

    def prefix_count(self) -> int:
        """/28 prefix blocks on this ENI."""
        return sum(1 for b in self.blocks.values() if b.is_prefix)

    def free_prefix_count(self) -> int:
        """Prefixes with no assigned or cooling address that are not leaving."""
        return sum(1 for b in self.blocks.values() if b.is_prefix and not b.busy and not b.leaving)


class EntryFifo:
    """Queue entries in arrival order, in one flat array read from ``head``.

    Unlike a deque of ints it holds no object per entry, so reading the head of a long queue
    touches no cold int object. The array is emptied whenever its last entry is taken, so
    ``items`` is empty exactly when the queue is, and compacted once half of it is taken.
    """

    __slots__ = ("head", "items")

    def __init__(self) -> None:
        self.items: array.array[int] = array.array("q")
        self.head = 0

    def __len__(self) -> int:
        return len(self.items) - self.head

    def first(self) -> int:
        """The oldest entry (the FIFO must not be empty)."""
        return self.items[self.head]

    def popleft(self) -> int:
        """Remove and return the oldest entry."""
        items, head = self.items, self.head
        entry = items[head]
        head += 1
        if head == len(items):
            del items[:]
            head = 0
        elif head >= 64 and head << 1 >= len(items):
            del items[:head]
            head = 0
        self.head = head
        return entry


@attrs.define(eq=False)
class ReadyBucket:
    """Ready slots of one packing rank (an ENI's secondary IPs, or one /28 prefix), ordered by
    ``(released_at, address)``.

    Addresses leave their cooldown in the order they were released, so they nearly always
    arrive in order: those go to a FIFO of entries (O(1)); the few that do not (restored
    release times, equal release times in falling address order) go to a heap of
    ``(released_at, address, entry)``. The next slot is the smaller of the two heads.
    """

    key: int  # bucket_key(network card, device index, block rank)
    fifo: EntryFifo = attrs.field(factory=EntryFifo)
    heap: list[tuple[float, int, int]] = attrs.field(factory=list)
    last_released: float = NEVER  # order of the FIFO's last entry
    last_ip: int = -1
    queued: bool = False  # it is the pool's top bucket or its key is in the heap below it
    retired: bool = False  # no live block uses it: dropped once it leaves that heap

    def __bool__(self) -> bool:
        return bool(self.fifo.items or self.heap)


@attrs.define(eq=False)
class Block:
    """A secondary IP (/32) or a /28 prefix on an ENI."""

    block_id: str
    is_prefix: bool
    rank: int
    acquired_at: float
    addresses: tuple[str, ...]
    eni: EniState
    bucket: ReadyBucket
    slots: tuple[int, ...]  # slot numbers, in address order
    busy: int = 0  # assigned or cooling slots
    leaving: bool = False

    @property
    def bucket_key(self) -> int:
        """The key of the ready bucket this block's free addresses are in."""
        return self.bucket.key


def bucket_key(network_card: int, device_index: int, rank: int) -> int:
    """One int that orders like ``(network card, device index, block rank)``."""
    return (network_card << 48) | (device_index << 32) | rank


def prefix_addresses(prefix: str) -> tuple[str, ...]:
    """Every address of ``prefix``, in order."""
    net = ipaddress.ip_network(prefix, strict=False)
    return tuple(str(a) for a in net)
