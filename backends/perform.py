"""Performing the core's effects against a CloudPort: the one mapping from effect to cloud
calls to outcome, shared by the daemon and the simulator so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping

from ipamcore.effects import AssignAddresses, CreateEni, Effect, FreeEni, UnassignAddresses
from ipamcore.errors import CloudError, FailureKind
from ipamcore.events import (
    AddressesAssigned,
    AddressesUnassigned,
    EffectFailed,
    EniCreated,
    EniFreed,
    Outcome,
)
from ipamcore.ports import CloudPort


def perform(
    cloud: CloudPort,
    instance_id: str,
    effect: Effect,
    tags: Mapping[str, str] | None = None,
) -> Outcome:
    """Carry out ``effect`` (blocking) and report what the cloud really did.

    A :class:`CloudError` becomes ``EffectFailed`` with its kind; any other exception from a
    backend becomes ``EffectFailed(OTHER)`` so the core always gets its outcome.
    """
    eid = effect.effect_id
    try:
        if isinstance(effect, CreateEni):
            return EniCreated(eid, cloud.create_eni(instance_id, effect, dict(tags or {})))
        if isinstance(effect, AssignAddresses):
            if effect.ipv6_prefix_count:
                got = cloud.assign_ipv6_prefixes(effect.eni_id, effect.ipv6_prefix_count)
                return AddressesAssigned(eid, effect.eni_id, ipv6_prefixes=tuple(got))
            if effect.prefix_count:
                got = cloud.assign_prefixes(effect.eni_id, effect.prefix_count)
                return AddressesAssigned(eid, effect.eni_id, prefixes=tuple(got))
            got = cloud.assign_ipv4(effect.eni_id, effect.ipv4_count)
            return AddressesAssigned(eid, effect.eni_id, ipv4_addresses=tuple(got))
        if isinstance(effect, UnassignAddresses):
            if effect.ipv4_addresses:
                cloud.unassign_ipv4(effect.eni_id, effect.ipv4_addresses)
            if effect.prefixes:
                cloud.unassign_prefixes(effect.eni_id, effect.prefixes)
            return AddressesUnassigned(eid)
        if isinstance(effect, FreeEni):
            cloud.free_eni(effect.eni_id)
            return EniFreed(eid)
    except CloudError as exc:
        return EffectFailed(eid, exc.kind, exc.message)
    except Exception as exc:  # a backend bug must not leave the effect in flight forever
        return EffectFailed(eid, FailureKind.OTHER, f"{type(exc).__name__}: {exc}")
    return EffectFailed(eid, FailureKind.OTHER, f"unknown effect {effect!r}")
