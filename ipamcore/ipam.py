"""The node's IPAM state machine: pool + warm-pool policy + in-flight effects + reconciliation.

This is the one object a daemon, a simulator or an embedding program drives:

* pods: :meth:`Ipam.assign` / :meth:`Ipam.release` (O(log n), deterministic choice);
* policy: :meth:`Ipam.plan` returns effects, the shell performs them and reports each
  outcome with :meth:`Ipam.apply`;
* reconciliation: :meth:`Ipam.reconcile` with an observed snapshot of the instance's ENIs;
* persistence: :meth:`Ipam.checkpoint` / :meth:`Ipam.restore`.

Every method that depends on time takes ``now`` (Unix seconds, float). Nothing here does I/O.

Driving it (the cadence): call :meth:`Ipam.plan` after every input that can change a
decision (an ADD that got :class:`~ipamcore.errors.PoolExhausted`, a release, an outcome
given to :meth:`Ipam.apply`, a reconciliation), and otherwise at the latest at
:meth:`Ipam.next_wake_at` (when a cooldown, a pause, a backoff or an effect's expiry ends).
Queries (:meth:`Ipam.stats`, :meth:`Ipam.eni_views`, :meth:`Ipam.next_wake_at`...) never move
the pool's time: only commands (``assign``, ``release``, ``plan``, ``apply``, ``reconcile``,
``load``, ``restore``) do.

Every effect :meth:`Ipam.plan` returns must be answered by exactly one outcome through
:meth:`Ipam.apply` (a failure too: :class:`~ipamcore.events.EffectFailed`). An effect left
unanswered for ``PoolConfig.effect_timeout_s`` is given up as if it had failed (kind
``OTHER``), so that it does not block growth or shrink forever; its late outcome is then
accepted and ignored, and reconciliation picks up whatever the cloud really did.

:attr:`Ipam.notices` collects messages for the operator (a setting ignored for this instance
type, a reconciliation snapshot refused, an effect given up); the shell logs and clears it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from ipamcore.adaptive import AdaptivePolicy
from ipamcore.cards import is_extra_attachment
from ipamcore.checkpoint import Checkpoint
from ipamcore.config import PolicyName, PoolConfig, choose_discovered_subnet
from ipamcore.dualstack import DualStack
from ipamcore.effects import AssignAddresses, CreateEni, Effect, FreeEni, UnassignAddresses
from ipamcore.errors import ConfigError, FailureKind, UsageError
from ipamcore.events import (
    AddressesAssigned,
    AddressesUnassigned,
    EffectFailed,
    EniCreated,
    EniFreed,
    Outcome,
)
from ipamcore.inventory import SlotState
from ipamcore.limits import InstanceLimits
from ipamcore.model import (
    IPS_PER_PREFIX,
    Allocation,
    AllocationKey,
    ObservedEni,
    PodRef,
    Subnet,
)
from ipamcore.policy import Policy, PolicyInput, UpstreamPolicy
from ipamcore.pool import AddressPool
from ipamcore.reactions import Reaction, reactions
from ipamcore.reconcile import Reconciling
from ipamcore.validation import check_outcome
from ipamcore.views import AddressView, BlockView, EniView, PoolStats

INF = float("inf")

__all__ = [
    "AddressesAssigned",
    "AddressesUnassigned",
    "AssignAddresses",
    "CreateEni",
    "Effect",
    "EffectFailed",
    "EniCreated",
    "EniFreed",
    "FreeEni",
    "Ipam",
    "Outcome",
    "RestoreReport",
    "UnassignAddresses",
    "make_policy",
]


def make_policy(config: PoolConfig) -> Policy:
    """The policy ``config.policy`` names (the one place a policy is chosen)."""
    if config.policy is PolicyName.ADAPTIVE:
        return AdaptivePolicy(config.adaptive)
    return UpstreamPolicy(config, faithful=config.policy is PolicyName.UPSTREAM_FAITHFUL)


@attrs.frozen
class RestoreReport:
    """What :meth:`Ipam.restore` did: allocations restored, and those dropped with a reason."""

    restored: tuple[Allocation, ...] = ()
    dropped: tuple[tuple[Allocation, str], ...] = ()


class Ipam(Reconciling, DualStack):
    """The IPAM state machine of one node. Not thread-safe: drive it from one task or lock."""

    def __init__(self, config: PoolConfig, limits: InstanceLimits) -> None:
        if not isinstance(config, PoolConfig) or not isinstance(limits, InstanceLimits):
            raise UsageError("Ipam(config, limits) takes a PoolConfig and an InstanceLimits")
        if config.ipv6 and not limits.supports_prefix_delegation:
            raise ConfigError(
                "ENABLE_IPv6",
                f"IPv6 needs prefix delegation, which {limits.instance_type} (neither nitro nor "
                "bare metal) does not support",
            )
        self.config = config
        self.limits = limits
        self.notices: list[str] = []
        self.prefix_mode = config.prefix_delegation and limits.supports_prefix_delegation
        if config.prefix_delegation and not self.prefix_mode:
            self.notices.append(
                f"ENABLE_PREFIX_DELEGATION ignored: {limits.instance_type} is neither nitro nor "
                "bare metal; using secondary IPs"
            )
        self._init_v6()
        self.pool = AddressPool(config.cooldown_s, secondary_ips_last=self.prefix_mode)
        # Network cards above 0: one pool each (see ipamcore.cards); their ENIs carry pod
        # addresses only with ENABLE_MULTI_NIC, and never count against card 0's limit.
        self._init_cards()
        self.max_enis = min(limits.max_enis, config.max_eni or limits.max_enis)
        self.max_enis -= config.reserved_trunk_enis
        self.per_eni = limits.prefixes_per_eni if self.prefix_mode else limits.ips_per_eni
        limit_pods = limits.max_pods_prefix_delegation if self.prefix_mode else limits.max_pods
        self._max_pods_base = config.max_pods or limit_pods
        self.max_pods = self._max_pods_base
        # Custom networking from the node's ENIConfig (Kubernetes): (subnet, groups), the
        # subnet "" while the ENIConfig is missing (no new ENI); None: the configuration's.
        self._eniconfig: tuple[str, tuple[str, ...]] | None = None
        self._in_flight: dict[int, Effect] = {}
        self._issued_at: dict[int, float] = {}
        self._given_up: set[int] = set()  # expired effects: their late outcome is ignored
        self._next_effect_id = 1
        self._loaded = False
        self._growth_paused_until = -INF
        self._last_shrink_at = -INF
        self._recently_released: dict[str, float] = {}
        self._subnets: tuple[Subnet, ...] = ()
        self._availability_zone = ""
        self._policy = make_policy(config)
        self._observes_pods = self._policy.observes_pods
        # Refusals of room: subnets (InsufficientFreeAddressesInSubnet, with subnet discovery)
        # until a time, and ENIs (PrivateIpAddressLimitExceeded) until reconciled.
        self._full_subnets: dict[str, float] = {}
        self._full_enis: set[str] = set()
        # Allocations whose address vanished from the instance (out of band) while their pod
        # still holds it: kept on record, so that if the address comes back it stays the
        # pod's and is never handed to a second pod. DEL releases them as usual.
        self._orphans: dict[str, Allocation] = {}
        self._suspect_enis: set[str] = set()  # answered NotFound; no effects until reconciled

    @property
    def _unit(self) -> int:
        """Addresses per unit the policy counts in (a /28 in prefix mode)."""
        return IPS_PER_PREFIX if self.prefix_mode else 1

    # ---------------------------------------------------------------- queries
    @property
    def in_flight(self) -> Mapping[int, Effect]:
        """The effects handed out by :meth:`plan` and not yet answered, by effect id."""
        return dict(self._in_flight)

    def get(self, key: AllocationKey) -> Allocation | None:
        """The allocation of ``key``, or None."""
        found = self.pool.allocations.get(key)
        if found is None and self.card_pools and is_extra_attachment(key):
            for pool in self.card_pools.values():
                found = pool.allocations.get(key)
                if found is not None:
                    break
        if self._dual and found is not None:
            return self._with_v6(found)
        return found

    def assign_on_card(
        self, key: AllocationKey, pod: PodRef, network_card: int, now: float
    ) -> Allocation:
        """An address for ``key`` from ``network_card``'s ENIs (card 0: :meth:`assign`);
        :class:`PoolExhausted` when the card has none ready, in which case :meth:`plan`
        with ``card_waiting`` asks for more (as ``waiting`` does for card 0)."""
        if network_card == 0:
            return self.assign(key, pod, now)
        if self._ipv6:
            return self._assign_v6_above_0(key, pod, network_card, now)
        return self._assign_above_0(key, pod, network_card, now)

    @property
    def orphaned(self) -> Mapping[str, Allocation]:
        """Allocations whose address the instance no longer holds (see :meth:`reconcile`)."""
        return dict(self._orphans)

    def allocations(self) -> list[Allocation]:
        """Every allocation (every card's), in a stable order."""
        every = [a for pool in self._pools() for a in pool.allocations.values()]
        if self._dual:
            every = [self._with_v6(a) for a in every]
        return sorted(every, key=lambda a: str(a.key))

    def find_by_pod(self, namespace: str, name: str) -> list[Allocation]:
        """The allocations of the pod ``namespace/name``."""
        return [
            self._with_v6(a) for pool in self._pools() for a in pool.find_by_pod(namespace, name)
        ]

    def primary_eni(self) -> ObservedEni | None:
        """The instance's primary ENI (device 0), or None before :meth:`load`."""
        for state in self.pool.enis.values():
            if state.info.counts_as_primary:
                return state.info
        return None

    def stats(self, now: float) -> PoolStats:
        """The pool's figures at ``now`` (a query: the pool's time does not move)."""
        pool = self.pool
        if self._ipv6:
            return self._stats_v6()
        cooled = pool.cooled_by(now)
        return PoolStats(
            enis=len(pool.enis),
            max_enis=self.max_enis,
            total=pool.usable_total,
            assigned=pool.assigned,
            cooling=pool.cooling - cooled,
            available=pool.available + cooled,
            leaving=pool.leaving,
            prefixes=pool.prefix_total(),
            pending=self._pending_addresses(),
            in_flight=len(self._in_flight),
            max_pods=self.max_pods,
            max_addresses=self.max_enis * self.per_eni * self._unit,
        )

    def next_wake_at(self, now: float) -> float:
        """The latest time to call :meth:`plan` again if no input arrives before: the next
        end of a cooldown, a growth pause, a backoff, the shrink interval, an ENI's minimum
        age, or an effect's expiry (inf when nothing is pending). A query."""
        config = self.config
        wake = INF
        for t in (
            self._growth_paused_until,
            self._last_shrink_at + config.shrink_interval_s,
            self.pool.next_ready_at(),
            self._policy.wake_at(now),
            *self._full_subnets.values(),
            *self._card_paused_until.values(),
            self._v6_retry_at,
        ):
            if now < t < wake:
                wake = t
        if self._issued_at:
            timeout = config.effect_timeout_s
            for at in self._issued_at.values():
                if now < at + timeout < wake:
                    wake = at + timeout
        for pool in self.card_pools.values():
            ready = pool.next_ready_at()
            if now < ready < wake:
                wake = ready
        age = config.eni_min_age_s
        for eni in self.pool.enis.values():
            if now < eni.seen_at + age < wake:
                wake = eni.seen_at + age
        return wake

    # ------------------------------------------------------------ pods
    def assign(self, key: AllocationKey, pod: PodRef, now: float) -> Allocation:
        """An address for ``key`` (the same one again if it has one); :class:`PoolExhausted`
        when none is ready, in which case :meth:`plan` with ``waiting`` asks for more."""
        if self._ipv6:
            return self._assign_v6(key, pod, now)
        if self.v6 is not None:
            return self._assign_dual(key, pod, now)
        pool = self.pool
        if not self._observes_pods:
            return pool.assign(key, pod, now)
        before = pool.assigned
        allocation = pool.assign(key, pod, now)
        if pool.assigned != before:  # a new allocation, not the same key again
            self._policy.assigned(now)
        return allocation

    def release(self, key: AllocationKey, now: float) -> Allocation | None:
        """Release ``key``'s address (it cools down); None, and no change, if it has none."""
        if self.v6 is not None:
            return self._released_dual(key, self._release_v4(key, now))
        return self._release_v4(key, now)

    def _release_v4(self, key: AllocationKey, now: float) -> Allocation | None:
        """The IPv4 release (the hot path: one pool lookup when no address is orphaned and
        the key is on card 0)."""
        if self._orphans:
            allocation = self.pool.allocations.get(key)
            if allocation is not None and self._orphans.get(allocation.address) is allocation:
                del self.pool.allocations[key], self._orphans[allocation.address]
                return allocation
        released = self.pool.release(key, now)
        if released is None:
            return self._release_extra(key, now)
        if self._observes_pods:
            self._policy.released(now)
        return released

    def _release_extra(self, key: AllocationKey, now: float) -> Allocation | None:
        """A multi-NIC pod's extra attachment: released from its card's pool (None if no
        card holds ``key``)."""
        if self.card_pools and is_extra_attachment(key):
            for pool in self.card_pools.values():
                if key in pool.allocations:
                    return pool.release(key, now)
        return None

    def start_v6_prefix(self, now: float) -> Effect | None:
        """The IPv6 prefix for the primary ENI, in flight, if the node has none (start-up
        asks for it at once, as upstream's does); answer it with :meth:`apply`."""
        if self.v6 is None:
            return None
        effects = self._v6_effects(self.primary_eni(), now)
        return self._start(effects[0], now) if effects else None

    # ------------------------------------------------------------ policy
    def plan(
        self, now: float, waiting: int = 0, card_waiting: Mapping[int, int] | None = None
    ) -> list[Effect]:
        """Effects that bring the pool to its warm targets; each is in flight until
        :meth:`apply` gets its outcome. ``waiting`` is the number of ADDs waiting on card 0;
        ``card_waiting`` maps a network card above 0 to the multi-NIC ADDs waiting on it.

        In prefix mode, secondary IPs left on an ENI (from before prefix delegation) are
        given back when free, as upstream does at start."""
        if self._ipv6:
            self._expire(now)
            v6_effects = self._v6_effects(self.primary_eni(), now)
            if self.config.multi_nic:  # one ENI with a /80 on each card above 0
                v6_effects += self._plan_v6_cards(self._placement(), now)
            return [self._start(e, now) for e in v6_effects]
        v6_effects = [] if self.v6 is None else self._v6_effects(self.primary_eni(), now)
        if waiting < 0:
            raise UsageError(f"waiting must be 0 or more, got {waiting}")
        self.pool.advance(now)
        self._expire(now)
        if self.prefix_mode:
            self._park_secondary_ips()
        self._full_subnets = {s: t for s, t in self._full_subnets.items() if t > now}
        inp = self._policy_input(waiting)
        effects: list[Effect] = []
        if now >= self._growth_paused_until:
            effects = self._policy.grow(self.pool, inp, now)
        growth_in_flight = any(
            isinstance(e, CreateEni | AssignAddresses) for e in self._in_flight.values()
        )
        if (
            not effects
            and not growth_in_flight
            and waiting == 0
            and now - self._last_shrink_at >= self.config.shrink_interval_s
        ):
            effects = self._policy.shrink(self.pool, inp, now)
            if effects:
                self._last_shrink_at = now
        if self.prefix_mode:
            touched = {e.eni_id for e in effects if not isinstance(e, CreateEni)}
            effects += self._give_back_secondary_ips(inp.busy_enis | touched)
        if self.config.multi_nic and now >= self._growth_paused_until:
            effects += self._plan_cards(inp, now, card_waiting or {})
        return [self._start(effect, now) for effect in v6_effects + effects]

    def _park_secondary_ips(self) -> None:
        """Prefix mode: free secondary IPs are set aside (leaving) until given back, so no
        pod gets one (upstream never hands out a /32 in prefix mode)."""
        for state in self.pool.enis.values():
            if state.excluded or state.leaving:
                continue
            for block in list(state.blocks.values()):
                if not block.is_prefix and not block.leaving and not block.busy:
                    self.pool.mark_block_leaving(state.eni_id, block.block_id)

    def _give_back_secondary_ips(self, busy: frozenset[str] | set[str]) -> list[Effect]:
        effects: list[Effect] = []
        for state in sorted(self.pool.enis.values(), key=lambda e: e.rank):
            if state.excluded or state.leaving or state.eni_id in busy:
                continue
            parked = tuple(
                sorted(b.block_id for b in state.blocks.values() if not b.is_prefix and b.leaving)
            )
            if parked:
                effects.append(
                    UnassignAddresses(effect_id=0, eni_id=state.eni_id, ipv4_addresses=parked)
                )
        return effects

    def _expire(self, now: float) -> None:
        """Give up effects unanswered for ``effect_timeout_s``, as if they had failed."""
        deadline = now - self.config.effect_timeout_s
        for effect_id in [i for i, at in self._issued_at.items() if at <= deadline]:
            effect = self._in_flight.pop(effect_id)
            del self._issued_at[effect_id]
            self._given_up.add(effect_id)
            self.notices.append(
                f"effect {effect_id} ({type(effect).__name__}) unanswered for "
                f"{self.config.effect_timeout_s:g} s: given up"
            )
            self._failed(effect, EffectFailed(effect_id, FailureKind.OTHER, "expired"), now)

    def _policy_input(self, waiting: int) -> PolicyInput:
        subnet_id, security_groups = self._placement()
        busy = (
            frozenset(e.eni_id for e in self._in_flight.values() if not isinstance(e, CreateEni))
            | self._suspect_enis
        )
        full = set(self._full_enis)
        if self._full_subnets:
            full |= {
                e.eni_id for e in self.pool.enis.values()
                if e.info.subnet_id in self._full_subnets
            }  # fmt: skip
        return PolicyInput(
            config=self.config,
            prefix_mode=self.prefix_mode,
            per_eni=self.per_eni,
            max_enis=self.max_enis,
            max_pods=self.max_pods,
            pending_addresses=self._pending_addresses(),
            pending_enis=sum(
                isinstance(e, CreateEni) and e.network_card == 0 for e in self._in_flight.values()
            ),
            busy_enis=busy,
            waiting=waiting,
            subnet_id=subnet_id,
            security_groups=security_groups,
            full_enis=frozenset(full),
        )

    def _pending_addresses(self) -> int:
        pending = 0
        for e in self._in_flight.values():
            if isinstance(e, CreateEni) and e.network_card != 0:
                continue
            if isinstance(e, AssignAddresses) and e.eni_id not in self.pool.enis:
                continue
            if isinstance(e, CreateEni | AssignAddresses):
                pending += e.ipv4_count + e.prefix_count * IPS_PER_PREFIX
        return pending

    def use_eniconfig(self, subnet_id: str | None, security_groups: tuple[str, ...]) -> None:
        """New ENIs go to the node's ENIConfig's subnet with its security groups (the
        primary ENI's when it names none), from now on; ``subnet_id`` None: the ENIConfig
        is missing, so no new ENI is created (never one in the wrong subnet) until it
        exists. Existing ENIs are kept and still topped up."""
        self._eniconfig = (subnet_id or "", tuple(security_groups))

    @property
    def eniconfig_missing(self) -> bool:
        """Custom networking by ENIConfig is on and the node's ENIConfig is missing: no new
        ENI is created until it exists."""
        return self._eniconfig is not None and not self._eniconfig[0]

    def cap_max_pods(self, node_max_pods: int | None) -> None:
        """The Node's capacity ``pods`` (Kubernetes) caps the pool's max pods (None: the
        instance's limits or ``MAX_PODS`` alone)."""
        base = self._max_pods_base
        self.max_pods = base if not node_max_pods else min(base, node_max_pods)

    def _placement(self) -> tuple[str, tuple[str, ...]]:
        placement = self.config.placement
        primary = self.primary_eni()
        if self._eniconfig is not None:
            subnet, groups = self._eniconfig
            return subnet, groups or (primary.security_groups if primary else ())
        if placement.custom_networking or placement.subnet_id:
            groups = placement.security_groups or (primary.security_groups if primary else ())
            return placement.subnet_id, groups
        default_groups = primary.security_groups if primary else ()
        if placement.subnet_discovery and primary is not None:
            chosen = choose_discovered_subnet(
                [s for s in self._subnets if s.subnet_id not in self._full_subnets],
                self._availability_zone,
                placement.cluster_name,
                primary.subnet_id,
            )
            if chosen is not None:
                return chosen.subnet_id, placement.security_groups or default_groups
        if primary is None:
            return "", ()
        return primary.subnet_id, placement.security_groups or default_groups

    def observe_subnets(self, subnets: Iterable[Subnet], availability_zone: str) -> None:
        """Subnets seen by the shell (for subnet discovery) and the node's zone."""
        self._subnets = tuple(subnets)
        self._availability_zone = availability_zone

    def _start(self, effect: Effect, now: float) -> Effect:
        numbered = attrs.evolve(effect, effect_id=self._next_effect_id)
        if isinstance(numbered, CreateEni) and numbered.device_index < 0:
            numbered = attrs.evolve(
                numbered, device_index=self._free_device_index(numbered.network_card)
            )
        self._next_effect_id += 1
        self._in_flight[numbered.effect_id] = numbered
        self._issued_at[numbered.effect_id] = now
        if isinstance(numbered, UnassignAddresses):
            for block in (*numbered.ipv4_addresses, *numbered.prefixes):
                self._pool_of(numbered.eni_id).mark_block_leaving(numbered.eni_id, block)
        elif isinstance(numbered, FreeEni):
            self._pool_of(numbered.eni_id).mark_eni_leaving(numbered.eni_id)
        return numbered

    def apply(self, outcome: Outcome, now: float) -> tuple[Allocation, ...]:
        """Feed back an effect's outcome. Returns allocations force-removed as a result
        (only when the cloud reports that an ENI the pool still used is gone).

        Atomic: the outcome is checked against its effect (kind, ENI, well-formed addresses
        not already in the pool) before anything changes; a :class:`UsageError` or
        :class:`DataError` leaves the effect in flight and the pool as it was. The outcome of
        an effect given up after ``effect_timeout_s`` is ignored (returns ``()``)."""
        effect = self._in_flight.get(outcome.effect_id)
        if effect is None:
            if outcome.effect_id in self._given_up:
                self._given_up.discard(outcome.effect_id)
                return ()
            raise UsageError(f"no effect {outcome.effect_id} is in flight")
        target = (
            self._pool_of(effect.eni_id)
            if not isinstance(effect, CreateEni)
            else (self._pool_for_card(effect.network_card))
        )
        check_outcome(effect, outcome, target)
        del self._in_flight[outcome.effect_id]
        del self._issued_at[outcome.effect_id]
        self._advance(now)
        if isinstance(outcome, EffectFailed):
            return self._failed(effect, outcome, now)
        if isinstance(effect, CreateEni | AssignAddresses) and not (
            self._ipv6 or self._v6_only_effect(effect)
        ):
            self._policy.succeeded(effect)
        if isinstance(outcome, EniCreated):
            self._add_observed_eni(outcome.eni, now)
        elif isinstance(outcome, AddressesAssigned):
            if outcome.ipv6_prefixes and self.v6 is not None:
                self.v6.add(outcome.eni_id, outcome.ipv6_prefixes)
            for address in outcome.ipv4_addresses:
                target.add_block(outcome.eni_id, address, False, now)
            for prefix in outcome.prefixes:
                target.add_block(outcome.eni_id, prefix, True, now)
        elif isinstance(effect, UnassignAddresses):
            self._drop_blocks(effect.eni_id, (*effect.ipv4_addresses, *effect.prefixes), now)
        elif isinstance(effect, FreeEni):
            return self._drop_eni(effect.eni_id, now)
        if self.prefix_mode:
            self._park_secondary_ips()
        self._rebind_orphans()
        return ()

    def _failed(self, effect: Effect, failure: EffectFailed, now: float) -> tuple[Allocation, ...]:
        """Carry out the reactions :mod:`ipamcore.reactions` lists for this failure."""
        if self._ipv6 and self._card_v6_failed(effect, failure.message, now):
            return ()
        if self._v6_only_effect(effect):
            self._v6_failed(failure.message, now)
            return ()
        removed: tuple[Allocation, ...] = ()
        for reaction in reactions(effect, failure.kind):
            if reaction is Reaction.BACK_OFF:
                primary = self.primary_eni()
                until = self._policy.throttled(effect, primary.eni_id if primary else "", now)
                self._growth_paused_until = max(self._growth_paused_until, until)
                self._card_throttled(effect, now)
            elif reaction is Reaction.PAUSE_GROWTH:
                self._pause_growth(now + self.config.throttle_pause_s)
            elif reaction is Reaction.PAUSE_GROWTH_LONG:
                self._pause_growth(now + self.config.subnet_full_pause_s)
            elif reaction is Reaction.AVOID_SUBNET:
                self._avoid_subnet(effect, now)
            elif reaction is Reaction.AVOID_ENI:
                assert isinstance(effect, AssignAddresses)
                self._full_enis.add(effect.eni_id)
            elif reaction is Reaction.SUSPECT_ENI:
                assert isinstance(effect, AssignAddresses)
                self._suspect_enis.add(effect.eni_id)
            elif reaction is Reaction.FORGET_BLOCKS:
                assert isinstance(effect, UnassignAddresses)
                self._drop_blocks(effect.eni_id, (*effect.ipv4_addresses, *effect.prefixes), now)
            elif reaction is Reaction.RESTORE_BLOCKS:
                assert isinstance(effect, UnassignAddresses)
                for block in (*effect.ipv4_addresses, *effect.prefixes):
                    self._pool_of(effect.eni_id).unmark_block_leaving(effect.eni_id, block)
                if self.prefix_mode:
                    self._park_secondary_ips()
            elif reaction is Reaction.FORGET_ENI:
                assert isinstance(effect, FreeEni)
                removed = self._drop_eni(effect.eni_id, now)
            elif reaction is Reaction.RESTORE_ENI:
                assert isinstance(effect, FreeEni)
                self._pool_of(effect.eni_id).unmark_eni_leaving(effect.eni_id)
            elif reaction is Reaction.SHRINK_LATER:
                self._last_shrink_at = now
            elif reaction is Reaction.HOLD_POOL:
                self._policy.shrink_throttled(now)
        return removed

    def _pause_growth(self, until: float) -> None:
        self._growth_paused_until = max(self._growth_paused_until, until)

    def _avoid_subnet(self, effect: Effect, now: float) -> None:
        """A top-up refused for a full subnet: with subnet discovery, stop topping up ENIs
        in that subnet and place new ENIs elsewhere (upstream creates an ENI in another
        subnet in the same pass); without it, pause growth."""
        state = self.pool.enis.get(effect.eni_id) if isinstance(effect, AssignAddresses) else None
        if not self.config.placement.subnet_discovery or state is None:
            self._pause_growth(now + self.config.subnet_full_pause_s)
            return
        self._full_subnets[state.info.subnet_id] = now + self.config.subnet_full_pause_s

    def _drop_blocks(self, eni_id: str, blocks: Sequence[str], now: float) -> None:
        pool = self._pool_of(eni_id)
        state = pool.enis.get(eni_id)
        for block in blocks:
            self._recently_released[block] = now
            if state is not None and block in state.blocks:
                pool.remove_block(eni_id, block)

    def _drop_eni(self, eni_id: str, now: float) -> tuple[Allocation, ...]:
        pool = self._pool_of(eni_id)
        state = pool.enis.get(eni_id)
        if state is None:
            return ()
        self._recently_released[eni_id] = now
        for block in state.blocks:
            self._recently_released[block] = now
        return self._orphan(pool.remove_eni(eni_id))

    # ------------------------------------------------------- checkpoint
    def checkpoint(self) -> Checkpoint:
        """The durable state: allocations and every known release time.

        ENI id and device index are not stored (upstream's format has no field for them); they
        are derived again from the pool when the checkpoint is restored.
        """
        return Checkpoint(
            allocations=tuple(
                Allocation(
                    key=a.key, pod=a.pod, ipv4=a.ipv4, ipv6=a.ipv6, allocated_at=a.allocated_at
                )  # eni_id and device_index left at their defaults: not stored
                for a in self.allocations()
            ),
            released_at=tuple(sorted(r for pool in self._pools() for r in pool.released_times())),
        )

    def released_time(self, address: str) -> float | None:
        """The release time :meth:`checkpoint` holds for ``address`` (None: none), in O(1):
        what a writer of changes (:class:`ipamcore.checkpoint.ChangeTracker`) reads."""
        at = self.pool.released_time(address)
        if at is None and self.card_pools:  # an address is in one pool at most
            for pool in self.card_pools.values():
                at = pool.released_time(address)
                if at is not None:
                    break
        return at

    def restore(
        self,
        checkpoint: Checkpoint,
        now: float,
        keep: Callable[[Allocation], bool] | None = None,
    ) -> RestoreReport:
        """Re-bind checkpointed allocations to the pool (after :meth:`load`).

        An allocation whose address is no longer on any ENI, or is taken twice, is dropped;
        one that ``keep`` rejects (its pod is gone) is dropped and its address cools down from
        ``now``. Release times are re-applied, so cooldowns survive a restart.
        """
        restored: list[Allocation] = []
        dropped: list[tuple[Allocation, str]] = []
        for allocation in checkpoint.allocations:
            if keep is not None and not keep(allocation):
                dropped.append((allocation, "pod is gone"))
                pool = self._pool_with(allocation.ipv4 or "")
                slot = pool.slots.get(allocation.ipv4 or "")
                if slot is not None and slot.state is SlotState.FREE:
                    pool.mark_released(slot, now, now)
                continue
            if allocation.ipv4 is None:
                restored.append(self._restore_v6(allocation))
                continue
            v6 = allocation.ipv6 if self.v6 is not None else None
            pool = self._pool_with(allocation.ipv4)
            slot = pool.slots.get(allocation.ipv4)
            if slot is not None and self.prefix_mode and slot.block == allocation.ipv4:
                # A secondary IP set aside in prefix mode: its pod still holds it.
                pool.unmark_block_leaving(slot.eni_id, slot.block)
            bound = pool.bind_address(allocation)
            if bound is None:
                reason = (
                    "address is on no ENI"
                    if allocation.ipv4 not in pool.slots
                    else "address or key is already taken"
                )
                dropped.append((allocation, reason))
            elif v6 is not None:
                restored.append(self._restore_dual(bound, v6))
            else:
                restored.append(bound)
        for address, released_at in checkpoint.released_at:
            pool = self._pool_with(address)
            slot = pool.slots.get(address)
            fresher = slot is not None and slot.released_at < released_at
            if slot is not None and slot.state is SlotState.FREE and fresher:
                pool.mark_released(slot, released_at, now)
        if self.prefix_mode:
            self._park_secondary_ips()
        return RestoreReport(restored=tuple(restored), dropped=tuple(dropped))

    # ------------------------------------------------------------ views
    def eni_views(self, now: float) -> list[EniView]:
        """Every ENI, block and address as of ``now`` (a query: the pool's time does not
        move; an address whose cooldown ended by ``now`` shows as free)."""
        views = []
        v6_blocks = {} if self.v6 is None else self.v6.blocks(self.allocations())
        every = [(s, pool) for pool in self._pools() for s in pool.enis.values()]
        for state, pool in sorted(every, key=lambda e: e[0].rank):
            info = state.info
            blocks = tuple(
                BlockView(
                    block_id=b.block_id,
                    is_prefix=b.is_prefix,
                    addresses=tuple(self._address_view(pool, a, now) for a in b.addresses),
                )
                for b in sorted(state.blocks.values(), key=lambda b: (b.rank, b.block_id))
            )
            views.append(
                EniView(
                    eni_id=info.eni_id,
                    mac=info.mac,
                    device_index=info.device_index,
                    network_card=info.network_card,
                    subnet_id=info.subnet_id,
                    subnet_cidr=info.subnet_cidr,
                    primary_ip=info.primary_ip,
                    is_primary=info.counts_as_primary,
                    is_trunk=info.is_trunk,
                    is_efa=info.is_efa,
                    unmanaged=info.unmanaged,
                    excluded=state.excluded,
                    leaving=state.leaving,
                    blocks=blocks,
                    ipv6_blocks=v6_blocks.get(info.eni_id, ()),
                )
            )
        return views

    def _address_view(self, pool: AddressPool, address: str, now: float) -> AddressView:
        slot = pool.slots[address]
        released = None if slot.released_at == -INF else slot.released_at
        if slot.state is SlotState.ASSIGNED and slot.key is not None:
            allocation = pool.allocations[slot.key]
            return AddressView(
                address, "assigned", slot.key, allocation.pod, allocation.allocated_at, released
            )
        if slot.state is SlotState.LEAVING or pool.enis[slot.eni_id].leaving:
            return AddressView(address, "leaving", released_at=released)
        state = "cooling" if slot.cooling and slot.ready_at > now else "free"
        return AddressView(address, state, released_at=released)
