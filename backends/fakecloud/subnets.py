"""One subnet's address space: free addresses and free aligned /28 blocks, as EC2 keeps them.

EC2 reserves the first four addresses and the last one of every subnet. Addresses are unique
across the subnet whatever ENI holds them. A /28 prefix must be aligned and entirely free, so a
subnet with many free addresses scattered over every block has no prefix to give
(``InsufficientCidrBlocks``): that fragmentation is what this module models and moto does not.

Addresses are offsets from the network address. Free addresses and free blocks live in heaps
with lazy deletion (an entry is checked against the live ``used`` set when popped), so taking
and releasing cost O(log n) and the lowest free address always goes first (deterministic).
"""

from __future__ import annotations

import heapq
import ipaddress

from backends.fakecloud.addresses import int_to_ip, invalid
from ipamcore.errors import CloudError, FailureKind
from ipamcore.model import IPS_PER_PREFIX, Subnet

RESERVED_HEAD = 4  # network address, VPC router, DNS, future use
BLOCK_SHIFT = 4  # a /28 is 16 addresses


def subnet_full(message: str, code: str = "InsufficientFreeAddressesInSubnet") -> CloudError:
    return CloudError(FailureKind.SUBNET_FULL, message, code=code)


class SubnetState:
    """Mutable state of one subnet (ids, tags, address allocation)."""

    def __init__(
        self,
        subnet_id: str,
        cidr: str,
        availability_zone: str,
        tags: dict[str, str],
        ipv6_cidr: str = "",
    ) -> None:
        net = ipaddress.IPv4Network(cidr)
        if not 16 <= net.prefixlen <= 28:
            raise ValueError(f"EC2 subnets are /16 to /28, got {cidr}")
        self.subnet_id = subnet_id
        self.cidr = str(net)
        self.network = net
        self.availability_zone = availability_zone
        self.tags = dict(tags)
        self.base = int(net.network_address)
        self.size = net.num_addresses
        last = self.size - 1
        self._used: set[int] = {0, 1, 2, 3, last}
        self._free_heap: list[int] = list(range(RESERVED_HEAD, last))  # sorted, hence a heap
        self.free_count = len(self._free_heap)
        nblocks = self.size >> BLOCK_SHIFT
        self._block_used = [0] * nblocks
        for off in self._used:
            self._block_used[off >> BLOCK_SHIFT] += 1
        self._free_blocks = [b for b in range(nblocks) if self._block_used[b] == 0]
        self.free_block_count = len(self._free_blocks)
        self.ipv6_network = ipaddress.IPv6Network(ipv6_cidr) if ipv6_cidr else None
        self._ipv6_next = 1
        self._ipv6_free: list[int] = []

    # -- queries -------------------------------------------------------------------------

    def contains(self, address: int) -> bool:
        return 0 <= address - self.base < self.size

    def is_used(self, address: int) -> bool:
        return (address - self.base) in self._used

    def describe(self) -> Subnet:
        return Subnet(
            subnet_id=self.subnet_id,
            cidr=self.cidr,
            availability_zone=self.availability_zone,
            free_addresses=self.free_count,
            tags=tuple(sorted(self.tags.items())),
        )

    # -- single addresses ------------------------------------------------------------------

    def _mark(self, off: int) -> None:
        self._used.add(off)
        self.free_count -= 1
        block = off >> BLOCK_SHIFT
        if self._block_used[block] == 0:
            self.free_block_count -= 1
        self._block_used[block] += 1

    def _unmark(self, off: int) -> None:
        self._used.discard(off)
        self.free_count += 1
        heapq.heappush(self._free_heap, off)
        block = off >> BLOCK_SHIFT
        self._block_used[block] -= 1
        if self._block_used[block] == 0:
            self.free_block_count += 1
            heapq.heappush(self._free_blocks, block)

    def take_addresses(self, count: int) -> list[int]:
        """The ``count`` lowest free addresses, all or none (SUBNET_FULL)."""
        if count > self.free_count:
            raise subnet_full(
                f"{self.subnet_id} has {self.free_count} free addresses, {count} requested"
            )
        taken: list[int] = []
        heap, used = self._free_heap, self._used
        while len(taken) < count:
            off = heapq.heappop(heap)
            if off in used:
                continue  # stale entry: taken by a prefix or by address
            self._mark(off)
            taken.append(self.base + off)
        return taken

    def take_address(self, address: int) -> None:
        """Take one given address (a request naming it, or an out-of-band change)."""
        off = address - self.base
        if not 0 <= off < self.size:
            raise invalid(f"{int_to_ip(address)} is not in {self.cidr}")
        if off in self._used:
            raise CloudError(
                FailureKind.OTHER,
                f"{int_to_ip(address)} is already in use in {self.subnet_id}",
                code="InvalidIPAddress.InUse",
            )
        self._mark(off)

    def release_address(self, address: int) -> None:
        off = address - self.base
        if off in self._used and RESERVED_HEAD <= off < self.size - 1:
            self._unmark(off)

    # -- /28 prefixes ----------------------------------------------------------------------

    def take_prefixes(self, count: int) -> list[int]:
        """Network addresses of ``count`` aligned, fully free /28 blocks, all or none."""
        if count > self.free_block_count:
            raise subnet_full(
                f"{self.subnet_id} has {self.free_block_count} free /28 blocks "
                f"({self.free_count} free addresses), {count} requested",
                code="InsufficientCidrBlocks",
            )
        taken: list[int] = []
        heap, block_used = self._free_blocks, self._block_used
        while len(taken) < count:
            block = heapq.heappop(heap)
            if block_used[block] != 0:
                continue  # stale entry
            first = block << BLOCK_SHIFT
            for off in range(first, first + IPS_PER_PREFIX):
                self._mark(off)
            taken.append(self.base + first)
        return taken

    def take_prefix(self, network: int) -> None:
        """Take one given /28 (out-of-band changes)."""
        first = network - self.base
        if not 0 <= first < self.size or first & (IPS_PER_PREFIX - 1):
            raise invalid(f"{int_to_ip(network)}/28 is not an aligned block of {self.cidr}")
        if self._block_used[first >> BLOCK_SHIFT]:
            raise subnet_full(f"{int_to_ip(network)}/28 is not free", "InsufficientCidrBlocks")
        for off in range(first, first + IPS_PER_PREFIX):
            self._mark(off)

    def release_prefix(self, network: int) -> None:
        first = network - self.base
        for off in range(first, first + IPS_PER_PREFIX):
            self.release_address(self.base + off)

    # -- IPv6 /80 prefixes -----------------------------------------------------------------

    def take_ipv6_prefix(self) -> str:
        """The next free /80 of the subnet's IPv6 /64 (one per ENI in IPv6 mode)."""
        if self.ipv6_network is None:
            raise invalid(f"{self.subnet_id} has no IPv6 CIDR block")
        if self._ipv6_free:
            index = heapq.heappop(self._ipv6_free)
        else:
            index = self._ipv6_next
            self._ipv6_next += 1
        addr = int(self.ipv6_network.network_address) + (index << 48)
        return f"{ipaddress.IPv6Address(addr)}/80"

    def release_ipv6_prefix(self, prefix: str) -> None:
        if self.ipv6_network is None:
            return
        net = ipaddress.IPv6Network(prefix)
        index = (int(net.network_address) - int(self.ipv6_network.network_address)) >> 48
        heapq.heappush(self._ipv6_free, index)
