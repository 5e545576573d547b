"""The warm-pool policy: from pool counts and configuration to growth and shrink effects.

Growth (upstream order): top up existing ENIs that have room, lowest device first, then create
new ENIs, each requested together with its addresses in one call, while the instance has
ENI slots left (max ENIs - unmanaged - reserved trunk). Addresses already requested by effects
in flight count as coming, so one shortage is never requested twice. Pods waiting for an
address (``waiting``) add to the shortage, so a burst is served in one round of calls: every
ENI it needs is created at once, each with its addresses in the create call.

With ``faithful`` (the ``upstream-faithful`` policy) growth is upstream's
``increaseDatastorePool`` instead: one pass either tops up one existing ENI or creates one ENI,
never more, and waiting pods are not counted (upstream has no such signal), so a burst is served
one ENI per pass.

Shrink (upstream guards): at most one pass every ``shrink_interval_s``; give back surplus
addresses or /28 prefixes from the highest ENIs first; free at most one ENI per pass, and only
an ENI that is not primary, is at least ``eni_min_age_s`` old, has no assigned or cooling
address, has nothing in flight, and is not needed for WARM_IP / MINIMUM_IP / WARM_ENI /
WARM_PREFIX.

The returned effects carry ``effect_id=0``; :class:`ipamcore.ipam.Ipam` numbers them. The
policies sit behind one interface, :class:`Policy`, chosen once by :func:`make_policy`:
:class:`UpstreamPolicy` here and :class:`ipamcore.adaptive.AdaptivePolicy`; the helpers
both use (an ENI's room, the growable ENIs, the effects they build, the free blocks a
shrink gives back) are defined once, here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Protocol

import attrs

from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, Effect, FreeEni, UnassignAddresses
from ipamcore.inventory import EniState
from ipamcore.model import IPS_PER_PREFIX
from ipamcore.pool import AddressPool
from ipamcore.warm import (
    PoolCounts,
    warm_eni_short,
    warm_eni_too_high,
    warm_ip_short_over,
    warm_ip_short_over_prefixes,
    warm_prefix_over,
    warm_prefix_short,
)


@attrs.frozen
class PolicyInput:
    """Everything a decision depends on besides the pool itself."""

    config: PoolConfig
    prefix_mode: bool
    per_eni: int  # secondary IPs or prefixes an ENI can hold
    max_enis: int  # ENIs the CNI may have attached (unmanaged ones included)
    max_pods: int
    pending_addresses: int  # addresses requested by growth effects in flight
    pending_enis: int  # CreateEni effects in flight
    busy_enis: frozenset[str]  # ENIs with an effect in flight
    waiting: int  # ADDs waiting for an address
    subnet_id: str
    security_groups: tuple[str, ...]
    full_enis: frozenset[str] = frozenset()  # EC2 refused them more addresses: no top-up


def pool_counts(pool: AddressPool, inp: PolicyInput, faithful: bool = False) -> PoolCounts:
    """The pool's figures; ``faithful`` (the ``upstream-faithful`` policy) counts cooling
    addresses as available, as upstream does."""
    available = pool.available
    if faithful:
        available += pool.cooling
    return PoolCounts(
        total=pool.usable_total,
        assigned=pool.assigned,
        available=available,
        total_prefixes=pool.prefix_total() if inp.prefix_mode else 0,
        free_prefixes=pool.free_prefixes() if inp.prefix_mode else 0,
    )


def room(eni: EniState, inp: PolicyInput) -> int:
    """Secondary IPs or /28 prefixes the ENI can still take. Both kinds take one of the ENI's
    address slots each (EC2 counts them together: ``PrivateIpAddressLimitExceeded``), so an
    ENI holding secondary IPs and prefixes has room for the slots neither holds."""
    if eni.eni_id in inp.full_enis:
        return 0
    return max(inp.per_eni - eni.ipv4_count() - eni.prefix_count(), 0)


def growable(pool: AddressPool, inp: PolicyInput) -> list[EniState]:
    """ENIs that may be topped up, lowest first: managed, not leaving, nothing in flight."""
    return [
        eni
        for eni in sorted(pool.enis.values(), key=lambda e: e.rank)
        if not (eni.excluded or eni.leaving or eni.eni_id in inp.busy_enis)
    ]


def assign_effect(eni_id: str, n: int, prefix_mode: bool) -> AssignAddresses:
    """AssignAddresses of ``n`` units (secondary IPs, or prefixes in prefix mode)."""
    if prefix_mode:
        return AssignAddresses(effect_id=0, eni_id=eni_id, prefix_count=n)
    return AssignAddresses(effect_id=0, eni_id=eni_id, ipv4_count=n)


def create_effect(inp: PolicyInput, n: int) -> CreateEni:
    """CreateEni in the placement's subnet with ``n`` units requested in the same call."""
    return CreateEni(
        effect_id=0,
        subnet_id=inp.subnet_id,
        security_groups=inp.security_groups,
        ipv4_count=0 if inp.prefix_mode else n,
        prefix_count=n if inp.prefix_mode else 0,
    )


def shortage(pool: AddressPool, inp: PolicyInput, faithful: bool = False) -> tuple[int, bool]:
    """``(short, fill_whole_enis)``: units (addresses, or prefixes in prefix mode) to add.

    With WARM_ENI_TARGET (no WARM_IP/MINIMUM_IP) upstream fills whole ENIs. With a warm
    ENI or prefix target of 0 the pool still grows when nothing at all is available
    (upstream's ``isDatastorePoolTooLow``: ``warmTarget == 0 && available == 0``).
    """
    cfg = inp.config
    base = pool_counts(pool, inp, faithful)
    counts = attrs.evolve(
        base,
        total=base.total + inp.pending_addresses,
        available=base.available + inp.pending_addresses - inp.waiting,
    )
    if inp.prefix_mode:
        if cfg.warm_ip_targets_defined:
            short, _ = warm_ip_short_over_prefixes(
                counts, cfg.warm_ip_target, cfg.minimum_ip_target
            )
        else:
            short = warm_prefix_short(counts, cfg.warm_prefix_target)
        room_ips = inp.max_pods - counts.total
        return max(min(short, -(-room_ips // IPS_PER_PREFIX)), 0), False
    if cfg.warm_ip_targets_defined:
        short, _ = warm_ip_short_over(counts, cfg.warm_ip_target, cfg.minimum_ip_target)
        fill = False
    else:
        short = warm_eni_short(counts, cfg.warm_eni_target, inp.per_eni)
        fill = True
    return max(min(short, inp.max_pods - counts.total), 0), fill


def decide_growth(pool: AddressPool, inp: PolicyInput, faithful: bool = False) -> list[Effect]:
    """Top-ups of existing ENIs, then new ENIs, for the shortage; ``faithful``: upstream's
    one ENI per pass, waiting pods not counted."""
    if faithful:
        inp = attrs.evolve(inp, waiting=0)
    short, fill = shortage(pool, inp, faithful)
    if short <= 0:
        return []
    effects: list[Effect] = []
    for eni in growable(pool, inp):
        eni_room = room(eni, inp)
        if eni_room <= 0:
            continue
        n = eni_room if fill else min(eni_room, short)
        effects.append(assign_effect(eni.eni_id, n, inp.prefix_mode))
        short -= n
        if short <= 0 or faithful:
            return effects
    eni_slots = inp.max_enis - len(pool.enis) - inp.pending_enis
    while short > 0 and eni_slots > 0 and inp.subnet_id:
        n = inp.per_eni if fill else min(inp.per_eni, short)
        effects.append(create_effect(inp, n))
        short -= n
        eni_slots -= 1
        if faithful:
            break
    return effects


def _surplus(pool: AddressPool, inp: PolicyInput, faithful: bool) -> int:
    """Units (addresses or prefixes) that may be given back without freeing an ENI."""
    cfg = inp.config
    counts = pool_counts(pool, inp, faithful)
    if inp.prefix_mode:
        if cfg.warm_ip_targets_defined:
            return warm_ip_short_over_prefixes(
                counts, cfg.warm_ip_target, cfg.minimum_ip_target
            )[1]
        return warm_prefix_over(counts, cfg.warm_prefix_target)
    if cfg.warm_ip_targets_defined:
        return warm_ip_short_over(counts, cfg.warm_ip_target, cfg.minimum_ip_target)[1]
    return 0


def _eni_needed(pool: AddressPool, eni: EniState, inp: PolicyInput, faithful: bool) -> bool:
    """Whether freeing ``eni`` would take the pool below a warm target (upstream's
    ``shouldRemoveExtraENIs`` and ``isRequiredFor{WarmIP,MinimumIP,WarmPrefix}Target``)."""
    cfg = inp.config
    counts = pool_counts(pool, inp, faithful)
    eni_free = eni.slots - eni.assigned - eni.cooling
    available_after = counts.available - eni_free
    total_after = counts.total - eni.slots
    if cfg.warm_ip_targets_defined:
        return available_after < cfg.warm_ip_target or total_after < cfg.minimum_ip_target
    if inp.prefix_mode:
        free_elsewhere = counts.free_prefixes - eni.free_prefix_count()
        return free_elsewhere < cfg.warm_prefix_target
    if not warm_eni_too_high(counts, cfg.warm_eni_target, inp.per_eni) and eni.slots:
        return True
    return available_after < cfg.warm_eni_target * inp.per_eni


def may_free(eni: EniState, inp: PolicyInput, now: float) -> bool:
    """Upstream's guards on freeing an ENI, whatever the pool needs: not the primary, managed,
    not already leaving or busy with an effect, no assigned or cooling address, and at least
    ``eni_min_age_s`` old."""
    return not (
        eni.info.is_primary
        or eni.excluded
        or eni.leaving
        or eni.eni_id in inp.busy_enis
        or eni.assigned
        or eni.cooling
        or now - eni.seen_at < inp.config.eni_min_age_s
    )


def decide_shrink(
    pool: AddressPool, inp: PolicyInput, now: float, faithful: bool = False
) -> list[Effect]:
    """Surplus addresses or prefixes back from the highest ENIs, else one idle ENI freed."""
    effects: list[Effect] = []
    surplus = _surplus(pool, inp, faithful)
    enis_high_first = sorted(pool.enis.values(), key=lambda e: e.rank, reverse=True)
    if surplus > 0:
        effects = unassign_from_highest(pool, inp, enis_high_first, surplus, free_blocks)
        if effects:
            return effects
    for eni in enis_high_first:
        if may_free(eni, inp, now) and not _eni_needed(pool, eni, inp, faithful):
            return [FreeEni(effect_id=0, eni_id=eni.eni_id)]
    return []


BlockPicker = Callable[[AddressPool, EniState, bool, int], tuple[str, ...]]


def unassign_from_highest(
    pool: AddressPool,
    inp: PolicyInput,
    enis_high_first: Iterable[EniState],
    budget: int,
    pick: BlockPicker,
) -> list[Effect]:
    """UnassignAddresses of up to ``budget`` blocks that ``pick`` chooses, from the highest
    ENI down, skipping excluded, leaving and busy ENIs."""
    effects: list[Effect] = []
    for eni in enis_high_first:
        if budget <= 0:
            break
        if eni.excluded or eni.leaving or eni.eni_id in inp.busy_enis:
            continue
        picked = pick(pool, eni, inp.prefix_mode, budget)
        if not picked:
            continue
        budget -= len(picked)
        if inp.prefix_mode:
            effects.append(UnassignAddresses(effect_id=0, eni_id=eni.eni_id, prefixes=picked))
        else:
            effects.append(UnassignAddresses(effect_id=0, eni_id=eni.eni_id, ipv4_addresses=picked))
    return effects


def free_blocks(
    pool: AddressPool, eni: EniState, prefix_mode: bool, limit: int
) -> tuple[str, ...]:
    """Wholly free blocks of the mode's kind on an ENI (no assigned or cooling address, not
    leaving), last in packing order first."""
    blocks = [
        b
        for b in eni.blocks.values()
        if b.is_prefix == prefix_mode and not b.leaving and b.busy == 0
        and not any(pool.slots[a].key is not None for a in b.addresses)
    ]
    blocks.sort(key=lambda b: (b.rank, b.block_id), reverse=True)
    return tuple(b.block_id for b in blocks[:limit])


# --------------------------------------------------------------------------- the interface
class Policy(Protocol):
    """A warm-pool policy: chosen once, from :class:`ipamcore.config.PolicyName`, by
    :func:`make_policy`; :class:`ipamcore.ipam.Ipam` asks it for growth and shrink and tells
    it what happened. Its own state (demand, backoff) lives in it."""

    # Whether :meth:`assigned` and :meth:`released` are wanted: they are called on every ADD
    # and DEL, so a policy that ignores them says so once and costs the hot path nothing.
    observes_pods: bool

    def grow(self, pool: AddressPool, inp: PolicyInput, now: float) -> list[Effect]:
        """Growth effects (``effect_id=0``), or none."""
        ...

    def shrink(self, pool: AddressPool, inp: PolicyInput, now: float) -> list[Effect]:
        """Shrink effects, asked only when no growth is wanted or in flight, no pod waits,
        and ``shrink_interval_s`` passed since the last shrink."""
        ...

    def assigned(self, now: float) -> None:
        """A new allocation was made."""
        ...

    def released(self, now: float) -> None:
        """An allocation was released."""
        ...

    def succeeded(self, effect: Effect) -> None:
        """A growth effect succeeded."""
        ...

    def throttled(self, effect: Effect, seed: str, now: float) -> float:
        """A growth effect was throttled: the time until which all growth pauses (the
        policy's own per-action backoff may pause more)."""
        ...

    def shrink_throttled(self, now: float) -> None:
        """A shrink effect was throttled."""
        ...

    def wake_at(self, now: float) -> float:
        """When the policy's own situation next changes (a backoff ends...); inf if never."""
        ...


class UpstreamPolicy:
    """Upstream's warm targets (``upstream``), or with ``faithful`` upstream's arithmetic
    exactly (``upstream-faithful``: cooling addresses count as available, one ENI per pass)."""

    observes_pods = False

    def __init__(self, config: PoolConfig, faithful: bool) -> None:
        self.config = config
        self.faithful = faithful

    def grow(self, pool: AddressPool, inp: PolicyInput, now: float) -> list[Effect]:
        """Upstream's growth decision for this round (see :class:`Policy`)."""
        return decide_growth(pool, inp, self.faithful)

    def shrink(self, pool: AddressPool, inp: PolicyInput, now: float) -> list[Effect]:
        """Upstream's shrink decision for this round (see :class:`Policy`)."""
        return decide_shrink(pool, inp, now, self.faithful)

    def assigned(self, now: float) -> None:
        """Nothing: upstream's policy does not follow demand."""
        pass

    def released(self, now: float) -> None:
        """Nothing: upstream's policy does not follow demand."""
        pass

    def succeeded(self, effect: Effect) -> None:
        """Nothing: upstream's pause ends by time alone."""
        pass

    def throttled(self, effect: Effect, seed: str, now: float) -> float:
        """Pause all growth for ``throttle_pause_s``: the time growth may start again."""
        return now + self.config.throttle_pause_s

    def shrink_throttled(self, now: float) -> None:
        """Nothing: a throttled shrink is simply tried again next round."""
        pass

    def wake_at(self, now: float) -> float:
        """Never: upstream's policy runs on the caller's fixed cadence."""
        return math.inf
