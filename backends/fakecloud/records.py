"""Mutable records of the fake account: one ENI, one instance.

They are the fake's source of truth; callers only ever see frozen
:class:`ipamcore.model.ObservedEni` snapshots built by :meth:`EniState.observe`.
"""

from __future__ import annotations

from backends.fakecloud.addresses import int_to_ip
from backends.fakecloud.subnets import SubnetState
from ipamcore.cards import card_limits
from ipamcore.limits import InstanceLimits
from ipamcore.model import ObservedEni

AVAILABLE = "available"
IN_USE = "in-use"


class EniState:
    """One ENI. Address containers are insertion-ordered dicts (O(1) add/remove, stable order)."""

    def __init__(
        self,
        eni_id: str,
        mac: str,
        subnet: SubnetState,
        primary_ip: int,
        security_groups: tuple[str, ...],
        tags: dict[str, str],
        description: str,
        created_at: float,
        max_addresses: int,
        prefixes_supported: bool,
    ) -> None:
        self.eni_id = eni_id
        self.mac = mac
        self.subnet = subnet
        self.primary_ip = primary_ip
        self.security_groups = security_groups
        self.tags = tags
        self.description = description
        self.created_at = created_at
        self.max_addresses = max_addresses  # primary included, like InstanceLimits.ipv4_per_eni
        self.prefixes_supported = prefixes_supported
        self.ipv4: dict[int, None] = {}
        self.prefixes: dict[int, None] = {}
        self.ipv6_prefixes: list[str] = []
        self.instance_id: str | None = None
        self.device_index: int | None = None
        self.network_card = 0
        self.delete_on_termination = False
        self.is_primary = False
        # EC2's InterfaceType: "interface" (ENA), "efa", or "efa-only" (no IP address at all;
        # primary_ip is then -1)
        self.interface_type = "interface"

    @property
    def status(self) -> str:
        return IN_USE if self.instance_id is not None else AVAILABLE

    @property
    def free_slots(self) -> int:
        """Secondary IPs or /28 prefixes still assignable (each prefix takes one slot)."""
        return self.max_addresses - 1 - len(self.ipv4) - len(self.prefixes)

    def observe(self, with_tags: bool = True) -> ObservedEni:
        """A frozen snapshot; IMDS passes ``with_tags=False`` (metadata carries no tags)."""
        return ObservedEni(
            eni_id=self.eni_id,
            mac=self.mac,
            device_index=self.device_index if self.device_index is not None else -1,
            network_card=self.network_card,
            subnet_id=self.subnet.subnet_id,
            subnet_cidr=self.subnet.cidr,
            primary_ip=int_to_ip(self.primary_ip) if self.primary_ip >= 0 else "",
            ipv4_addresses=tuple(map(int_to_ip, self.ipv4)),
            ipv4_prefixes=tuple(f"{int_to_ip(p)}/28" for p in self.prefixes),
            ipv6_prefixes=tuple(self.ipv6_prefixes),
            is_primary=self.is_primary,
            is_efa=self.interface_type in ("efa", "efa-only"),
            is_efa_only=self.interface_type == "efa-only",
            tags=tuple(sorted(self.tags.items())) if with_tags else (),
            security_groups=self.security_groups,
        )


class InstanceState:
    """One instance: its type's limits, its AZ, and which ENI sits at which device index."""

    def __init__(
        self,
        instance_id: str,
        limits: InstanceLimits,
        availability_zone: str,
        subnet_id: str,
    ) -> None:
        self.instance_id = instance_id
        self.limits = limits
        self.availability_zone = availability_zone
        self.subnet_id = subnet_id
        self.devices: dict[tuple[int, int], str] = {}  # (network card, device index) -> ENI id
        self.primary_eni_id = ""
        self.primary_mac = ""
        self.terminated = False

    def lowest_free_device_index(self, network_card: int = 0, start: int = 0) -> int:
        """The lowest device index from ``start`` free on ``network_card`` (device indexes
        count per card)."""
        index = start
        while (network_card, index) in self.devices:
            index += 1
        return index

    def card_limit(self, network_card: int) -> int:
        """The ENI limit of ``network_card`` (0: the card does not exist on this type)."""
        return card_limits(self.limits).get(network_card, 0)
