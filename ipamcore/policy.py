"""The warm-pool policy: from pool counts and configuration to growth and shrink effects.

Growth (upstream order): top up existing ENIs that have room, lowest device first, then create
new ENIs, each requested together with its addresses in one call, while the instance has
ENI slots left (max ENIs - unmanaged - reserved trunk). Addresses already requested by effects
in flight count as coming, so one shortage is never requested twice. Pods waiting for an
address (``waiting``) add to the shortage, so a burst is served in one round of calls: every
ENI it needs is created at once, each with its addresses in the create call.

With ``one_step_growth`` (the ``upstream-faithful`` policy) growth is upstream's
``increaseDatastorePool`` instead: one pass either tops up one existing ENI or creates one ENI,
never more, and waiting pods are not counted (upstream has no such signal), so a burst is served
one ENI per pass.

Shrink (upstream guards): at most one pass every ``shrink_interval_s``; give back surplus
addresses or /28 prefixes from the highest ENIs first; free at most one ENI per pass, and only
an ENI that is not primary, is at least ``eni_min_age_s`` old, has no assigned or cooling
address, has nothing in flight, and is not needed for WARM_IP / MINIMUM_IP / WARM_ENI /
WARM_PREFIX.

The returned effects carry ``effect_id=0``; :class:`ipamcore.ipam.Ipam` numbers them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import attrs

from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, Effect, FreeEni, UnassignAddresses
from ipamcore.model import IPS_PER_PREFIX
from ipamcore.pool import AddressPool
from ipamcore.pool_parts import EniState
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
    count_cooling_as_available: bool = False
    one_step_growth: bool = False  # upstream: one ENI topped up or created per pass


def pool_counts(pool: AddressPool, inp: PolicyInput) -> PoolCounts:
    available = pool.available
    if inp.count_cooling_as_available:
        available += pool.cooling
    return PoolCounts(
        total=pool.usable_total,
        assigned=pool.assigned,
        available=available,
        total_prefixes=pool.prefix_total() if inp.prefix_mode else 0,
        free_prefixes=pool.free_prefixes() if inp.prefix_mode else 0,
    )


def _room(eni: EniState, inp: PolicyInput) -> int:
    held = eni.prefix_count() if inp.prefix_mode else eni.ipv4_count()
    return max(inp.per_eni - held, 0)


def _growable(pool: AddressPool, inp: PolicyInput) -> Iterator[EniState]:
    for eni in sorted(pool.enis.values(), key=lambda e: e.rank):
        if eni.excluded or eni.leaving or eni.eni_id in inp.busy_enis:
            continue
        yield eni


def shortage(pool: AddressPool, inp: PolicyInput) -> tuple[int, bool]:
    """``(short, fill_whole_enis)``: units (addresses, or prefixes in prefix mode) to add.

    With WARM_ENI_TARGET (no WARM_IP/MINIMUM_IP) upstream fills whole ENIs.
    """
    cfg = inp.config
    base = pool_counts(pool, inp)
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


def decide_growth(pool: AddressPool, inp: PolicyInput) -> list[Effect]:
    if inp.one_step_growth:
        inp = attrs.evolve(inp, waiting=0)
    short, fill = shortage(pool, inp)
    if short <= 0:
        return []
    effects: list[Effect] = []
    for eni in _growable(pool, inp):
        room = _room(eni, inp)
        if room <= 0:
            continue
        n = room if fill else min(room, short)
        effects.append(_assign(eni.eni_id, n, inp.prefix_mode))
        short -= n
        if short <= 0 or inp.one_step_growth:
            return effects
    eni_slots = inp.max_enis - len(pool.enis) - inp.pending_enis
    while short > 0 and eni_slots > 0 and inp.subnet_id:
        n = inp.per_eni if fill else min(inp.per_eni, short)
        effects.append(
            CreateEni(
                effect_id=0,
                subnet_id=inp.subnet_id,
                security_groups=inp.security_groups,
                ipv4_count=0 if inp.prefix_mode else n,
                prefix_count=n if inp.prefix_mode else 0,
            )
        )
        short -= n
        eni_slots -= 1
        if inp.one_step_growth:
            break
    return effects


def _assign(eni_id: str, n: int, prefix_mode: bool) -> AssignAddresses:
    if prefix_mode:
        return AssignAddresses(effect_id=0, eni_id=eni_id, prefix_count=n)
    return AssignAddresses(effect_id=0, eni_id=eni_id, ipv4_count=n)


def _surplus(pool: AddressPool, inp: PolicyInput) -> int:
    """Units (addresses or prefixes) that may be given back without freeing an ENI."""
    cfg = inp.config
    counts = pool_counts(pool, inp)
    if inp.prefix_mode:
        if cfg.warm_ip_targets_defined:
            return warm_ip_short_over_prefixes(
                counts, cfg.warm_ip_target, cfg.minimum_ip_target
            )[1]
        return warm_prefix_over(counts, cfg.warm_prefix_target)
    if cfg.warm_ip_targets_defined:
        return warm_ip_short_over(counts, cfg.warm_ip_target, cfg.minimum_ip_target)[1]
    return 0


def _eni_needed(pool: AddressPool, eni: EniState, inp: PolicyInput) -> bool:
    """Whether freeing ``eni`` would take the pool below a warm target."""
    cfg = inp.config
    counts = pool_counts(pool, inp)
    eni_free = eni.slots - eni.assigned - eni.cooling
    available_after = counts.available - eni_free
    total_after = counts.total - eni.slots
    if cfg.warm_ip_targets_defined:
        return available_after < cfg.warm_ip_target or total_after < cfg.minimum_ip_target
    if inp.prefix_mode:
        return available_after < cfg.warm_prefix_target * IPS_PER_PREFIX
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


def decide_shrink(pool: AddressPool, inp: PolicyInput, now: float) -> list[Effect]:
    effects: list[Effect] = []
    surplus = _surplus(pool, inp)
    enis_high_first = sorted(pool.enis.values(), key=lambda e: e.rank, reverse=True)
    if surplus > 0:
        effects = unassign_from_highest(pool, inp, enis_high_first, surplus, _surplus_blocks)
        if effects:
            return effects
    for eni in enis_high_first:
        if may_free(eni, inp, now) and not _eni_needed(pool, eni, inp):
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


def _surplus_blocks(
    pool: AddressPool, eni: EniState, prefix_mode: bool, limit: int
) -> tuple[str, ...]:
    """Wholly free blocks of the wanted kind on an ENI, last in packing order first."""
    blocks = [
        b
        for b in eni.blocks.values()
        if b.is_prefix == prefix_mode and not b.leaving and b.busy == 0
        and not _holds_assigned(pool, b.addresses)
    ]
    blocks.sort(key=lambda b: (b.rank, b.block_id), reverse=True)
    return tuple(b.block_id for b in blocks[:limit])


def _holds_assigned(pool: AddressPool, addresses: tuple[str, ...]) -> bool:
    return any(pool.slots[a].key is not None for a in addresses)
