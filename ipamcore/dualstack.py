"""The IPv6 half of :class:`ipamcore.ipam.Ipam`: IPv6 only (upstream's IPv6 mode: pods take
addresses from the primary ENI's /80 prefix, warm targets ignored) and dual stack (beyond
upstream: each pod gets an IPv4 address from the warm pool and an IPv6 one from the prefix,
both or neither). The prefix bookkeeping itself is :class:`ipamcore.ipv6.V6Prefixes`. Pure,
like the rest of the core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipamcore.config import PoolConfig
from ipamcore.effects import AssignAddresses, Effect
from ipamcore.errors import PoolExhausted
from ipamcore.ipv6 import V6Prefixes, V6Stats
from ipamcore.model import Allocation, AllocationKey, ObservedEni, PodRef
from ipamcore.policy import Policy
from ipamcore.pool import AddressPool
from ipamcore.views import PoolStats

INF = float("inf")
IPV6_ONLY_NOTICE = (
    "IPv6 mode: WARM_ENI_TARGET, WARM_IP_TARGET, MINIMUM_IP_TARGET and WARM_PREFIX_TARGET are "
    "ignored; pods take addresses from the primary ENI's /80 prefix"
)


class DualStack:
    """IPv6 addresses for pods: :attr:`v6` holds the ENIs' delegated prefixes (None when
    IPv6 is off); in dual stack, :attr:`_dual` the IPv6 address of each key whose IPv4 the
    pool holds."""

    config: PoolConfig
    pool: AddressPool
    notices: list[str]
    max_enis: int
    max_pods: int
    _in_flight: dict[int, Effect]
    _policy: Policy
    _observes_pods: bool

    if TYPE_CHECKING:

        def get(self, key: AllocationKey) -> Allocation | None: ...

        def _pool_of(self, eni_id: str) -> AddressPool: ...

    def _init_v6(self) -> None:
        config = self.config
        self._ipv6 = config.ipv6_only
        self.v6: V6Prefixes | None = V6Prefixes() if config.ipv6 else None
        self._dual: dict[AllocationKey, str] = {}
        self._v6_retry_at = -INF
        if config.ipv6_only:
            self.notices.append(IPV6_ONLY_NOTICE)

    def v6_stats(self) -> V6Stats:
        """The IPv6 figures (IPv6 only or dual stack; zeros otherwise)."""
        return V6Stats() if self.v6 is None else self.v6.stats()

    def _stats_v6(self) -> PoolStats:
        """IPv6 mode: every address of each ENI's delegated prefix counts (upstream's
        ``GetIPStats("6")``), no cooldown."""
        v6 = self.v6_stats() if self.v6 is None else self.v6.stats(0)  # card 0's (multi-NIC)
        total, prefixes, assigned = v6.total, v6.prefixes, v6.assigned
        return PoolStats(
            enis=len(self.pool.enis), max_enis=self.max_enis, total=total, assigned=assigned,
            cooling=0, available=max(total - assigned, 0), leaving=0, prefixes=prefixes,
            pending=0, in_flight=len(self._in_flight), max_pods=self.max_pods,
            max_addresses=total,
        )  # fmt: skip

    def _with_v6(self, allocation: Allocation) -> Allocation:
        """Dual stack: the allocation with its key's IPv6 address."""
        v6 = self._dual.get(allocation.key)
        return allocation if v6 is None else allocation._replace(ipv6=v6)

    def _assign_v6(self, key: AllocationKey, pod: PodRef, now: float) -> Allocation:
        existing = self.pool.allocations.get(key)
        if existing is not None:
            return existing
        assert self.v6 is not None
        found = self.v6.first()
        if found is None:
            raise PoolExhausted("no ENI carries an IPv6 prefix yet")
        eni_id, prefix = found
        allocation = Allocation(
            key=key, pod=pod, ipv4=None, ipv6=self.v6.take(prefix), allocated_at=now,
            eni_id=eni_id, device_index=self.v6.devices.get(eni_id, 0),
        )  # fmt: skip
        self.pool.record_allocation(allocation)
        return allocation

    def _assign_dual(self, key: AllocationKey, pod: PodRef, now: float) -> Allocation:
        """Dual stack: an IPv4 address from the warm pool and an IPv6 one from the prefix,
        both or neither (no IPv4 is taken while the node has no IPv6 prefix yet)."""
        assert self.v6 is not None
        existing = self.get(key)
        if existing is not None:
            return existing
        found = self.v6.first()
        if found is None:
            raise PoolExhausted("no ENI carries an IPv6 prefix yet")
        before = self.pool.assigned
        allocation = self.pool.assign(key, pod, now)  # PoolExhausted: nothing taken
        if self._observes_pods and self.pool.assigned != before:
            self._policy.assigned(now)
        v6 = self._dual[key] = self.v6.take(found[1])
        return allocation._replace(ipv6=v6)

    def _released_dual(self, key: AllocationKey, released: Allocation | None) -> Allocation | None:
        """After the IPv4 release of ``key`` (``released``): its IPv6 address back too."""
        assert self.v6 is not None
        v6 = self._dual.pop(key, None)
        if released is not None and (v6 or released.ipv6):
            self.v6.released(v6 or released.ipv6 or "")
        return released if v6 is None or released is None else released._replace(ipv6=v6)

    def _v6_effects(self, primary: ObservedEni | None, now: float) -> list[Effect]:
        """An IPv6 prefix for the ``primary`` ENI while it has none and none is on its way
        (after a failure, not before ``throttle_pause_s``)."""
        assert self.v6 is not None
        if now < self._v6_retry_at:
            return []
        effect = self.v6.prefix_effect(primary, self._in_flight.values())
        return [] if effect is None else [effect]

    @staticmethod
    def _v6_only_effect(effect: Effect) -> bool:
        return isinstance(effect, AssignAddresses) and effect.ipv6_prefix_count > 0

    def _v6_failed(self, message: str, now: float) -> None:
        self.notices.append(f"IPv6 prefix assignment failed: {message}")
        self._v6_retry_at = now + self.config.throttle_pause_s

    def _restore_v6(self, allocation: Allocation) -> Allocation:
        """IPv6 only: a checkpointed allocation recorded again, on the ENI whose prefix
        holds its address."""
        assert allocation.ipv6 is not None
        found = None if self.v6 is None else self.v6.locate(allocation.ipv6)
        pool = self.pool
        if found is not None:
            allocation = allocation._replace(eni_id=found[0], device_index=found[1])
            pool = self._pool_of(found[0])  # a multi-NIC pod's interface: its card's pool
        pool.record_allocation(allocation)
        return allocation

    def _restore_dual(self, bound: Allocation, v6: str) -> Allocation:
        """Dual stack: a restored IPv4 allocation's IPv6 address taken again."""
        assert self.v6 is not None
        self._dual[bound.key] = v6
        self.v6.locate(v6)
        return bound._replace(ipv6=v6)
