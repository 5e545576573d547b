"""Reconciliation as a pure diff between the pool and an observed snapshot of the instance.

Exact set comparison, per ENI and per address block:

* an ENI or block the cloud shows and the pool lacks is added, except an ENI or block
  given back in the last ``grace_s`` seconds (the metadata view may still show it) and
  anything an effect in flight is changing;
* an ENI or block the pool has and the cloud no longer shows is removed, except one the pool
  got in the last ``grace_s`` seconds (the metadata view may not show it yet: upstream #3019,
  #1967, #3887), and the allocations it carried are reported as force-removed;
* ENIs tagged ``node.k8s.amazonaws.com/no_manage=true`` are tracked (they count against the
  ENI limit) but carry no pod addresses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

from ipamcore.cardpools import CardPools
from ipamcore.effects import CreateEni
from ipamcore.errors import DataError, UsageError
from ipamcore.inventory import EniState
from ipamcore.ipv6 import V6Prefixes
from ipamcore.model import Allocation, ObservedEni, ObservedNode
from ipamcore.pool import AddressPool
from ipamcore.validation import check_observed


@attrs.frozen
class ReconcileDiff:
    """The changes that make the pool match an observed node: ENIs and blocks to add or remove."""

    add_enis: tuple[ObservedEni, ...] = ()
    remove_enis: tuple[str, ...] = ()
    add_blocks: tuple[tuple[str, str, bool], ...] = ()  # (eni id, block, is prefix)
    remove_blocks: tuple[tuple[str, str], ...] = ()  # (eni id, block)

    @property
    def empty(self) -> bool:
        """Whether nothing differs."""
        return not (self.add_enis or self.remove_enis or self.add_blocks or self.remove_blocks)


@attrs.frozen
class ReconcileReport:
    """What reconciliation changed; ``force_removed`` lists allocations whose address
    vanished; ``refused`` says why a snapshot was not applied (empty when it was)."""

    diff: ReconcileDiff
    force_removed: tuple[Allocation, ...] = ()
    refused: str = ""


def observed_blocks(eni: ObservedEni) -> dict[str, bool]:
    """Block id -> is prefix, for the IPv4 blocks an observed ENI carries."""
    blocks = {address: False for address in eni.ipv4_addresses}
    blocks.update({prefix: True for prefix in eni.ipv4_prefixes})
    return blocks


def diff(
    pool: AddressPool,
    observed: ObservedNode,
    now: float,
    grace_s: float,
    recently_released: Mapping[str, float],
    busy_enis: frozenset[str],
) -> ReconcileDiff:
    """The exact set difference between the pool and ``observed``.

    ENIs and blocks newer than ``grace_s`` (or released within it, ``recently_released``) are
    left alone: the observation may predate a change the pool already knows about."""
    seen = {eni.eni_id: eni for eni in observed.enis}
    add_enis: list[ObservedEni] = []
    add_blocks: list[tuple[str, str, bool]] = []
    remove_blocks: list[tuple[str, str]] = []
    remove_enis: list[str] = []

    for eni_id, info in sorted(seen.items()):
        state = pool.enis.get(eni_id)
        if state is None:
            freed = recently_released.get(eni_id)
            if eni_id not in busy_enis and (freed is None or now - freed >= grace_s):
                add_enis.append(info)
            continue
        if state.excluded or eni_id in busy_enis or state.leaving:
            continue
        wanted = observed_blocks(info)
        for block_id, is_prefix in sorted(wanted.items()):
            if block_id in state.blocks:
                continue
            released = recently_released.get(block_id)
            if released is not None and now - released < grace_s:
                continue
            add_blocks.append((eni_id, block_id, is_prefix))
        for block_id, block in sorted(state.blocks.items()):
            if block_id not in wanted and now - block.acquired_at >= grace_s and not block.leaving:
                remove_blocks.append((eni_id, block_id))

    for eni_id, state in sorted(pool.enis.items()):
        if eni_id in seen or eni_id in busy_enis or state.leaving:
            continue
        if now - state.seen_at >= grace_s:
            remove_enis.append(eni_id)

    return ReconcileDiff(
        add_enis=tuple(add_enis),
        remove_enis=tuple(remove_enis),
        add_blocks=tuple(add_blocks),
        remove_blocks=tuple(remove_blocks),
    )


class Reconciling(CardPools):
    """The reconciliation half of :class:`ipamcore.ipam.Ipam`: the first view of the
    instance (:meth:`load`), later snapshots (:meth:`reconcile`), applying their
    :class:`ReconcileDiff`, and the allocations whose address vanished (orphans)."""

    notices: list[str]
    v6: V6Prefixes | None
    _ipv6: bool
    _loaded: bool
    _recently_released: dict[str, float]
    _full_enis: set[str]
    _suspect_enis: set[str]
    _orphans: dict[str, Allocation]

    if TYPE_CHECKING:

        def primary_eni(self) -> ObservedEni | None: ...

        def _park_secondary_ips(self) -> None: ...

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

    def _excluded(self, info: ObservedEni) -> bool:
        """Carries no pod addresses: trunk, EFA, tagged ``no_manage=true`` (except the
        primary ENI, which upstream always manages), the primary with custom networking."""
        if info.is_trunk or info.is_efa or self._ipv6 or self._outside_tables(info):
            return True
        if info.network_card != 0:  # upstream leaves cards above 0 alone without multi-NIC
            return (
                not self.config.multi_nic or info.network_card not in self.card_limits
                or info.unmanaged
            )  # fmt: skip
        if info.counts_as_primary:
            return self.config.placement.custom_networking
        return info.unmanaged

    def _add_observed_eni(self, info: ObservedEni, now: float) -> None:
        if self.v6 is not None:
            self.v6.observe(info)
        pool = self._pool_for_card(info.network_card)
        state = pool.enis.get(info.eni_id)
        if state is None:
            state = pool.add_eni(info, now, self._excluded(info))
        self._add_blocks(pool, state, info, now)

    def _add_blocks(
        self, pool: AddressPool, state: EniState, info: ObservedEni, now: float
    ) -> None:
        for block, is_prefix in sorted(observed_blocks(info).items()):
            pool.add_block(state.eni_id, block, is_prefix, now)

    def reconcile(self, observed: ObservedNode, now: float) -> ReconcileReport:
        """Make the pool match what the cloud shows (see :mod:`ipamcore.reconcile`).

        A snapshot without ENIs, or without the primary ENI (which never detaches), is
        refused (the report says so in ``refused``, and :attr:`notices`): an empty answer
        from the cloud for a running instance would otherwise drop every ENI and orphan
        every allocation (upstream aborts the reconcile too). Malformed ENIs raise
        :class:`DataError` before anything changes."""
        check_observed(observed.enis, "reconcile")
        if self.v6 is not None:
            for info in observed.enis:
                if info.eni_id in self.pool.enis:
                    self.v6.observe(info)
        primary = self.primary_eni()
        shown = {e.eni_id for e in observed.enis}
        refused = ""
        if not observed.enis:
            refused = "the snapshot shows no ENI"
        elif primary is not None and primary.eni_id not in shown:
            refused = f"the snapshot lacks the primary ENI {primary.eni_id}"
        if refused:
            self.notices.append(f"reconciliation refused: {refused}")
            return ReconcileReport(diff=ReconcileDiff(), refused=refused)
        self._advance(now)
        grace = self.config.reconcile_grace_s
        self._recently_released = {
            k: t for k, t in self._recently_released.items() if now - t < grace
        }
        busy = frozenset(e.eni_id for e in self._in_flight.values() if not isinstance(e, CreateEni))
        changes = diff(
            self.pool, ObservedNode(tuple(e for e in observed.enis if e.network_card == 0)),
            now, grace, self._recently_released, busy,
        )  # fmt: skip
        for card, pool in sorted(self.card_pools.items()):
            on_card = ObservedNode(tuple(e for e in observed.enis if e.network_card == card))
            more = diff(pool, on_card, now, grace, self._recently_released, busy)
            changes = ReconcileDiff(
                add_enis=changes.add_enis + more.add_enis,
                remove_enis=changes.remove_enis + more.remove_enis,
                add_blocks=changes.add_blocks + more.add_blocks,
                remove_blocks=changes.remove_blocks + more.remove_blocks,
            )
        report = self._apply_diff(changes, now)
        self._full_enis.clear()  # the snapshot shows each ENI's room as it is
        self._suspect_enis = {
            e for e in self._suspect_enis if e in self.pool.enis and e not in shown
        }  # still suspect: absent, but kept by the grace for new ENIs
        return report

    def load(self, enis: Iterable[ObservedEni], now: float) -> ReconcileReport:
        """The first view of the instance at start: every ENI and address is taken as is.

        Called once, before anything else. Exactly one ENI must be the primary
        (``is_primary``, or device 0 on network card 0), ENI ids must be unique and
        addresses well formed; otherwise :class:`DataError` (a second call:
        :class:`UsageError`), and nothing changes."""
        if self._loaded:
            raise UsageError("load() was already called: use reconcile() for later views")
        observed = tuple(enis)
        check_observed(observed, "load")
        primaries = [e.eni_id for e in observed if e.counts_as_primary]
        if len(primaries) != 1:
            raise DataError(
                "load: exactly one ENI must be the primary (is_primary, or device 0 on network "
                f"card 0); got {len(primaries)}: {primaries[:4]}"
            )
        self._loaded = True
        report = self._apply_diff(ReconcileDiff(add_enis=observed), now)
        if self.prefix_mode:
            self._park_secondary_ips()
        return report

    def _apply_diff(self, changes: ReconcileDiff, now: float) -> ReconcileReport:
        removed: list[Allocation] = []
        for info in changes.add_enis:
            self._add_observed_eni(info, now)
        for eni_id, block, is_prefix in changes.add_blocks:
            self._pool_of(eni_id).add_block(eni_id, block, is_prefix, now)
        for eni_id, block in changes.remove_blocks:
            removed.extend(self._pool_of(eni_id).remove_block(eni_id, block))
        for eni_id in changes.remove_enis:
            removed.extend(self._pool_of(eni_id).remove_eni(eni_id))
            if self.v6 is not None:
                self.v6.forget(eni_id)
        if self.prefix_mode and self._loaded:
            self._park_secondary_ips()
        self._rebind_orphans()
        return ReconcileReport(diff=changes, force_removed=self._orphan(removed))
