"""Upstream's warm-target arithmetic, as small pure functions over pool counts.

Upstream (``ipamd.go``, v1.23): ``datastoreTargetState``, ``isDatastorePoolTooLow`` and
``isDatastorePoolTooHigh``. One deliberate difference: ``available`` excludes cooling
addresses here (upstream counts them, so a pod can wait out a whole cooldown: #1700, #2896);
the ``upstream-faithful`` policy passes cooling addresses in ``available`` to show the
difference.
"""

from __future__ import annotations

import attrs

from ipamcore.model import IPS_PER_PREFIX


@attrs.frozen
class PoolCounts:
    """The figures every decision is made from (addresses, not prefixes, unless named so)."""

    total: int
    assigned: int
    available: int
    total_prefixes: int = 0
    free_prefixes: int = 0


def div_ceil(a: int, b: int) -> int:
    """``ceil(a / b)`` in integers."""
    return -(-a // b)


def warm_ip_short_over(
    counts: PoolCounts, warm_ip_target: int, minimum_ip_target: int
) -> tuple[int, int]:
    """``(short, over)`` in addresses when WARM_IP_TARGET or MINIMUM_IP_TARGET is set.

    short = max(WARM_IP - available, 0), then max(short, MINIMUM_IP - total);
    over = max(available - WARM_IP, 0), then max(min(over, total - MINIMUM_IP), 0).
    """
    short = max(warm_ip_target - counts.available, 0)
    short = max(short, minimum_ip_target - counts.total)
    over = max(counts.available - warm_ip_target, 0)
    over = max(min(over, counts.total - minimum_ip_target), 0)
    return short, over


def warm_ip_short_over_prefixes(
    counts: PoolCounts, warm_ip_target: int, minimum_ip_target: int
) -> tuple[int, int]:
    """The prefix-delegation variant: ``(short, over)`` in /28 prefixes.

    short = ceil(short_ips / 16); over counts only wholly free prefixes that neither the
    warm target (assigned + WARM_IP) nor MINIMUM_IP needs.
    """
    short_ips, _ = warm_ip_short_over(counts, warm_ip_target, minimum_ip_target)
    short = div_ceil(short_ips, IPS_PER_PREFIX)
    needed_for_warm = div_ceil(counts.assigned + warm_ip_target, IPS_PER_PREFIX)
    needed_for_min = div_ceil(minimum_ip_target, IPS_PER_PREFIX)
    over = max(min(counts.free_prefixes, counts.total_prefixes - needed_for_warm), 0)
    over = max(min(over, counts.total_prefixes - needed_for_min), 0)
    return short, over


def warm_eni_short(counts: PoolCounts, warm_eni_target: int, ips_per_eni: int) -> int:
    """Addresses short of WARM_ENI_TARGET whole ENIs' worth of available addresses; with a
    target of 0, one when nothing is available (upstream: ``warmTarget == 0 && available ==
    0`` makes the pool too low, so a node with WARM_ENI_TARGET=0 tops up at once)."""
    if warm_eni_target == 0 and counts.available <= 0:
        return 1
    return max(warm_eni_target * ips_per_eni - counts.available, 0)


def warm_eni_too_high(counts: PoolCounts, warm_eni_target: int, ips_per_eni: int) -> bool:
    """Upstream (``shouldRemoveExtraENIs``) frees an ENI only when at least (WARM_ENI + 1)
    ENIs' worth of addresses is available."""
    return counts.available >= (warm_eni_target + 1) * ips_per_eni


def warm_prefix_short(counts: PoolCounts, warm_prefix_target: int) -> int:
    """Prefixes short of WARM_PREFIX_TARGET prefixes' worth of available addresses; with a
    target of 0, one when nothing is available (as :func:`warm_eni_short`)."""
    if warm_prefix_target == 0 and counts.available <= 0:
        return 1
    short_ips = max(warm_prefix_target * IPS_PER_PREFIX - counts.available, 0)
    return div_ceil(short_ips, IPS_PER_PREFIX)


def warm_prefix_over(counts: PoolCounts, warm_prefix_target: int) -> int:
    """Wholly free prefixes beyond WARM_PREFIX_TARGET whole free prefixes (upstream's
    ``computeExtraPrefixesOverWarmTarget``: free prefixes are counted, not spare addresses
    in partly used ones)."""
    return max(counts.free_prefixes - warm_prefix_target, 0)
