"""Events: outcomes of effects, reported back by the shell.

A success carries what the cloud really returned (the core never assumes success); a
failure carries a :class:`ipamcore.errors.FailureKind`.
"""

from __future__ import annotations

import attrs

from ipamcore.errors import FailureKind
from ipamcore.model import ObservedEni


@attrs.frozen
class EniCreated:
    """``CreateEni`` succeeded: the ENI as attached, with the addresses it really got."""

    effect_id: int
    eni: ObservedEni


@attrs.frozen
class AddressesAssigned:
    """``AssignAddresses`` succeeded with these secondary IPs or prefixes (or IPv6 prefixes)."""

    effect_id: int
    eni_id: str
    ipv4_addresses: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    ipv6_prefixes: tuple[str, ...] = ()


@attrs.frozen
class AddressesUnassigned:
    """``UnassignAddresses`` succeeded."""

    effect_id: int


@attrs.frozen
class EniFreed:
    """``FreeEni`` succeeded: the ENI is detached and deleted."""

    effect_id: int


@attrs.frozen
class EffectFailed:
    """The effect failed. ``kind`` tells the policy how to react (back off, pause growth...)."""

    effect_id: int
    kind: FailureKind
    message: str = ""


Outcome = EniCreated | AddressesAssigned | AddressesUnassigned | EniFreed | EffectFailed
