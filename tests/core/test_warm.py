"""Worked examples of upstream's warm-target arithmetic, one table per knob."""

from __future__ import annotations

import pytest

from ipamcore.warm import (
    PoolCounts,
    warm_eni_short,
    warm_eni_too_high,
    warm_ip_short_over,
    warm_ip_short_over_prefixes,
    warm_prefix_over,
    warm_prefix_short,
)


@pytest.mark.parametrize(
    ("total", "assigned", "available", "warm_ip", "min_ip", "short", "over"),
    [
        # WARM_IP_TARGET=5 alone
        (10, 10, 0, 5, 0, 5, 0),  # everything used: 5 short
        (10, 7, 3, 5, 0, 2, 0),  # 3 spare, 2 short
        (10, 5, 5, 5, 0, 0, 0),  # exactly on target
        (20, 5, 15, 5, 0, 0, 10),  # 10 over
        # MINIMUM_IP_TARGET=10 alone: total must reach 10, spare above it may go
        (4, 0, 4, 0, 10, 6, 0),
        (10, 0, 10, 0, 10, 0, 0),  # over limited to total - minimum
        (14, 0, 14, 0, 10, 0, 4),
        # both: WARM_IP=2, MINIMUM_IP=10
        (10, 9, 1, 2, 10, 1, 0),
        (12, 2, 10, 2, 10, 0, 2),
        (6, 6, 0, 2, 10, 4, 0),  # min dominates: 10 - 6 = 4
        # cooling excluded from available: 10 total, 4 assigned, 4 cooling -> available 2
        (10, 4, 2, 3, 0, 1, 0),
    ],
)
def test_warm_ip_short_over(
    total: int, assigned: int, available: int, warm_ip: int, min_ip: int, short: int, over: int
) -> None:
    counts = PoolCounts(total=total, assigned=assigned, available=available)
    assert warm_ip_short_over(counts, warm_ip, min_ip) == (short, over)


@pytest.mark.parametrize(
    ("total_prefixes", "free_prefixes", "assigned", "available", "warm_ip", "min_ip", "expect"),
    [
        # WARM_IP=16 with 1 prefix, 1 assigned: 15 available, short 1 address -> 1 prefix
        (1, 0, 1, 15, 16, 0, (1, 0)),
        # upstream's own comment: assigned 1, WARM_IP 16 needs 2 prefixes; 3 held, 1 free -> 1 over
        (3, 1, 1, 47, 16, 0, (0, 1)),
        # MINIMUM_IP 32 keeps 2 prefixes even when free
        (3, 3, 0, 48, 0, 32, (0, 1)),
        (2, 2, 0, 32, 0, 32, (0, 0)),
        # nothing held, WARM_IP=5: one prefix short
        (0, 0, 0, 0, 5, 0, (1, 0)),
    ],
)
def test_warm_ip_prefix_variant(
    total_prefixes: int,
    free_prefixes: int,
    assigned: int,
    available: int,
    warm_ip: int,
    min_ip: int,
    expect: tuple[int, int],
) -> None:
    counts = PoolCounts(
        total=total_prefixes * 16,
        assigned=assigned,
        available=available,
        total_prefixes=total_prefixes,
        free_prefixes=free_prefixes,
    )
    assert warm_ip_short_over_prefixes(counts, warm_ip, min_ip) == expect


@pytest.mark.parametrize(
    ("available", "warm_eni", "per_eni", "short", "too_high"),
    [
        (0, 1, 9, 9, False),  # m5.large: one ENI's worth (9) wanted
        (5, 1, 9, 4, False),
        (9, 1, 9, 0, False),
        (17, 1, 9, 0, False),
        (18, 1, 9, 0, True),  # upstream's shouldRemoveExtraENIs: available >= (1+1)*9
        (10, 2, 9, 8, False),
        (0, 0, 9, 1, False),  # WARM_ENI_TARGET=0 and nothing available: top up at once
        (1, 0, 9, 0, False),  # WARM_ENI_TARGET=0: nothing warm beyond that
    ],
)
def test_warm_eni(available: int, warm_eni: int, per_eni: int, short: int, too_high: bool) -> None:
    counts = PoolCounts(total=available + 3, assigned=3, available=available)
    assert warm_eni_short(counts, warm_eni, per_eni) == short
    assert warm_eni_too_high(counts, warm_eni, per_eni) is too_high


@pytest.mark.parametrize(
    ("available", "free_prefixes", "warm_prefix", "short", "over"),
    [
        (0, 0, 1, 1, 0),
        (15, 0, 1, 1, 0),  # 15 < 16: one more prefix
        (16, 1, 1, 0, 0),
        (40, 2, 1, 0, 1),  # 24 spare addresses above the target: one whole free prefix may go
        (48, 3, 1, 0, 2),
        (48, 1, 1, 0, 0),  # upstream counts whole free prefixes: the one free one is kept
        (0, 0, 0, 1, 0),  # WARM_PREFIX_TARGET=0 and nothing available: one prefix
        (1, 0, 0, 0, 0),
        (31, 1, 2, 1, 0),
    ],
)
def test_warm_prefix(
    available: int, free_prefixes: int, warm_prefix: int, short: int, over: int
) -> None:
    counts = PoolCounts(
        total=64, assigned=64 - available, available=available, total_prefixes=4,
        free_prefixes=free_prefixes,
    )
    assert warm_prefix_short(counts, warm_prefix) == short
    assert warm_prefix_over(counts, warm_prefix) == over
