"""Instance networking limits: the upstream table (1,391 types) and the max-pods formula.

The table ships as package data (``ipamcore/data/instance-limits.json``, converted from
upstream's ``pkg/vpc/vpc_ip_resource_limit.go`` at v1.23.1). Reading it is the one thing
this module does besides arithmetic; it happens once, lazily, through importlib.resources.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from typing import Any

import attrs

from ipamcore.errors import ConfigError, UnknownInstanceType
from ipamcore.model import IPS_PER_PREFIX


def _whole(name: str, least: int) -> Any:
    def check(_inst: object, _attr: object, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"must be an int, got {type(value).__name__} {value!r}")
        if value < least:
            raise ConfigError(name, f"must be {least} or more, got {value}")

    return check

# Upstream caps max pods at 110 for instances with under 30 vCPUs and 250 otherwise; that cap
# belongs to the kubelet's configuration, so the figures here are the uncapped formula.


@attrs.frozen
class InstanceLimits:
    """What one instance type allows the CNI to use."""

    instance_type: str
    max_enis: int = attrs.field(validator=_whole("max_enis", 1))
    # primary address included: 2 or more, or an ENI would have no address for pods
    ipv4_per_eni: int = attrs.field(validator=_whole("ipv4_per_eni", 2))
    hypervisor: str = "nitro"
    is_bare_metal: bool = False
    default_network_card_index: int = 0
    network_cards: tuple[tuple[int, int], ...] = ((0, 0),)  # (index, max ENIs)

    @property
    def ips_per_eni(self) -> int:
        """Secondary IPs per ENI (the primary address is not handed to pods)."""
        return self.ipv4_per_eni - 1

    @property
    def prefixes_per_eni(self) -> int:
        """/28 prefixes an ENI can hold (one slot is the ENI's primary address)."""
        return self.ipv4_per_eni - 1

    @property
    def supports_prefix_delegation(self) -> bool:
        """Whether EC2 delegates prefixes to this type (Nitro or bare metal)."""
        return self.hypervisor == "nitro" or self.is_bare_metal

    @property
    def max_pods(self) -> int:
        """Upstream's max-pods figure with secondary addresses."""
        return max_pods(self.max_enis, self.ipv4_per_eni)

    @property
    def max_pods_prefix_delegation(self) -> int:
        """Upstream's max-pods figure with prefix delegation."""
        return max_pods(self.max_enis, self.ipv4_per_eni, prefix_delegation=True)


def max_pods(max_enis: int, ipv4_per_eni: int, prefix_delegation: bool = False) -> int:
    """ENIs x (IPv4 per ENI - 1) + 2; with prefixes each slot is a /28 of 16 addresses."""
    slots = max_enis * (ipv4_per_eni - 1)
    if prefix_delegation:
        slots *= IPS_PER_PREFIX
    return slots + 2


def _from_json(instance_type: str, raw: dict[str, Any]) -> InstanceLimits:
    return InstanceLimits(
        instance_type=instance_type,
        max_enis=int(raw["max_enis"]),
        ipv4_per_eni=int(raw["ipv4_per_eni"]),
        hypervisor=str(raw.get("hypervisor", "unknown")),
        is_bare_metal=bool(raw.get("is_bare_metal", False)),
        default_network_card_index=int(raw.get("default_network_card_index", 0)),
        network_cards=tuple(
            (int(c["network_card_index"]), int(c["max_enis"])) for c in raw.get("network_cards", [])
        ),
    )


@functools.cache
def _table() -> dict[str, InstanceLimits]:
    text = importlib.resources.files("ipamcore").joinpath("data/instance-limits.json").read_text()
    raw: dict[str, dict[str, Any]] = json.loads(text)
    return {name: _from_json(name, entry) for name, entry in raw.items()}


def known_instance_types() -> list[str]:
    """Every instance type in the shipped table, sorted."""
    return sorted(_table())


def limits_for(instance_type: str) -> InstanceLimits:
    """Limits of a known type; :class:`UnknownInstanceType` otherwise."""
    try:
        return _table()[instance_type]
    except KeyError:
        raise UnknownInstanceType(instance_type) from None
