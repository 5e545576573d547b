"""The node's IPAM state machine: pool + warm-pool policy + in-flight effects + reconciliation.

This is the one object a daemon, a simulator or an embedding program drives:

* pods: :meth:`Ipam.assign` / :meth:`Ipam.release` (O(log n), deterministic choice);
* policy: :meth:`Ipam.plan` returns effects, the shell performs them and reports each
  outcome with :meth:`Ipam.apply`;
* reconciliation: :meth:`Ipam.reconcile` with an observed snapshot of the instance's ENIs;
* persistence: :meth:`Ipam.checkpoint` / :meth:`Ipam.restore`.

Every method that depends on time takes ``now`` (Unix seconds, float). Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from ipamcore import adaptive
from ipamcore.checkpoint import Checkpoint
from ipamcore.config import PolicyName, PoolConfig, choose_discovered_subnet
from ipamcore.effects import AssignAddresses, CreateEni, Effect, FreeEni, UnassignAddresses
from ipamcore.errors import FailureKind, PoolExhausted, UsageError
from ipamcore.events import (
    AddressesAssigned,
    AddressesUnassigned,
    EffectFailed,
    EniCreated,
    EniFreed,
    Outcome,
)
from ipamcore.limits import InstanceLimits
from ipamcore.model import (
    IPS_PER_PREFIX,
    Allocation,
    AllocationKey,
    ObservedEni,
    ObservedNode,
    PodRef,
    Subnet,
)
from ipamcore.policy import PolicyInput, decide_growth, decide_shrink
from ipamcore.pool import AddressPool
from ipamcore.pool_parts import EniState, SlotState
from ipamcore.reconcile import ReconcileDiff, ReconcileReport, diff, observed_blocks
from ipamcore.views import AddressView, BlockView, EniView, PoolStats

INF = float("inf")


@attrs.frozen
class RestoreReport:
    """What :meth:`Ipam.restore` did: allocations restored, and those dropped with a reason."""

    restored: tuple[Allocation, ...] = ()
    dropped: tuple[tuple[Allocation, str], ...] = ()


class Ipam:
    """The IPAM state machine of one node. Not thread-safe: drive it from one task or lock."""

    def __init__(self, config: PoolConfig, limits: InstanceLimits) -> None:
        self.config = config
        self.limits = limits
        self.notices: list[str] = []
        self.prefix_mode = config.prefix_delegation and limits.supports_prefix_delegation
        if config.prefix_delegation and not self.prefix_mode:
            self.notices.append(
                f"ENABLE_PREFIX_DELEGATION ignored: {limits.instance_type} is neither nitro nor "
                "bare metal; using secondary IPs"
            )
        self.pool = AddressPool(config.cooldown_s)
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
        self._next_effect_id = 1
        self._growth_paused_until = -INF
        self._last_shrink_at = -INF
        self._recently_released: dict[str, float] = {}
        self._subnets: tuple[Subnet, ...] = ()
        self._availability_zone = ""
        self._v6_next: dict[str, int] = {}
        adaptive_policy = config.policy is PolicyName.ADAPTIVE
        self._demand = adaptive.Demand(config.adaptive.rate_window_s) if adaptive_policy else None
        self._backoff = adaptive.Backoff(config.adaptive)
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
        return dict(self._in_flight)

    def get(self, key: AllocationKey) -> Allocation | None:
        return self.pool.allocations.get(key)

    @property
    def orphaned(self) -> Mapping[str, Allocation]:
        """Allocations whose address the instance no longer holds (see :meth:`reconcile`)."""
        return dict(self._orphans)

    def allocations(self) -> list[Allocation]:
        return sorted(self.pool.allocations.values(), key=lambda a: str(a.key))

    def find_by_pod(self, namespace: str, name: str) -> list[Allocation]:
        return self.pool.find_by_pod(namespace, name)

    def eni(self, eni_id: str) -> ObservedEni | None:
        state = self.pool.enis.get(eni_id)
        return state.info if state else None

    def primary_eni(self) -> ObservedEni | None:
        for state in self.pool.enis.values():
            if _is_primary(state.info):
                return state.info
        return None

    def stats(self, now: float) -> PoolStats:
        self.pool.advance(now)
        pool = self.pool
        return PoolStats(
            enis=len(pool.enis),
            max_enis=self.max_enis,
            total=pool.usable_total,
            assigned=pool.assigned,
            cooling=pool.cooling,
            available=pool.available,
            leaving=pool.leaving,
            prefixes=pool.prefix_total(),
            pending=self._pending_addresses(),
            in_flight=len(self._in_flight),
            max_pods=self.max_pods,
            max_addresses=self.max_enis * self.per_eni * self._unit,
        )

    # ------------------------------------------------------------ pods
    def assign(self, key: AllocationKey, pod: PodRef, now: float) -> Allocation:
        """An address for ``key`` (the same one again if it has one); :class:`PoolExhausted`
        when none is ready, in which case :meth:`plan` with ``waiting`` asks for more."""
        if self.config.ipv6:
            return self._assign_v6(key, pod, now)
        if self._demand is not None and key not in self.pool.allocations:
            allocation = self.pool.assign(key, pod, now)
            self._demand.arrival(now)
            return allocation
        return self.pool.assign(key, pod, now)

    def release(self, key: AllocationKey, now: float) -> Allocation | None:
        """Release ``key``'s address (it cools down); None, and no change, if it has none."""
        if self._orphans:
            allocation = self.pool.allocations.get(key)
            if allocation is not None and self._orphans.get(allocation.address) is allocation:
                del self.pool.allocations[key], self._orphans[allocation.address]
                return allocation
        released = self.pool.release(key, now)
        if released is not None and self._demand is not None:
            self._demand.release(now)
        return released

    def _assign_v6(self, key: AllocationKey, pod: PodRef, now: float) -> Allocation:
        existing = self.pool.allocations.get(key)
        if existing is not None:
            return existing
        for state in sorted(self.pool.enis.values(), key=lambda e: e.rank):
            if state.info.ipv6_prefixes and not state.info.unmanaged:
                prefix = state.info.ipv6_prefixes[0]
                offset = self._v6_next.get(prefix, 1)
                self._v6_next[prefix] = offset + 1
                net = ipaddress.ip_network(prefix, strict=False)
                allocation = Allocation(
                    key=key,
                    pod=pod,
                    ipv4=None,
                    ipv6=str(net.network_address + offset),
                    allocated_at=now,
                    eni_id=state.eni_id,
                    device_index=state.info.device_index,
                )
                self.pool.record_allocation(allocation)
                return allocation
        raise PoolExhausted("no ENI carries an IPv6 prefix")

    # ------------------------------------------------------------ policy
    def plan(self, now: float, waiting: int = 0) -> list[Effect]:
        """Effects that bring the pool to its warm targets; each is in flight until
        :meth:`apply` gets its outcome. ``waiting`` is the number of ADDs waiting."""
        if self.config.ipv6:
            return []
        self.pool.advance(now)
        inp = self._policy_input(waiting)
        effects: list[Effect] = []
        demand = self._demand
        situation = self._backoff.situation(demand, now) if demand is not None else None
        tuning = self.config.adaptive
        if now >= self._growth_paused_until:
            if situation is not None:
                effects = adaptive.decide_growth(self.pool, inp, situation, tuning)
            else:
                effects = decide_growth(self.pool, inp)
        growth_in_flight = any(
            isinstance(e, CreateEni | AssignAddresses) for e in self._in_flight.values()
        )
        if (
            not effects
            and not growth_in_flight
            and waiting == 0
            and now - self._last_shrink_at >= self.config.shrink_interval_s
        ):
            if situation is not None:
                effects = adaptive.decide_shrink(self.pool, inp, situation, tuning, now)
            else:
                effects = decide_shrink(self.pool, inp, now)
            if effects:
                self._last_shrink_at = now
        return [self._start(effect) for effect in effects]

    def _policy_input(self, waiting: int) -> PolicyInput:
        subnet_id, security_groups = self._placement()
        busy = frozenset(
            e.eni_id for e in self._in_flight.values() if not isinstance(e, CreateEni)
        ) | self._suspect_enis
        return PolicyInput(
            config=self.config,
            prefix_mode=self.prefix_mode,
            per_eni=self.per_eni,
            max_enis=self.max_enis,
            max_pods=self.max_pods,
            pending_addresses=self._pending_addresses(),
            pending_enis=sum(isinstance(e, CreateEni) for e in self._in_flight.values()),
            busy_enis=busy,
            waiting=waiting,
            subnet_id=subnet_id,
            security_groups=security_groups,
            count_cooling_as_available=self.config.policy is PolicyName.UPSTREAM_FAITHFUL,
            one_step_growth=self.config.policy is PolicyName.UPSTREAM_FAITHFUL,
        )

    def _pending_addresses(self) -> int:
        pending = 0
        for e in self._in_flight.values():
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
                list(self._subnets), self._availability_zone, placement.cluster_name,
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

    def _start(self, effect: Effect) -> Effect:
        numbered = attrs.evolve(effect, effect_id=self._next_effect_id)
        if isinstance(numbered, CreateEni) and numbered.device_index == 0:
            numbered = attrs.evolve(numbered, device_index=self._free_device_index())
        self._next_effect_id += 1
        self._in_flight[numbered.effect_id] = numbered
        if isinstance(numbered, UnassignAddresses):
            for block in (*numbered.ipv4_addresses, *numbered.prefixes):
                self.pool.mark_block_leaving(numbered.eni_id, block)
        elif isinstance(numbered, FreeEni):
            self.pool.mark_eni_leaving(numbered.eni_id)
        return numbered

    def _free_device_index(self) -> int:
        """The lowest device index (network card 0, above the primary's 0) that no attached
        ENI uses and no CreateEni in flight has reserved."""
        taken = {s.info.device_index for s in self.pool.enis.values() if s.info.network_card == 0}
        taken |= {e.device_index for e in self._in_flight.values() if isinstance(e, CreateEni)}
        index = 1
        while index in taken:
            index += 1
        return index

    def apply(self, outcome: Outcome, now: float) -> tuple[Allocation, ...]:
        """Feed back an effect's outcome. Returns allocations force-removed as a result
        (only when the cloud reports that an ENI the pool still used is gone)."""
        effect = self._in_flight.pop(outcome.effect_id, None)
        if effect is None:
            raise UsageError(f"no effect {outcome.effect_id} is in flight")
        self.pool.advance(now)
        if isinstance(outcome, EffectFailed):
            return self._failed(effect, outcome, now)
        if isinstance(effect, CreateEni | AssignAddresses):
            self._backoff.succeeded(effect)
        if isinstance(outcome, EniCreated) and isinstance(effect, CreateEni):
            self._add_observed_eni(outcome.eni, now)
        elif isinstance(outcome, AddressesAssigned) and isinstance(effect, AssignAddresses):
            if outcome.eni_id in self.pool.enis:
                for address in outcome.ipv4_addresses:
                    self.pool.add_block(outcome.eni_id, address, False, now)
                for prefix in outcome.prefixes:
                    self.pool.add_block(outcome.eni_id, prefix, True, now)
        elif isinstance(outcome, AddressesUnassigned) and isinstance(effect, UnassignAddresses):
            self._drop_blocks(effect.eni_id, (*effect.ipv4_addresses, *effect.prefixes), now)
        elif isinstance(outcome, EniFreed) and isinstance(effect, FreeEni):
            return self._drop_eni(effect.eni_id, now)
        else:
            self._in_flight[outcome.effect_id] = effect
            raise UsageError(f"outcome {type(outcome).__name__} does not answer {effect!r}")
        self._rebind_orphans()
        return ()

    def _failed(self, effect: Effect, failure: EffectFailed, now: float) -> tuple[Allocation, ...]:
        kind = failure.kind
        if isinstance(effect, AssignAddresses) and kind is FailureKind.NOT_FOUND:
            # EC2 says the ENI is gone. One answer is not proof (a new ENI can be NotFound
            # for a while), so the ENI is only left alone by the policy until reconciliation,
            # which sees the whole instance, removes it or clears it. Retrying it at once
            # would keep it busy, and reconciliation skips busy ENIs: it would never go.
            self._suspect_enis.add(effect.eni_id)
        if isinstance(effect, CreateEni | AssignAddresses):
            if kind in (FailureKind.SUBNET_FULL, FailureKind.LIMIT_EXCEEDED):
                self._growth_paused_until = now + self.config.subnet_full_pause_s
            elif kind is FailureKind.THROTTLED and self._demand is not None:
                primary = self.primary_eni()
                self._backoff.throttled(effect, primary.eni_id if primary else "", now)
            elif kind in (FailureKind.THROTTLED, FailureKind.OTHER):
                self._growth_paused_until = now + self.config.throttle_pause_s
            return ()
        if kind is FailureKind.THROTTLED and self._demand is not None:
            self._backoff.congested(now)  # calls are scarce: hold what the node has
        if isinstance(effect, UnassignAddresses):
            blocks = (*effect.ipv4_addresses, *effect.prefixes)
            if kind is FailureKind.NOT_FOUND:
                self._drop_blocks(effect.eni_id, blocks, now)
            else:
                for block in blocks:
                    self.pool.unmark_block_leaving(effect.eni_id, block)
            self._last_shrink_at = now
            return ()
        if kind is FailureKind.NOT_FOUND:
            return self._drop_eni(effect.eni_id, now)
        self.pool.unmark_eni_leaving(effect.eni_id)
        self._last_shrink_at = now
        return ()

    def _drop_blocks(self, eni_id: str, blocks: Sequence[str], now: float) -> None:
        state = self.pool.enis.get(eni_id)
        for block in blocks:
            self._recently_released[block] = now
            if state is not None and block in state.blocks:
                self.pool.remove_block(eni_id, block)

    def _drop_eni(self, eni_id: str, now: float) -> tuple[Allocation, ...]:
        state = self.pool.enis.get(eni_id)
        if state is None:
            return ()
        self._recently_released[eni_id] = now
        for block in state.blocks:
            self._recently_released[block] = now
        return self._orphan(self.pool.remove_eni(eni_id))

    def _orphan(self, removed: Iterable[Allocation]) -> tuple[Allocation, ...]:
        """Keep force-removed allocations on record (their pods still hold the address)."""
        out = tuple(removed)
        for allocation in out:
            if allocation.ipv4 is not None:
                orphan = allocation._replace(eni_id="", device_index=0)
                self.pool.record_allocation(orphan)
                self._orphans[allocation.ipv4] = orphan
        return out

    def _rebind_orphans(self) -> None:
        """An orphaned address that is back on an ENI is bound to its pod again at once."""
        for address, orphan in list(self._orphans.items()):
            if address not in self.pool.slots:
                continue
            del self.pool.allocations[orphan.key]
            if self.pool.bind_address(orphan) is None:  # cannot happen: nothing ran between
                self.pool.record_allocation(orphan)
                continue
            del self._orphans[address]

    # ------------------------------------------------------- reconciliation
    def _excluded(self, info: ObservedEni) -> bool:
        if info.unmanaged or info.is_trunk or info.is_efa or self.config.ipv6:
            return True
        return self.config.placement.custom_networking and _is_primary(info)

    def _add_observed_eni(self, info: ObservedEni, now: float) -> None:
        state = self.pool.enis.get(info.eni_id)
        if state is None:
            state = self.pool.add_eni(info, now, self._excluded(info))
        self._add_blocks(state, info, now)

    def _add_blocks(self, state: EniState, info: ObservedEni, now: float) -> None:
        for block, is_prefix in sorted(observed_blocks(info).items()):
            self.pool.add_block(state.eni_id, block, is_prefix, now)

    def reconcile(self, observed: ObservedNode, now: float) -> ReconcileReport:
        """Make the pool match what the cloud shows (see :mod:`ipamcore.reconcile`)."""
        self.pool.advance(now)
        grace = self.config.reconcile_grace_s
        self._recently_released = {
            k: t for k, t in self._recently_released.items() if now - t < grace
        }
        busy = frozenset(
            e.eni_id for e in self._in_flight.values() if not isinstance(e, CreateEni)
        )
        changes = diff(self.pool, observed, now, grace, self._recently_released, busy)
        report = self._apply_diff(changes, now)
        shown = {e.eni_id for e in observed.enis}
        self._suspect_enis = {
            e for e in self._suspect_enis if e in self.pool.enis and e not in shown
        }  # still suspect: absent, but kept by the grace for new ENIs
        return report

    def load(self, enis: Iterable[ObservedEni], now: float) -> ReconcileReport:
        """The first view of the instance at start: every ENI and address is taken as is."""
        changes = ReconcileDiff(
            add_enis=tuple(e for e in enis if e.eni_id not in self.pool.enis)
        )
        return self._apply_diff(changes, now)

    def _apply_diff(self, changes: ReconcileDiff, now: float) -> ReconcileReport:
        removed: list[Allocation] = []
        for info in changes.add_enis:
            self._add_observed_eni(info, now)
        for eni_id, block, is_prefix in changes.add_blocks:
            self.pool.add_block(eni_id, block, is_prefix, now)
        for eni_id, block in changes.remove_blocks:
            removed.extend(self.pool.remove_block(eni_id, block))
        for eni_id in changes.remove_enis:
            removed.extend(self.pool.remove_eni(eni_id))
        self._rebind_orphans()
        return ReconcileReport(diff=changes, force_removed=self._orphan(removed))

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
            released_at=tuple(sorted(self.pool.released_times())),
        )

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
                slot = self.pool.slots.get(allocation.ipv4 or "")
                if slot is not None and slot.state is SlotState.FREE:
                    self.pool.mark_released(slot, now, now)
                continue
            if allocation.ipv4 is None:
                restored.append(self._restore_v6(allocation))
                continue
            bound = self.pool.bind_address(allocation)
            if bound is None:
                reason = (
                    "address is on no ENI"
                    if allocation.ipv4 not in self.pool.slots
                    else "address or key is already taken"
                )
                dropped.append((allocation, reason))
            else:
                restored.append(bound)
        for address, released_at in checkpoint.released_at:
            slot = self.pool.slots.get(address)
            fresher = slot is not None and slot.released_at < released_at
            if slot is not None and slot.state is SlotState.FREE and fresher:
                self.pool.mark_released(slot, released_at, now)
        return RestoreReport(restored=tuple(restored), dropped=tuple(dropped))

    def _restore_v6(self, allocation: Allocation) -> Allocation:
        assert allocation.ipv6 is not None
        address = ipaddress.ip_address(allocation.ipv6)
        for state in self.pool.enis.values():
            for prefix in state.info.ipv6_prefixes:
                net = ipaddress.ip_network(prefix, strict=False)
                if address in net:
                    offset = int(address) - int(net.network_address)
                    self._v6_next[prefix] = max(self._v6_next.get(prefix, 1), offset + 1)
                    allocation = allocation._replace(
                        eni_id=state.eni_id, device_index=state.info.device_index
                    )
        self.pool.record_allocation(allocation)
        return allocation

    # ------------------------------------------------------------ views
    def eni_views(self, now: float) -> list[EniView]:
        self.pool.advance(now)
        views = []
        for state in sorted(self.pool.enis.values(), key=lambda e: e.rank):
            info = state.info
            blocks = tuple(
                BlockView(
                    block_id=b.block_id,
                    is_prefix=b.is_prefix,
                    addresses=tuple(self._address_view(a) for a in b.addresses),
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
                    is_primary=_is_primary(info),
                    is_trunk=info.is_trunk,
                    is_efa=info.is_efa,
                    unmanaged=info.unmanaged,
                    excluded=state.excluded,
                    leaving=state.leaving,
                    blocks=blocks,
                )
            )
        return views

    def _address_view(self, address: str) -> AddressView:
        slot = self.pool.slots[address]
        released = None if slot.released_at == -INF else slot.released_at
        if slot.state is SlotState.ASSIGNED and slot.key is not None:
            allocation = self.pool.allocations[slot.key]
            return AddressView(
                address, "assigned", slot.key, allocation.pod, allocation.allocated_at, released
            )
        if slot.state is SlotState.LEAVING or self.pool.enis[slot.eni_id].leaving:
            return AddressView(address, "leaving", released_at=released)
        state = "cooling" if self.pool.is_cooling(slot) else "free"
        return AddressView(address, state, released_at=released)


def _is_primary(info: ObservedEni) -> bool:
    return info.is_primary or (info.device_index == 0 and info.network_card == 0)
