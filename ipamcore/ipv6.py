"""IPv6 addresses from the /80 prefixes delegated to the node's ENIs (upstream's IPv6 mode:
one prefix on the primary ENI, ``AssignIpv6Addresses`` with ``Ipv6PrefixCount=1``).

A /80 holds 2**48 addresses, so an address is never handed out twice in a prefix's life:
each pod gets the next offset (restores move the counter past every restored address), and
a released address needs no cooldown. Pure and synchronous, like the rest of the core.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import attrs

from ipamcore.effects import AssignAddresses, Effect
from ipamcore.model import Allocation, ObservedEni
from ipamcore.netspec import EGRESS_V4_SLOTS, egress_v4_slot
from ipamcore.views import AddressView, BlockView


@attrs.frozen
class V6Stats:
    """The IPv6 figures of a node: prefixes held, addresses in them, addresses assigned."""

    prefixes: int = 0
    total: int = 0
    assigned: int = 0


class V6Prefixes:
    """The IPv6 prefixes of each managed ENI, and the next offset to hand out in each."""

    def __init__(self) -> None:
        self.prefixes: dict[str, tuple[str, ...]] = {}
        self.devices: dict[str, int] = {}
        self._next: dict[str, int] = {}
        self._rank: dict[str, tuple[int, int]] = {}
        # The egress IPv4 slots (netspec.egress_v4_slot) of the live addresses: an address
        # whose slot is held is skipped, so no two live pods share a node-local IPv4.
        self._slots: set[int] = set()
        self._nets: dict[str, tuple[int, int]] = {}
        self.assigned = 0
        # Addresses assigned on network cards above 0 (multi-NIC pods' extra interfaces)
        self._above_0: dict[str, int] = {}

    def observe(self, info: ObservedEni) -> None:
        """An ENI as the cloud shows it: its IPv6 prefixes are added to those known (one
        assigned by this node is kept even if a snapshot taken before it lacks it)."""
        if info.is_trunk or info.is_efa or info.unmanaged:
            return
        known = self.prefixes.get(info.eni_id, ())
        self.prefixes[info.eni_id] = known + tuple(p for p in info.ipv6_prefixes if p not in known)
        self.devices[info.eni_id] = info.device_index
        self._rank[info.eni_id] = (info.network_card, info.device_index)

    def forget(self, eni_id: str) -> None:
        """The ENI is gone from the instance."""
        for mapping in (self.prefixes, self.devices, self._rank):
            mapping.pop(eni_id, None)

    def add(self, eni_id: str, prefixes: tuple[str, ...]) -> None:
        """Prefixes assigned to ``eni_id`` (an ``AssignIpv6Addresses`` answer)."""
        known = self.prefixes.get(eni_id, ())
        self.prefixes[eni_id] = known + tuple(p for p in prefixes if p not in known)

    def first(self, network_card: int = 0) -> tuple[str, str] | None:
        """(ENI, prefix) pods take addresses from on ``network_card``: the lowest device's
        first prefix (with ENABLE_MULTI_NIC, each card above 0 has its own ENI and /80)."""
        for eni_id in sorted(self.prefixes, key=lambda e: self._rank.get(e, (0, 0))):
            if self.prefixes[eni_id] and self.card_of(eni_id) == network_card:
                return eni_id, self.prefixes[eni_id][0]
        return None

    def card_of(self, eni_id: str) -> int:
        """The network card of ``eni_id`` as last observed (0 if unknown)."""
        return self._rank.get(eni_id, (0, 0))[0]

    def take(self, prefix: str, network_card: int = 0) -> str:
        """The next address of ``prefix`` (offset 0, the subnet-router anycast, is skipped),
        on ``network_card`` (whose ENI holds the prefix)."""
        base, size = self._net(prefix)
        offset = self._next.get(prefix, 1)
        # At most one try per egress slot: with every slot held (more live IPv6 pods than
        # the /22 has addresses, far above any max-pods) the next address is taken as is.
        # The slot is netspec.egress_v4_slot's, on the integer (no parse of a string).
        for _ in range(EGRESS_V4_SLOTS):
            if offset >= size:
                offset = 1  # 2**48 addresses later: start over
            value = base + offset
            offset += 1
            if value % EGRESS_V4_SLOTS not in self._slots:
                break
        address = str(ipaddress.IPv6Address(value))
        self._next[prefix] = offset
        self._slots.add(value % EGRESS_V4_SLOTS)
        self.assigned += 1
        if network_card:
            self._above_0[address] = network_card
        return address

    def _net(self, prefix: str) -> tuple[int, int]:
        """(first address as an integer, number of addresses) of ``prefix``, parsed once."""
        net = self._nets.get(prefix)
        if net is None:
            parsed = ipaddress.IPv6Network(prefix, strict=False)
            net = self._nets[prefix] = (int(parsed.network_address), parsed.num_addresses)
        return net

    def released(self, address: str) -> None:
        """``address`` went back (it is not reused while its prefix's counter moves on)."""
        self._slots.discard(egress_v4_slot(address))
        self.assigned = max(0, self.assigned - 1)
        if self._above_0:
            self._above_0.pop(address, None)

    def locate(self, address: str) -> tuple[str, int] | None:
        """(ENI, device index) of the prefix holding ``address``, counting it as assigned
        and moving the prefix's counter past it (restore); None if no prefix holds it."""
        try:
            ip = ipaddress.IPv6Address(address)
        except ValueError:
            return None
        for eni_id, prefixes in self.prefixes.items():
            for prefix in prefixes:
                net = ipaddress.IPv6Network(prefix, strict=False)
                if ip in net:
                    offset = int(ip) - int(net.network_address)
                    self._next[prefix] = max(self._next.get(prefix, 1), offset + 1)
                    self._slots.add(egress_v4_slot(address))
                    self.assigned += 1
                    if self.card_of(eni_id):
                        self._above_0[address] = self.card_of(eni_id)
                    return eni_id, self.devices.get(eni_id, 0)
        return None

    def stats(self, network_card: int | None = None) -> V6Stats:
        """Prefixes, their addresses and those assigned: the node's, or one card's."""
        nets = [
            ipaddress.IPv6Network(p, strict=False)
            for eni_id, ps in self.prefixes.items()
            for p in ps
            if network_card is None or self.card_of(eni_id) == network_card
        ]
        assigned = self.assigned
        if network_card is not None:
            above = sum(1 for card in self._above_0.values() if card == network_card)
            assigned = above if network_card else assigned - len(self._above_0)
        return V6Stats(len(nets), sum(n.num_addresses for n in nets), assigned)

    def prefix_effect(
        self, primary: ObservedEni | None, in_flight: Iterable[Effect]
    ) -> AssignAddresses | None:
        """Upstream's IPv6 mode: a /80 for the primary ENI while no ENI has a prefix and
        none is on its way (effect id 0: the caller numbers it)."""
        if primary is None or self.first() is not None:
            return None
        if any(
            isinstance(e, AssignAddresses) and e.ipv6_prefix_count and e.eni_id == primary.eni_id
            for e in in_flight
        ):
            return None
        return AssignAddresses(effect_id=0, eni_id=primary.eni_id, ipv6_prefix_count=1)

    def blocks(self, allocations: Iterable[Allocation]) -> dict[str, tuple[BlockView, ...]]:
        """Each ENI's prefixes with the addresses assigned in them (no cooldown in IPv6)."""
        nets = {
            p: ipaddress.IPv6Network(p, strict=False) for ps in self.prefixes.values() for p in ps
        }
        held: dict[str, list[AddressView]] = {p: [] for p in nets}
        for a in allocations:
            if a.ipv6 is None:
                continue
            ip = ipaddress.IPv6Address(a.ipv6)
            for prefix, net in nets.items():
                if ip in net:
                    view = AddressView(a.ipv6, "assigned", a.key, a.pod, a.allocated_at, None)
                    held[prefix].append(view)
        return {
            eni_id: tuple(BlockView(p, True, tuple(held[p])) for p in prefixes)
            for eni_id, prefixes in self.prefixes.items()
        }
