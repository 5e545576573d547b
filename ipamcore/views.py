"""Read-only views of the pool, for introspection, metrics and the command line."""

from __future__ import annotations

import attrs

from ipamcore.model import AllocationKey, PodRef


@attrs.frozen
class PoolStats:
    """Pool figures at one moment (addresses unless named otherwise)."""

    enis: int
    max_enis: int
    total: int
    assigned: int
    cooling: int
    available: int
    leaving: int
    prefixes: int
    pending: int
    in_flight: int
    max_pods: int
    max_addresses: int


@attrs.frozen
class AddressView:
    """One address of an ENI as introspection shows it."""

    address: str
    state: str  # "assigned" | "cooling" | "free" | "leaving"
    key: AllocationKey | None = None
    pod: PodRef | None = None
    assigned_at: float | None = None
    released_at: float | None = None


@attrs.frozen
class BlockView:
    """One block (a /32 or a /28 prefix) of an ENI, with its addresses."""

    block_id: str
    is_prefix: bool
    addresses: tuple[AddressView, ...]


@attrs.frozen
class EniView:
    """One ENI of the pool as introspection shows it."""

    eni_id: str
    mac: str
    device_index: int
    network_card: int
    subnet_id: str
    subnet_cidr: str
    primary_ip: str
    is_primary: bool
    is_trunk: bool
    is_efa: bool
    unmanaged: bool
    excluded: bool
    leaving: bool
    blocks: tuple[BlockView, ...]
    # IPv6 (single or dual stack): the ENI's /80 prefixes, each with its assigned addresses
    ipv6_blocks: tuple[BlockView, ...] = ()

    @property
    def total(self) -> int:
        """Addresses on the ENI."""
        return sum(len(b.addresses) for b in self.blocks)

    @property
    def assigned(self) -> int:
        """Addresses on the ENI assigned to pods."""
        return sum(1 for b in self.blocks for a in b.addresses if a.state == "assigned")
