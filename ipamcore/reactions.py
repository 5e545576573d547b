"""How the core reacts to a failed effect: one table, effect x failure kind -> reactions.

Everything that decides what a failure does lives here, as data; :meth:`Ipam.apply
<ipamcore.ipam.Ipam.apply>` looks the pair up and carries the reactions out in the order
listed. Every pair has an entry (``tests/core/test_reactions.py`` checks each one), so a new
effect or failure kind cannot be forgotten.

Why each row is what it is:

* Growth (CreateEni, AssignAddresses) throttled: the policy's backoff (``upstream``: all
  growth pauses ``throttle_pause_s``; ``adaptive``: that EC2 action backs off on its own).
* Growth refused for lack of room: for a whole subnet (``InsufficientFreeAddressesInSubnet``)
  a top-up moves on to a new ENI in another subnet when subnet discovery is on (upstream's
  ``TestIncreaseIPPoolSubnetDiscoveryUnfilledENI``), else growth pauses
  ``subnet_full_pause_s``. For one ENI (``PrivateIpAddressLimitExceeded``: the core counts
  an ENI's secondary IPs and prefixes together, as EC2 does, so this means the pool's view
  of the ENI is stale, an address added out of band say) growth pauses as well, and that
  ENI gets no top-up until reconciliation shows its real room (upstream re-reads the ENI
  from EC2 at this point); a CreateEni refused either way pauses growth.
* A top-up whose ENI EC2 does not find: the ENI is left alone until reconciliation, which
  sees the whole instance, removes it or clears it (one NotFound is not proof: a new ENI can
  be NotFound for a while).
* Shrink (UnassignAddresses, FreeEni) not found: what was to go is gone already, so it is
  dropped (allocations on a dropped ENI are kept on record as orphans). Any other failure:
  what was leaving is usable again and the next shrink waits ``shrink_interval_s``; a
  throttled one also tells the policy (``adaptive`` then holds the pool).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ipamcore.effects import AssignAddresses, CreateEni, Effect, FreeEni, UnassignAddresses
from ipamcore.errors import FailureKind


class Reaction(enum.Enum):
    """One thing the core does about a failed effect."""

    BACK_OFF = "the policy backs growth off (a throttled call)"
    PAUSE_GROWTH = "all growth pauses for throttle_pause_s"
    PAUSE_GROWTH_LONG = "all growth pauses for subnet_full_pause_s"
    AVOID_SUBNET = (
        "with subnet discovery, top-ups in the ENI's subnet stop and new ENIs go elsewhere "
        "for subnet_full_pause_s; without it, PAUSE_GROWTH_LONG"
    )
    AVOID_ENI = "the ENI gets no top-up until reconciliation shows its real room"
    SUSPECT_ENI = "the ENI is left alone by the policy until reconciliation decides"
    FORGET_BLOCKS = "the addresses are dropped from the pool (they are gone)"
    FORGET_ENI = "the ENI is dropped from the pool; its allocations become orphans"
    RESTORE_BLOCKS = "the addresses that were leaving are usable again"
    RESTORE_ENI = "the ENI that was leaving is usable again"
    SHRINK_LATER = "the next shrink waits shrink_interval_s"
    HOLD_POOL = "the policy is told a shrink call was throttled"


EffectType = type[CreateEni] | type[AssignAddresses] | type[UnassignAddresses] | type[FreeEni]
EFFECT_TYPES: tuple[EffectType, ...] = (CreateEni, AssignAddresses, UnassignAddresses, FreeEni)

R = Reaction
K = FailureKind
REACTIONS: Mapping[tuple[EffectType, FailureKind], tuple[Reaction, ...]] = {
    (CreateEni, K.THROTTLED): (R.BACK_OFF,),
    (CreateEni, K.SUBNET_FULL): (R.PAUSE_GROWTH_LONG,),
    (CreateEni, K.LIMIT_EXCEEDED): (R.PAUSE_GROWTH_LONG,),
    (CreateEni, K.NOT_FOUND): (R.PAUSE_GROWTH,),  # the subnet or a security group is gone
    (CreateEni, K.OTHER): (R.PAUSE_GROWTH,),
    (AssignAddresses, K.THROTTLED): (R.BACK_OFF,),
    (AssignAddresses, K.SUBNET_FULL): (R.AVOID_SUBNET,),
    (AssignAddresses, K.LIMIT_EXCEEDED): (R.AVOID_ENI, R.PAUSE_GROWTH_LONG),
    (AssignAddresses, K.NOT_FOUND): (R.SUSPECT_ENI,),
    (AssignAddresses, K.OTHER): (R.PAUSE_GROWTH,),
    (UnassignAddresses, K.THROTTLED): (R.RESTORE_BLOCKS, R.SHRINK_LATER, R.HOLD_POOL),
    (UnassignAddresses, K.SUBNET_FULL): (R.RESTORE_BLOCKS, R.SHRINK_LATER),
    (UnassignAddresses, K.LIMIT_EXCEEDED): (R.RESTORE_BLOCKS, R.SHRINK_LATER),
    (UnassignAddresses, K.NOT_FOUND): (R.FORGET_BLOCKS, R.SHRINK_LATER),
    (UnassignAddresses, K.OTHER): (R.RESTORE_BLOCKS, R.SHRINK_LATER),
    (FreeEni, K.THROTTLED): (R.RESTORE_ENI, R.SHRINK_LATER, R.HOLD_POOL),
    (FreeEni, K.SUBNET_FULL): (R.RESTORE_ENI, R.SHRINK_LATER),
    (FreeEni, K.LIMIT_EXCEEDED): (R.RESTORE_ENI, R.SHRINK_LATER),
    (FreeEni, K.NOT_FOUND): (R.FORGET_ENI,),
    (FreeEni, K.OTHER): (R.RESTORE_ENI, R.SHRINK_LATER),
}


def reactions(effect: Effect, kind: FailureKind) -> tuple[Reaction, ...]:
    """The reactions to ``effect`` failing with ``kind``."""
    return REACTIONS[(type(effect), kind)]
