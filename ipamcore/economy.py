"""Address economy of one node, from the pool's views: what it holds by ENI and subnet, how
fragmented its /28 prefixes are, what repacking would free, and its share of each subnet.

Pure functions of :class:`~ipamcore.views.EniView` lists (and EC2's subnet descriptions):
metrics, introspection and ``ipamctl`` compute the same figures from the same views.

States of an address (as the views name them): ``assigned`` to a pod, ``free`` (called
*available* here: ready for the next pod), ``cooling`` (released less than
``IP_COOLDOWN_PERIOD`` ago, not handed out yet), ``leaving`` (being given back to EC2).
Excluded and unmanaged ENIs are left out, as the pool leaves them out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import attrs

from ipamcore.model import IPS_PER_PREFIX, Subnet
from ipamcore.views import EniView

STATES = ("assigned", "available", "cooling", "leaving")
EC2_RESERVED_PER_SUBNET = 5  # the network address, the router, DNS, one reserved, broadcast
SPARSE_SHARE = 0.25  # a prefix with at most a quarter of its addresses in use is "sparse"
PREFIX_USES = ("empty", "sparse", "partial", "full")


@attrs.frozen
class EniCounts:
    """Addresses one ENI holds for pods, by state (``held`` = all of them)."""

    eni_id: str
    subnet_id: str
    subnet_cidr: str
    assigned: int
    available: int
    cooling: int
    leaving: int
    prefixes: int
    primary_ip: str = ""

    @property
    def held(self) -> int:
        """Addresses this ENI holds, whatever their state."""
        return self.assigned + self.available + self.cooling + self.leaving

    def by_state(self) -> dict[str, int]:
        """The counts by state name (the metrics' ``state`` label)."""
        return {
            "assigned": self.assigned, "available": self.available,
            "cooling": self.cooling, "leaving": self.leaving,
        }  # fmt: skip


@attrs.frozen
class SubnetCounts:
    """What this node holds in one subnet (all its ENIs there)."""

    subnet_id: str
    subnet_cidr: str
    enis: int
    assigned: int
    available: int
    cooling: int
    leaving: int
    prefixes: int

    @property
    def held(self) -> int:
        """Addresses the node holds in this subnet, whatever their state."""
        return self.assigned + self.available + self.cooling + self.leaving

    @property
    def taken_from_subnet(self) -> int:
        """Subnet addresses the node's ENIs take: pod addresses plus each ENI's primary."""
        return self.held + self.enis


def _managed(views: Iterable[EniView]) -> list[EniView]:
    return [v for v in views if not v.excluded and not v.unmanaged]


def eni_counts(views: Sequence[EniView]) -> list[EniCounts]:
    """Address counts by ENI (managed ENIs, in the views' order)."""
    out = []
    for v in _managed(views):
        tally = dict.fromkeys(("assigned", "free", "cooling", "leaving"), 0)
        for block in v.blocks:
            for a in block.addresses:
                state = "leaving" if v.leaving else a.state
                tally[state] = tally.get(state, 0) + 1
        out.append(EniCounts(
            eni_id=v.eni_id, subnet_id=v.subnet_id, subnet_cidr=v.subnet_cidr,
            assigned=tally["assigned"], available=tally["free"], cooling=tally["cooling"],
            leaving=tally["leaving"], prefixes=sum(1 for b in v.blocks if b.is_prefix),
            primary_ip=v.primary_ip,
        ))  # fmt: skip
    return out


def subnet_counts(views: Sequence[EniView]) -> list[SubnetCounts]:
    """Address counts by subnet (sorted by subnet id)."""
    acc: dict[str, list[EniCounts]] = {}
    for c in eni_counts(views):
        acc.setdefault(c.subnet_id, []).append(c)
    return [
        SubnetCounts(
            subnet_id=sid, subnet_cidr=cs[0].subnet_cidr, enis=len(cs),
            assigned=sum(c.assigned for c in cs), available=sum(c.available for c in cs),
            cooling=sum(c.cooling for c in cs), leaving=sum(c.leaving for c in cs),
            prefixes=sum(c.prefixes for c in cs),
        )
        for sid, cs in sorted(acc.items())
    ]  # fmt: skip


# ------------------------------------------------------------------ fragmentation
@attrs.frozen
class PrefixUse:
    """One /28 prefix: its ENI, subnet and how many of its addresses pods hold."""

    prefix: str
    eni_id: str
    subnet_id: str
    assigned: int
    cooling: int

    @property
    def use(self) -> str:
        """empty, sparse (at most a share of its addresses assigned), partial or full."""
        if self.assigned == 0:
            return "empty"
        if self.assigned >= IPS_PER_PREFIX:
            return "full"
        if self.assigned <= IPS_PER_PREFIX * SPARSE_SHARE:
            return "sparse"
        return "partial"


@attrs.frozen
class Fragmentation:
    """How the node's prefixes in one subnet are used, and what repacking would free.

    Repacking = moving the pods of the least used prefixes (restarting them) onto the free
    addresses of the others, so whole prefixes empty and can go back to the subnet as /28
    blocks. ``freeable`` counts the prefixes that would empty beyond those already empty:
    ``prefixes - ceil(assigned / 16) - empty``; ``drain`` lists the prefixes to empty (the
    least used first) with ``pods_to_move`` pods on them. It is a recommendation only: this
    project never moves a pod.
    """

    subnet_id: str
    prefixes: int
    assigned: int
    by_use: dict[str, int]
    freeable: int
    pods_to_move: int
    drain: tuple[PrefixUse, ...]

    @property
    def needed(self) -> int:
        """Prefixes the assigned addresses would need if packed."""
        return -(-self.assigned // IPS_PER_PREFIX)

    @property
    def addresses_freed(self) -> int:
        """Addresses repacking would give back (the freeable and the empty prefixes)."""
        return (self.freeable + self.by_use["empty"]) * IPS_PER_PREFIX


def prefix_uses(views: Sequence[EniView]) -> list[PrefixUse]:
    """Every /28 prefix of the managed ENIs."""
    out = []
    for v in _managed(views):
        for b in v.blocks:
            if not b.is_prefix:
                continue
            out.append(PrefixUse(
                prefix=b.block_id, eni_id=v.eni_id, subnet_id=v.subnet_id,
                assigned=sum(1 for a in b.addresses if a.state == "assigned"),
                cooling=sum(1 for a in b.addresses if a.state == "cooling"),
            ))  # fmt: skip
    return out


def fragmentation(views: Sequence[EniView]) -> list[Fragmentation]:
    """Prefix use and the repacking plan, by subnet (prefixes share a subnet's pool, so pods
    may move between ENIs of the same subnet). Empty for a node without prefixes."""
    by_subnet: dict[str, list[PrefixUse]] = {}
    for p in prefix_uses(views):
        by_subnet.setdefault(p.subnet_id, []).append(p)
    out = []
    for sid, prefixes in sorted(by_subnet.items()):
        assigned = sum(p.assigned for p in prefixes)
        counts = dict.fromkeys(PREFIX_USES, 0)
        for p in prefixes:
            counts[p.use] += 1
        needed = -(-assigned // IPS_PER_PREFIX)
        used = [p for p in prefixes if p.assigned > 0]
        freeable = max(len(used) - needed, 0)
        drain = tuple(sorted(used, key=lambda p: (p.assigned, p.prefix))[:freeable])
        out.append(Fragmentation(
            subnet_id=sid, prefixes=len(prefixes), assigned=assigned, by_use=counts,
            freeable=freeable, pods_to_move=sum(p.assigned for p in drain), drain=drain,
        ))  # fmt: skip
    return out


# ------------------------------------------------------------------ subnets
@attrs.frozen
class SubnetUse:
    """A subnet as EC2 describes it, and this node's part of it."""

    subnet_id: str
    cidr: str
    availability_zone: str
    usable: int  # addresses EC2 can hand out: the CIDR's size minus the 5 it reserves
    available: int  # EC2's AvailableIpAddressCount
    free_prefixes_at_most: int  # /28 blocks that could still be free (EC2 gives no layout)
    node_taken: int  # addresses this node's ENIs take there (primaries included)
    node_idle: int  # of which available or cooling: what the node keeps from the others
    described_at: float | None  # when EC2 was asked (None: never)

    @property
    def used(self) -> int:
        """Usable addresses of the subnet that are taken (by any node or anyone else)."""
        return self.usable - self.available

    @property
    def node_share_of_used(self) -> float:
        """The part of the subnet's taken addresses that this node holds (0 to 1)."""
        return self.node_taken / self.used if self.used > 0 else 0.0


def usable_addresses(cidr: str) -> int:
    """Addresses EC2 can hand out in a subnet: its size minus the five it reserves."""
    net = ipaddress.ip_network(cidr, strict=False)
    return max(net.num_addresses - EC2_RESERVED_PER_SUBNET, 0)


def free_prefixes_at_most(cidr: str, available: int) -> int:
    """An upper bound of the free, aligned /28 blocks: no more than the available addresses
    allow, and not the first or the last /28 (EC2 reserves addresses in both)."""
    net = ipaddress.ip_network(cidr, strict=False)
    blocks = max(net.num_addresses // IPS_PER_PREFIX - 2, 0) if net.prefixlen <= 28 else 0
    return min(available // IPS_PER_PREFIX, blocks)


def subnet_uses(
    subnets: Sequence[Subnet],
    views: Sequence[EniView],
    described_at: dict[str, float] | None = None,
) -> list[SubnetUse]:
    """The node's subnets (those EC2 described, and those its ENIs are in) and its share."""
    counts = {c.subnet_id: c for c in subnet_counts(views)}
    described = {s.subnet_id: s for s in subnets}
    when = described_at or {}
    out = []
    for sid in sorted(set(described) | set(counts)):
        s = described.get(sid)
        c = counts.get(sid)
        cidr = s.cidr if s is not None else (c.subnet_cidr if c is not None else "")
        if not cidr:
            continue
        usable = usable_addresses(cidr)
        available = s.free_addresses if s is not None else 0
        out.append(SubnetUse(
            subnet_id=sid, cidr=cidr, availability_zone=s.availability_zone if s else "",
            usable=usable, available=available,
            free_prefixes_at_most=free_prefixes_at_most(cidr, available),
            node_taken=c.taken_from_subnet if c else 0,
            node_idle=(c.available + c.cooling) if c else 0,
            described_at=when.get(sid) if s is not None else None,
        ))  # fmt: skip
    return out
