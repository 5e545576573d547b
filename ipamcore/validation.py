"""What the core accepts at its boundary: observed ENIs and outcomes are checked here, before
anything changes, so that :class:`ipamcore.ipam.Ipam` refuses bad input whole (a
:class:`DataError` for malformed data from outside, a :class:`UsageError` for an outcome that
cannot answer its effect) and never half-applies it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from ipamcore.effects import AssignAddresses, CreateEni, Effect, FreeEni, UnassignAddresses
from ipamcore.errors import DataError, FailureKind, UsageError
from ipamcore.events import (
    AddressesAssigned,
    AddressesUnassigned,
    EffectFailed,
    EniCreated,
    EniFreed,
    Outcome,
)
from ipamcore.model import ObservedEni
from ipamcore.pool import AddressPool


def check_outcome(effect: Effect, outcome: Outcome, pool: AddressPool) -> None:
    """Raise unless ``outcome`` can answer ``effect`` (nothing is changed here)."""
    answers = {
        EniCreated: CreateEni, AddressesAssigned: AssignAddresses,
        AddressesUnassigned: UnassignAddresses, EniFreed: FreeEni,
    }  # fmt: skip
    if not isinstance(outcome, EffectFailed) and answers[type(outcome)] is not type(effect):
        raise UsageError(f"outcome {type(outcome).__name__} does not answer {effect!r}")
    if isinstance(outcome, EffectFailed) and not isinstance(outcome.kind, FailureKind):
        raise UsageError(f"EffectFailed.kind must be a FailureKind, got {outcome.kind!r}")
    if isinstance(outcome, EniCreated):
        # (The ENI may be in the pool already: reconciliation can see a new ENI before
        # its CreateEni is answered. Its addresses are then merged.)
        check_observed((outcome.eni,), "EniCreated")
    elif isinstance(outcome, AddressesAssigned) and isinstance(effect, AssignAddresses):
        if outcome.eni_id != effect.eni_id:
            raise UsageError(
                f"AddressesAssigned for {outcome.eni_id} answers an effect on {effect.eni_id}"
            )
        if outcome.eni_id not in pool.enis:
            raise UsageError(f"AddressesAssigned: ENI {outcome.eni_id} is not in the pool")
        check_blocks(outcome.ipv4_addresses, outcome.prefixes, "AddressesAssigned")
        taken = [
            a for a in (*outcome.ipv4_addresses, *outcome.prefixes)
            if a in pool.slots or any(
                a in e.blocks for e in pool.enis.values()
            )
        ]  # fmt: skip
        if taken:
            raise DataError(f"AddressesAssigned: already in the pool: {taken[:3]}")


def check_observed(enis: Sequence[ObservedEni], what: str) -> None:
    """Observed ENIs must be well formed: unique ids, canonical IPv4 addresses and /28
    prefixes, IPv6 prefixes that parse, no address on two ENIs."""
    seen: set[str] = set()
    addresses: set[str] = set()
    for info in enis:
        if not isinstance(info, ObservedEni):
            raise UsageError(f"{what}: expected ObservedEni, got {type(info).__name__}")
        if not info.eni_id or info.eni_id in seen:
            raise DataError(f"{what}: ENI id {info.eni_id!r} is empty or given twice")
        seen.add(info.eni_id)
        check_blocks(info.ipv4_addresses, info.ipv4_prefixes, f"{what} {info.eni_id}")
        for prefix in info.ipv6_prefixes:
            try:
                ipaddress.IPv6Network(prefix, strict=False)
            except ValueError:
                raise DataError(
                    f"{what} {info.eni_id}: not an IPv6 prefix: {prefix[:60]!r}"
                ) from None
        for block in (*info.ipv4_addresses, *info.ipv4_prefixes):
            if block in addresses:
                raise DataError(f"{what}: {block} is on two ENIs")
            addresses.add(block)


def check_blocks(addresses: Sequence[str], prefixes: Sequence[str], what: str) -> None:
    """Secondary IPv4 addresses and /28 IPv4 prefixes, in canonical text, none twice."""
    for address in addresses:
        if _ipv4_value(address) is None:
            _refuse_address(address, what)
    for prefix in prefixes:
        text, _slash, length = prefix.partition("/") if isinstance(prefix, str) else ("", "", "")
        value = _ipv4_value(text)
        if value is None or length != "28" or value & 0xF:
            _refuse_prefix(prefix, what)
    blocks = (*addresses, *prefixes)
    if len(set(blocks)) != len(blocks):
        raise DataError(f"{what}: an address or prefix is given twice")


def _refuse_prefix(prefix: object, what: str) -> None:
    """The error for a prefix that is not a canonical IPv4 /28 (which of the two)."""
    try:
        ipaddress.IPv4Network(prefix)
    except (ValueError, TypeError):
        raise DataError(f"{what}: not an IPv4 /28 prefix: {str(prefix)[:60]!r}") from None
    raise DataError(f"{what}: not a canonical IPv4 /28 prefix: {prefix!r}")


def _ipv4_value(text: object) -> int | None:
    """The value of an IPv4 address in canonical dotted-quad text (what
    ``str(ipaddress.IPv4Address(...))`` writes: four decimal octets, no leading zero), else
    None. (Reconciliation checks every address of every ENI: ``ipaddress`` took a fifth of
    a simulation's time.)"""
    if not isinstance(text, str):
        return None
    octets = text.split(".")
    if len(octets) != 4:
        return None
    value = 0
    for octet in octets:
        number = _OCTETS.get(octet)
        if number is None:
            return None
        value = value << 8 | number
    return value


_OCTETS = {str(n): n for n in range(256)}  # the canonical text of each octet


def _refuse_address(address: object, what: str) -> None:
    """The error for a secondary address :func:`_ipv4_value` refused (which of the two)."""
    try:
        canonical = str(ipaddress.IPv4Address(address))
    except (ValueError, TypeError):
        raise DataError(f"{what}: not an IPv4 address: {str(address)[:60]!r}") from None
    raise DataError(f"{what}: {address!r} is not in canonical form ({canonical})")
