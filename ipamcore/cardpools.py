"""The network-card half of :class:`ipamcore.ipam.Ipam`: one address pool per card above 0,
which pool holds an ENI or an address, the growth of each card (:func:`ipamcore.cards.plan_card`)
and device indexes per card. Pure, like the rest of the core; see :mod:`ipamcore.cards`.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import inf

import attrs

from ipamcore import cards
from ipamcore.config import PoolConfig
from ipamcore.effects import CreateEni, Effect
from ipamcore.errors import PoolExhausted, UsageError
from ipamcore.ipv6 import V6Prefixes
from ipamcore.limits import InstanceLimits
from ipamcore.model import IPS_PER_PREFIX, Allocation, AllocationKey, ObservedEni, PodRef
from ipamcore.policy import PolicyInput, decide_shrink
from ipamcore.pool import AddressPool
from ipamcore.views import PoolStats


class CardPools:
    """Card 0 is :attr:`pool` (the node's pool of pods); every card above 0 the instance type
    lists has a pool in :attr:`card_pools`, used only with ``ENABLE_MULTI_NIC``."""

    config: PoolConfig
    limits: InstanceLimits
    pool: AddressPool
    prefix_mode: bool
    per_eni: int
    notices: list[str]
    v6: V6Prefixes | None
    _in_flight: dict[int, Effect]

    def _init_cards(self) -> None:
        self.card_limits = cards.card_limits(self.limits)
        self.card_pools: dict[int, AddressPool] = {
            card: AddressPool(self.config.cooldown_s, secondary_ips_last=self.prefix_mode)
            for card in self.card_limits
            if card != 0
        }
        self._card_shrunk_at: dict[int, float] = {}
        # A card whose growth call was throttled grows again only after this time: whatever
        # the policy does for card 0, a card's own growth never retries a throttled call at
        # once (the adaptive policy pauses per action, not the node, and card growth does not
        # go through the policy).
        self._card_paused_until: dict[int, float] = {}
        self._card_config = attrs.evolve(
            self.config, warm_eni_target=0, warm_ip_target=cards.CARD_WARM_IP_TARGET,
            minimum_ip_target=cards.CARD_MINIMUM_IP_TARGET,
        )  # fmt: skip

    def eni(self, eni_id: str) -> ObservedEni | None:
        """What was last observed of ENI ``eni_id``, or None if the pool does not hold it."""
        state = self._pool_of(eni_id).enis.get(eni_id)
        return state.info if state else None

    @property
    def multi_nic_cards(self) -> tuple[int, ...]:
        """The cards a multi-NIC pod gets one interface each on (card 0 first): every card
        the type lists but the EFA-only ones (:attr:`efa_only_cards`); only card 0 without
        ENABLE_MULTI_NIC."""
        if not self.config.multi_nic:
            return (0,)
        skipped = self.efa_only_cards
        usable = (c for c in sorted(self.card_pools) if c in self.card_limits)
        return (0, *(c for c in usable if c not in skipped))

    @property
    def efa_only_cards(self) -> frozenset[int]:
        """Cards above 0 that cannot carry a pod interface: an EFA-only interface (no IP
        address) is attached there and no other ENI the CNI may manage (upstream v1.20's
        markUnmanagedNetworkCards: such a card is skipped; a card with an EFA-only and an
        ENA interface is managed, the EFA-only one excluded). Neither planned, nor given
        multi-NIC pods, nor counted anywhere (max pods counts card 0 only, as upstream)."""
        skipped = set()
        for card, pool in self.card_pools.items():
            infos = [state.info for state in pool.enis.values()]
            if any(i.is_efa_only for i in infos) and not any(
                not i.is_efa_only and not i.unmanaged for i in infos
            ):
                skipped.add(card)
        return frozenset(skipped)

    def network_card_of(self, allocation: Allocation) -> int:
        """The network card of the ENI ``allocation``'s address is on (0 if unknown)."""
        info = self.eni(allocation.eni_id)
        return info.network_card if info is not None else 0

    @property
    def table_stride(self) -> int:
        """Route tables per card: upstream's ``c.maxENI``, the type's ENI limit lowered by
        ``MAX_ENI`` when set (see :mod:`ipamcore.cards`)."""
        return min(self.limits.max_enis, self.config.max_eni or self.limits.max_enis)

    def card_eni_cap(self, network_card: int) -> int:
        """ENIs the CNI may hold on a card above 0: its own limit, at most
        :attr:`table_stride` (upstream's hasRoomForEni checks ``c.maxENI`` on every card)."""
        return min(self.card_limits.get(network_card, 0), self.table_stride)

    def route_table_of(self, info: ObservedEni) -> int | None:
        """The route table of an ENI (upstream's numbering, :func:`ipamcore.cards.route_table`):
        None for the primary, and for a device index outside its card's tables."""
        return cards.route_table(info.network_card, info.device_index, self.table_stride)

    def _outside_tables(self, info: ObservedEni) -> bool:
        """With ENABLE_MULTI_NIC on a type with several cards, a secondary ENI whose device
        index is at or above :attr:`table_stride` would share another card's table: it
        carries no pod addresses and gets no table."""
        return (
            self.config.multi_nic and len(self.card_limits) > 1
            and not info.counts_as_primary and info.device_index >= self.table_stride
        )  # fmt: skip

    def card_stats(self, now: float) -> dict[int, PoolStats]:
        """The figures of each card above 0 that carries multi-NIC pods (a query), as
        :meth:`ipamcore.ipam.Ipam.stats` gives card 0's: ``max_enis`` is the card's own
        limit; ``max_pods``, ``pending`` and ``in_flight`` are card 0's business (0 here)."""
        out: dict[int, PoolStats] = {}
        unit = IPS_PER_PREFIX if self.prefix_mode else 1
        for card in self.multi_nic_cards[1:]:
            pool = self.card_pools[card]
            cooled = pool.cooled_by(now)
            limit = self.card_eni_cap(card)
            if self.v6 is not None and self.config.ipv6_only:  # the card's /80
                v6 = self.v6.stats(card)
                out[card] = PoolStats(
                    enis=len(pool.enis), max_enis=limit, total=v6.total, assigned=v6.assigned,
                    cooling=0, available=max(v6.total - v6.assigned, 0), leaving=0,
                    prefixes=v6.prefixes, pending=0, in_flight=0, max_pods=0,
                    max_addresses=v6.total,
                )  # fmt: skip
                continue
            out[card] = PoolStats(
                enis=len(pool.enis), max_enis=limit, total=pool.usable_total,
                assigned=pool.assigned, cooling=pool.cooling - cooled,
                available=pool.available + cooled, leaving=pool.leaving,
                prefixes=pool.prefix_total(), pending=0, in_flight=0, max_pods=0,
                max_addresses=limit * self.per_eni * unit,
            )  # fmt: skip
        return out

    def _pools(self) -> list[AddressPool]:
        return [self.pool, *self.card_pools.values()]

    def _pool_of(self, eni_id: str) -> AddressPool:
        """The pool holding ENI ``eni_id`` (card 0's when none does)."""
        return next((p for p in self._pools() if eni_id in p.enis), self.pool)

    def _pool_for_card(self, network_card: int) -> AddressPool:
        if network_card == 0:
            return self.pool
        pool = self.card_pools.get(network_card)
        if pool is None:  # a card the limits table does not list: tracked, never used
            pool = AddressPool(self.config.cooldown_s, secondary_ips_last=self.prefix_mode)
            self.card_pools[network_card] = pool
        return pool

    def _plan_cards(
        self, inp: PolicyInput, now: float, card_waiting: Mapping[int, int]
    ) -> list[Effect]:
        """Each card above 0 with no effect in flight: growth to its warm address plus the
        multi-NIC ADDs waiting on it (``card_waiting``; see :func:`cards.plan_card`), else,
        at most once per ``shrink_interval_s``, upstream's shrink with the card's targets
        (``WARM_IP_TARGET=1``, ``MINIMUM_IP_TARGET=1``): surplus addresses back, an idle ENI
        of the card freed once the card has room to spare. Card 0's warm targets never
        apply to these cards."""
        busy = self._busy_cards()
        effects: list[Effect] = []
        skipped = self.efa_only_cards
        for card, pool in sorted(self.card_pools.items()):
            if card in busy or card not in self.card_limits or card in skipped:
                continue
            if now < self._card_paused_until.get(card, -inf):
                continue
            pool.advance(now)
            wanted = max(cards.CARD_WARM_IP_TARGET, cards.CARD_MINIMUM_IP_TARGET - pool.assigned)
            wanted += card_waiting.get(card, 0)
            grow = cards.plan_card(
                card, pool.enis.values(), pool.available, wanted, self.card_eni_cap(card),
                self.per_eni, self.prefix_mode, (inp.subnet_id, inp.security_groups),
                inp.busy_enis | inp.full_enis,
            )  # fmt: skip
            if grow or now - self._card_shrunk_at.get(card, -inf) < self.config.shrink_interval_s:
                effects += grow
                continue
            card_inp = attrs.evolve(
                inp, config=self._card_config, max_enis=self.card_eni_cap(card),
                pending_addresses=0, pending_enis=0, waiting=0,
            )  # fmt: skip
            shrink = decide_shrink(pool, card_inp, now)
            if shrink:
                self._card_shrunk_at[card] = now
            effects += shrink
        return effects

    def _card_of(self, effect: Effect) -> int:
        """The network card ``effect`` acts on."""
        if isinstance(effect, CreateEni):
            return effect.network_card
        return self._card_of_eni(effect.eni_id)

    def _busy_cards(self) -> set[int]:
        """The cards with an effect in flight."""
        return {self._card_of(e) for e in self._in_flight.values()}

    def _plan_v6_cards(self, placement: tuple[str, tuple[str, ...]], now: float) -> list[Effect]:
        """IPv6 mode with ENABLE_MULTI_NIC: each card multi-NIC pods use, with no effect in
        flight and not paused, gets one ENI holding an IPv6 /80 (:func:`cards.plan_v6_card`;
        upstream's createSecondaryIPv6ENIs, which does it at start; here the first pass
        after start does, and a card that lost its prefix gets one again)."""
        assert self.v6 is not None
        busy = self._busy_cards()
        held = frozenset(e for e, prefixes in self.v6.prefixes.items() if prefixes)
        effects: list[Effect] = []
        for card in self.multi_nic_cards[1:]:
            if card in busy or now < self._card_paused_until.get(card, -inf):
                continue
            pool = self.card_pools[card]
            skip = frozenset(e for e, s in pool.enis.items() if self._outside_tables(s.info))
            effects += cards.plan_v6_card(
                card, pool.enis.values(), held, self.card_eni_cap(card), placement, skip
            )
        return effects

    def _card_v6_failed(self, effect: Effect, message: str, now: float) -> bool:
        """IPv6 mode: a card's ENI or /80 call failed; that card tries again after
        ``throttle_pause_s`` (whatever the failure: the next pass would repeat it at
        once). False for an effect of card 0."""
        card = self._card_of(effect)
        if card == 0:
            return False
        self.notices.append(f"network card {card}: IPv6 ENI or prefix request failed: {message}")
        self._pause_card(card, now)
        return True

    def _assign_v6_above_0(
        self, key: AllocationKey, pod: PodRef, network_card: int, now: float
    ) -> Allocation:
        """IPv6 mode: an address for a multi-NIC pod's interface from ``network_card``'s
        /80 (:class:`PoolExhausted` while the card has none yet)."""
        pool = self.card_pools.get(network_card)
        if pool is None or not self.config.multi_nic or self.v6 is None:
            raise UsageError(f"network card {network_card} carries no pod addresses")
        existing = pool.allocations.get(key)
        if existing is not None:
            return existing
        found = self.v6.first(network_card)
        if found is None:
            raise PoolExhausted(f"network card {network_card} has no IPv6 prefix yet")
        eni_id, prefix = found
        allocation = Allocation(
            key=key, pod=pod, ipv4=None, ipv6=self.v6.take(prefix, network_card),
            allocated_at=now, eni_id=eni_id, device_index=self.v6.devices.get(eni_id, 0),
        )  # fmt: skip
        pool.record_allocation(allocation)
        return allocation

    def _card_throttled(self, effect: Effect, now: float) -> None:
        """A growth call of a card above 0 was throttled: that card's growth pauses for
        ``throttle_pause_s`` (card 0's pause is the policy's)."""
        card = self._card_of(effect)
        if card != 0:
            self._pause_card(card, now)

    def _pause_card(self, card: int, now: float) -> None:
        until = now + self.config.throttle_pause_s
        self._card_paused_until[card] = max(self._card_paused_until.get(card, -inf), until)

    def _card_of_eni(self, eni_id: str) -> int:
        info = self.eni(eni_id)
        return info.network_card if info is not None else 0

    def _free_device_index(self, network_card: int = 0) -> int:
        """The lowest device index of ``network_card`` (above 0) that no attached ENI of
        that card uses and no CreateEni in flight on it has reserved."""
        pool = self._pool_for_card(network_card)
        taken = {s.info.device_index for s in pool.enis.values()}
        taken |= {
            e.device_index for e in self._in_flight.values()
            if isinstance(e, CreateEni) and e.network_card == network_card
        }  # fmt: skip
        return cards.free_device_index(taken, start=1 if network_card == 0 else 0)

    def _advance(self, now: float) -> None:
        for pool in self._pools():
            pool.advance(now)

    def _pool_with(self, address: str) -> AddressPool:
        """The pool whose ENIs hold ``address`` (card 0's when none does)."""
        return next((p for p in self._pools() if address in p.slots), self.pool)

    def _assign_above_0(
        self, key: AllocationKey, pod: PodRef, network_card: int, now: float
    ) -> Allocation:
        pool = self.card_pools.get(network_card)
        if pool is None or not self.config.multi_nic:
            raise UsageError(f"network card {network_card} carries no pod addresses")
        pool.advance(now)
        return pool.assign(key, pod, now)
