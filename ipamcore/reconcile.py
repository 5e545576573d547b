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

from collections.abc import Mapping

import attrs

from ipamcore.model import Allocation, ObservedEni, ObservedNode
from ipamcore.pool import AddressPool


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
