"""The ``adaptive`` policy: demand rates, targets, growth, look-ahead, shrink and backoff."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipamcore.adaptive import (
    AdaptivePolicy,
    Backoff,
    Demand,
    History,
    Rates,
    Situation,
    backoff_delay,
    decide_growth,
    decide_shrink,
    gap_bound,
    targets,
)
from ipamcore.config import AdaptiveTuning, PolicyName, PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, FreeEni, UnassignAddresses
from ipamcore.errors import FailureKind
from ipamcore.events import AddressesAssigned, EffectFailed
from ipamcore.ipam import Ipam
from ipamcore.policy import PolicyInput
from tests.core.builders import eni, key, node, pod

ADAPTIVE = PoolConfig(policy=PolicyName.ADAPTIVE)
TUNING = AdaptiveTuning()
OLD = Situation()  # past the boot hold, never throttled, no demand


def policy_input(ipam: Ipam, waiting: int = 0) -> PolicyInput:
    return ipam._policy_input(waiting)


def warm_node(ips: int, assigned: int, instance_type: str = "m5.xlarge") -> Ipam:
    """A node whose primary ENI holds ``ips`` secondary IPs, ``assigned`` of them in use."""
    ipam = node(instance_type, ADAPTIVE, enis=(eni(0, ips=ips),))
    for i in range(assigned):
        ipam.assign(key(i), pod(i), 0.0)
    return ipam


# ----------------------------------------------------------------------------- rates
def test_demand_rates_are_exponential_averages() -> None:
    demand = Demand(window_s=30.0)
    assert demand.rates(0.0) == Rates(0.0, 0.0)
    for t in range(10):
        demand.arrival(float(t))
    rates = demand.rates(10.0)
    assert 0.25 < rates.arrivals < 10 / 30.0 and rates.net == rates.arrivals
    demand.release(10.0)
    assert demand.rates(10.0).net == pytest.approx(rates.arrivals - 1 / 30.0)
    slow = Demand(window_s=30.0, gap_confidence=math.inf)  # no gap bound: the average alone
    for t in range(10):
        slow.arrival(float(t))
    later = slow.rates(10.0 + 30.0)
    assert later.arrivals == pytest.approx(slow.rates(10.0).arrivals / math.e)


def test_ipam_counts_new_allocations_and_releases_only() -> None:
    ipam = warm_node(ips=5, assigned=0)
    ipam.assign(key(1), pod(1), 1.0)
    ipam.assign(key(1), pod(1), 1.0)  # the same key again is not an arrival
    ipam.release(key(1), 2.0)
    ipam.release(key(1), 2.0)  # nothing to release
    policy = ipam._policy
    assert isinstance(policy, AdaptivePolicy)
    rates = policy.demand.rates(2.0)
    assert rates.arrivals == pytest.approx(math.exp(-1 / 30) / 30)
    assert rates.net == pytest.approx(rates.arrivals - 1 / 30)


# ---------------------------------------------------------------------------- targets
@pytest.mark.parametrize(
    ("arrivals", "net", "low", "high", "keep"),
    [
        (0.0, 0.0, 1, 1, 1),  # no demand: min_warm, and no hysteresis above it
        (1e-6, 1e-6, 1, 2, 2),  # a rate that all but decayed: still an address's worth
        (0.1, 0.0, 3, 3, 6),  # 0.8 expected in 8 s, + 1.5 sigma = 2.14; churn only: no batch
        (0.2, 0.2, 4, 13, 13),  # 1.6 + 1.90 = 3.50; batch 0.2/s x 45 s = 9
        (1.0, 1.0, 13, 58, 58),  # 8 + 4.24 = 12.24; batch 45
        (1.0, -0.5, 13, 13, 26),  # demand falling: no batch; keep twice the demand's share
    ],
)
def test_targets_table(arrivals: float, net: float, low: int, high: int, keep: int) -> None:
    ipam = warm_node(ips=0, assigned=0)
    aim = targets(Rates(arrivals, net), policy_input(ipam), TUNING)
    assert (aim.low, aim.high, aim.keep) == (low, high, keep)


def test_warm_ip_target_is_a_floor_not_doubled_by_the_hysteresis() -> None:
    ipam = node("m5.xlarge", attrs.evolve(ADAPTIVE, warm_ip_target=6), enis=(eni(0),))
    assert targets(Rates(), policy_input(ipam), TUNING).low == 6
    assert targets(Rates(), policy_input(ipam), TUNING).keep == 6
    assert targets(Rates(0.1, 0.0), policy_input(ipam), TUNING).keep == 6  # 2 x 3 covered


def test_without_demand_the_pool_shrinks_to_the_floor_as_warm_ip_target_does() -> None:
    ipam = warm_node(ips=3, assigned=1)  # 2 ready, nothing arriving for long
    (effect,) = decide_shrink(ipam.pool, policy_input(ipam), OLD, TUNING, 1000.0)
    assert isinstance(effect, UnassignAddresses) and len(effect.ipv4_addresses) == 1
    trickle = Situation(rates=Rates(0.01, 0.0))  # 0.08 expected in 8 s, + 1.5 sigma: 0.5
    assert decide_shrink(ipam.pool, policy_input(ipam), trickle, TUNING, 1000.0) == []


def test_a_young_node_fills_its_first_two_enis_and_does_not_shrink() -> None:
    ipam = warm_node(ips=2, assigned=0)
    young = Situation(young=True)
    assign, create = decide_growth(ipam.pool, policy_input(ipam), young, TUNING)
    assert assign == AssignAddresses(effect_id=0, eni_id="eni-0000", ipv4_count=12)  # 14 a ENI
    assert isinstance(create, CreateEni) and create.ipv4_count == 14
    one = AdaptiveTuning(boot_enis=1)
    assert decide_growth(ipam.pool, policy_input(ipam), young, one) == [assign]
    full = warm_node(ips=14, assigned=0)
    assert decide_shrink(full.pool, policy_input(full), young, TUNING, 1000.0) == []
    assert decide_shrink(full.pool, policy_input(full), OLD, TUNING, 1000.0) != []


def test_a_young_node_gives_back_what_growth_asked_beyond_its_boot_fill() -> None:
    """At the end of a burst the rates still say "growing" and growth over-asks; the boot
    hold keeps the first two ENIs' worth (28 addresses on m5.xlarge), not the overshoot."""
    ipam = node("m5.xlarge", ADAPTIVE, enis=(eni(0, ips=14), eni(1, ips=14), eni(2, ips=14)))
    for i in range(10):
        ipam.assign(key(i), pod(i), 0.0)
    young = Situation(young=True)
    effects = decide_shrink(ipam.pool, policy_input(ipam), young, TUNING, 1000.0)
    given = sum(len(e.ipv4_addresses) for e in effects if isinstance(e, UnassignAddresses))
    freed = [e for e in effects if isinstance(e, FreeEni)]
    assert effects and (given == 14 or len(freed) == 1)  # 42 held: back to 28, not below
    two = node("m5.xlarge", ADAPTIVE, enis=(eni(0, ips=14), eni(1, ips=14)))
    assert decide_shrink(two.pool, policy_input(two), young, TUNING, 1000.0) == []
    assert decide_shrink(two.pool, policy_input(two), OLD, TUNING, 1000.0) != []


def test_the_boot_fill_counts_enis_busy_with_a_call() -> None:
    """An ENI with a call in flight is not growable, but what it holds still counts toward
    the boot fill: a young node does not create ENIs past its fill while calls are out."""
    ipam = node("m5.xlarge", ADAPTIVE, enis=(eni(0, ips=14), eni(1, ips=14)))
    busy = attrs.evolve(policy_input(ipam), busy_enis=frozenset({"eni-0000"}))
    assert decide_growth(ipam.pool, busy, Situation(young=True), TUNING) == []


def test_growth_asks_for_the_batch_when_demand_grows() -> None:
    ipam = warm_node(ips=3, assigned=3)
    rising = Situation(rates=Rates(0.2, 0.2))
    aim = targets(rising.rates, policy_input(ipam), TUNING)
    effects = decide_growth(ipam.pool, policy_input(ipam), rising, TUNING)
    assert effects[0] == AssignAddresses(effect_id=0, eni_id="eni-0000", ipv4_count=11)
    assert isinstance(effects[1], CreateEni) and effects[1].ipv4_count == aim.high - 11


def test_waiting_pods_count_in_the_shortage() -> None:
    ipam = warm_node(ips=3, assigned=3)
    (effect,) = decide_growth(ipam.pool, policy_input(ipam, waiting=5), OLD, TUNING)
    assert effect == AssignAddresses(effect_id=0, eni_id="eni-0000", ipv4_count=6)


def test_congested_growth_fills_whole_enis() -> None:
    ipam = warm_node(ips=3, assigned=3)
    congested = Situation(congested=True)
    (effect,) = decide_growth(ipam.pool, policy_input(ipam), congested, TUNING)
    assert effect == AssignAddresses(effect_id=0, eni_id="eni-0000", ipv4_count=11)


def test_look_ahead_creates_the_next_eni_before_the_room_runs_out() -> None:
    ipam = warm_node(ips=14, assigned=4)  # 10 ready, no room left on the primary ENI
    steady = Situation(rates=Rates(0.1, 0.0))
    assert decide_growth(ipam.pool, policy_input(ipam), steady, TUNING) == []
    rising = Situation(rates=Rates(0.1, 0.1))  # 10 ready last 100 s < 120 s look-ahead
    (create,) = decide_growth(ipam.pool, policy_input(ipam), rising, TUNING)
    assert isinstance(create, CreateEni) and create.ipv4_count >= 1
    backing_off = attrs.evolve(rising, can_create=False)
    assert decide_growth(ipam.pool, policy_input(ipam), backing_off, TUNING) == []


def test_a_throttled_create_does_not_stop_top_ups_for_waiting_pods() -> None:
    ipam = warm_node(ips=3, assigned=3)
    no_creates = Situation(can_create=False, can_create_urgently=False)
    effects = decide_growth(ipam.pool, policy_input(ipam, waiting=2), no_creates, TUNING)
    assert effects == [AssignAddresses(effect_id=0, eni_id="eni-0000", ipv4_count=3)]
    no_assigns = Situation(can_assign=False)
    assert decide_growth(ipam.pool, policy_input(ipam, waiting=2), no_assigns, TUNING) == []


# ----------------------------------------------------------------------------- shrink
@pytest.mark.parametrize(
    ("rates", "given"),
    [
        (Rates(0.05, 0.03), 4),  # low 2, high 2 + 2 (1.35 a batch): keep 4; (12 - 4) // 2
        (Rates(0.01, 0.001), 10),  # keep 2; 0.045 addresses a batch horizon: all of it
        (Rates(0.0, 0.0), 11),  # no demand: keep min_warm, as WARM_IP_TARGET=1 would
    ],
)
def test_shrink_gives_back_half_the_surplus_while_pods_still_come(rates: Rates, given: int) -> None:
    ipam = warm_node(ips=14, assigned=2)  # 12 ready
    situation = Situation(rates=rates)
    (effect,) = decide_shrink(ipam.pool, policy_input(ipam), situation, TUNING, 1000.0)
    assert isinstance(effect, UnassignAddresses)
    assert len(effect.ipv4_addresses) == given
    assert effect.ipv4_addresses[0] == "10.0.0.23"  # highest addresses first


def test_shrink_gives_back_the_whole_surplus_when_demand_falls() -> None:
    ipam = warm_node(ips=14, assigned=2)
    (effect,) = decide_shrink(ipam.pool, policy_input(ipam), OLD, TUNING, 1000.0)
    assert isinstance(effect, UnassignAddresses) and len(effect.ipv4_addresses) == 11


def test_shrink_frees_an_empty_eni_only_with_a_spare_eni_left() -> None:
    ipam = node("m5.xlarge", ADAPTIVE, enis=(eni(0, ips=14), eni(1, ips=14), eni(2, ips=0)))
    for i in range(3):
        ipam.assign(key(i), pod(i), 0.0)
    inp = policy_input(ipam)
    assert decide_shrink(ipam.pool, inp, OLD, TUNING, 1000.0) == [
        FreeEni(effect_id=0, eni_id="eni-0002")
    ]
    assert decide_shrink(ipam.pool, inp, OLD, TUNING, 30.0) != [
        FreeEni(effect_id=0, eni_id="eni-0002")
    ]  # too young to free
    busy = node("m5.xlarge", ADAPTIVE, enis=(eni(0, ips=14), eni(1, ips=0)))
    for i in range(14):
        busy.assign(key(i), pod(i), 0.0)
    assert decide_shrink(busy.pool, policy_input(busy), OLD, TUNING, 1000.0) == []


def test_no_shrink_while_congested() -> None:
    ipam = warm_node(ips=14, assigned=2)
    congested = Situation(congested=True)
    assert decide_shrink(ipam.pool, policy_input(ipam), congested, TUNING, 1000.0) == []


# ----------------------------------------------------------------------------- backoff
@given(attempt=st.integers(1, 40), seed=st.text(max_size=20))
def test_backoff_is_deterministic_bounded_and_grows(attempt: int, seed: str) -> None:
    delay = backoff_delay(attempt, seed, TUNING)
    assert delay == backoff_delay(attempt, seed, TUNING)
    ceiling = min(TUNING.backoff_cap_s, TUNING.backoff_base_s * 2 ** (attempt - 1))
    assert ceiling / 2 <= delay < ceiling


def test_backoff_jitter_spreads_nodes_apart() -> None:
    delays = {backoff_delay(5, f"eni-{i:04d}", TUNING) for i in range(100)}
    assert len(delays) == 100
    assert max(delays) - min(delays) > TUNING.backoff_base_s * 16 * 0.4


def test_backoff_is_per_action_and_resets_on_success() -> None:
    backoff = Backoff(TUNING)
    demand = Demand(30.0)
    create = CreateEni(effect_id=1, subnet_id="s", security_groups=())
    pause = backoff.throttled(create, "eni-0000", 100.0)
    situation = backoff.situation(demand, 100.0)
    assert not situation.can_create and situation.can_assign and situation.congested
    assert backoff.situation(demand, 100.0 + pause).can_create
    backoff.throttled(create, "eni-0000", 200.0)
    assert backoff.streak["create"] == 2
    backoff.succeeded(create)
    assert "create" not in backoff.streak


def test_ipam_backs_off_after_a_throttled_call_then_retries() -> None:
    no_boot_fill = attrs.evolve(
        ADAPTIVE, adaptive=AdaptiveTuning(boot_hold_s=0.0, boot_idle_hold_s=0.0)
    )
    ipam = node("m5.xlarge", no_boot_fill, enis=(eni(0),))
    (first,) = ipam.plan(1000.0)
    ipam.apply(EffectFailed(first.effect_id, FailureKind.THROTTLED), 1000.0)
    pause = backoff_delay(1, "eni-0000/assign", TUNING)
    assert ipam.plan(1000.0 + pause / 2, waiting=0) == []
    (retry,) = ipam.plan(1000.0 + pause)
    assert isinstance(retry, AssignAddresses) and retry.ipv4_count == 14  # congested: fill
    ipam.apply(AddressesAssigned(retry.effect_id, "eni-0000", ("10.0.0.10",)), 1001.0 + pause)
    assert isinstance(ipam._policy, AdaptivePolicy)
    assert ipam._policy.backoff.streak == {}


def test_other_policies_keep_the_fixed_throttle_pause() -> None:
    ipam = node("m5.xlarge", PoolConfig(), enis=(eni(0),))
    (first,) = ipam.plan(0.0)
    ipam.apply(EffectFailed(first.effect_id, FailureKind.THROTTLED), 0.0)
    assert ipam.plan(4.9) == []
    assert len(ipam.plan(5.0)) == 1


def test_a_throttled_shrink_holds_the_pool_for_the_congestion_hold() -> None:
    ipam = warm_node(ips=14, assigned=2)
    start = 1000.0
    (unassign,) = ipam.plan(start)
    assert isinstance(unassign, UnassignAddresses)
    ipam.apply(EffectFailed(unassign.effect_id, FailureKind.THROTTLED), start)
    later = start + TUNING.congestion_hold_s - 1
    assert ipam.plan(later) == []  # no shrink retry while congested
    (retry,) = ipam.plan(start + TUNING.congestion_hold_s)
    assert isinstance(retry, UnassignAddresses)
    assert len(retry.ipv4_addresses) == len(unassign.ipv4_addresses)


# ------------------------------------------------------------ demand history and bursts
@pytest.mark.parametrize(
    ("gap_s", "bound"),
    [(0.0, math.inf), (1.0, 3.0), (15.0, 0.2), (60.0, 0.05), (math.inf, 0.0)],
)
def test_gap_bound_table(gap_s: float, bound: float) -> None:
    assert gap_bound(gap_s, 3.0) == pytest.approx(bound)


def test_the_rate_of_a_burst_that_ended_falls_within_seconds() -> None:
    demand = Demand(window_s=30.0)
    for i in range(30):  # 30 pods in 10 s
        demand.arrival(100.0 + i / 3)
    during = demand.rates(110.0).arrivals
    assert during > 0.5
    after = demand.rates(120.0).arrivals  # 10 s of quiet: at most 3 / 10 s
    assert after <= 0.3 + 1e-9 < during
    averaged = Demand(window_s=30.0, gap_confidence=math.inf)
    for i in range(30):
        averaged.arrival(100.0 + i / 3)
    assert averaged.rates(120.0).arrivals > 2 * after  # what the average alone still says


def test_a_trickle_of_pods_keeps_its_rate() -> None:
    demand = Demand(window_s=30.0)
    for i in range(20):  # one pod every 10 s
        demand.arrival(10.0 * i)
    bounded = demand.rates(195.0)
    plain = Demand(window_s=30.0, gap_confidence=math.inf)
    for i in range(20):
        plain.arrival(10.0 * i)
    assert bounded == plain.rates(195.0)  # a gap of 5 s allows 0.6/s: the average stands


@pytest.mark.parametrize(
    ("observations", "now", "peak"),
    [
        ([], 0.0, 0),
        ([(0.0, 5), (10.0, 15), (20.0, 3)], 20.0, 15),  # the peak of the window, not the last
        ([(0.0, 15), (1000.0, 3)], 1000.0, 15),  # still within 1,800 s
        ([(0.0, 15), (1900.0, 3)], 1900.0, 3),  # the peak left the window
        ([(100.0, 4), (50.0, 20)], 100.0, 4),  # an older observation is ignored
    ],
)
def test_history_table(observations: list[tuple[float, int]], now: float, peak: int) -> None:
    history = History(span_s=1800.0, bucket_s=60.0)
    for at, pods in observations:
        history.observe(at, pods)
    assert history.peak() == peak


def test_while_calls_are_scarce_shrink_keeps_room_for_the_recent_peak() -> None:
    ipam = warm_node(ips=14, assigned=2)  # 12 ready; the last wave had 12 pods
    calm = Situation(peak=12)
    (effect,) = decide_shrink(ipam.pool, policy_input(ipam), calm, TUNING, 1000.0)
    assert isinstance(effect, UnassignAddresses) and len(effect.ipv4_addresses) == 11
    scarce = Situation(scarce=True, peak=12)  # keep 12 + low (1): give back 1
    (effect,) = decide_shrink(ipam.pool, policy_input(ipam), scarce, TUNING, 1000.0)
    assert isinstance(effect, UnassignAddresses) and len(effect.ipv4_addresses) == 1
    scarce_low = Situation(scarce=True, peak=2)
    (effect,) = decide_shrink(ipam.pool, policy_input(ipam), scarce_low, TUNING, 1000.0)
    assert isinstance(effect, UnassignAddresses) and len(effect.ipv4_addresses) == 11


def test_a_throttled_call_makes_calls_scarce_for_the_history_span() -> None:
    backoff, demand = Backoff(TUNING), Demand(TUNING.rate_window_s)
    backoff.start(0.0)
    assert not backoff.situation(demand, 100.0).scarce
    backoff.throttled(CreateEni(effect_id=1, subnet_id="s", security_groups=()), "e", 100.0)
    assert backoff.situation(demand, 100.0 + TUNING.history_s - 1).scarce
    assert not backoff.situation(demand, 100.0 + TUNING.history_s).scarce


def test_the_policy_remembers_the_peak_it_saw() -> None:
    ipam = warm_node(ips=14, assigned=9)
    policy = ipam._policy
    assert isinstance(policy, AdaptivePolicy)
    ipam.plan(1000.0)
    for i in range(7):
        ipam.release(key(i), 1001.0)
    ipam.plan(1100.0)
    assert policy.history.peak() == 9 and ipam.pool.assigned == 2


@pytest.mark.parametrize(
    ("growing", "low"),
    [(False, 13), (True, 3)],  # 1/s: 8 + 4.24 over a policy interval; 1 + 1.5 over one call
)
def test_while_growth_is_under_way_the_next_top_up_is_one_call_away(
    growing: bool, low: int
) -> None:
    ipam = warm_node(ips=0, assigned=0)
    assert targets(Rates(1.0, 0.0), policy_input(ipam), TUNING, growing=growing).low == low


# ------------------------------------------------------------------------- properties
SITUATIONS = st.builds(
    Situation,
    rates=st.builds(Rates, st.floats(0, 20), st.floats(-20, 20)),
    young=st.booleans(),
    congested=st.booleans(),
    can_assign=st.booleans(),
    can_create=st.booleans(),
    can_create_urgently=st.booleans(),
    scarce=st.booleans(),
    peak=st.integers(0, 80),
)


@st.composite
def nodes_with_pods(draw: st.DrawFn) -> tuple[Ipam, int]:
    """An m5.xlarge node (4 ENIs x 14) with some ENIs and addresses, pods on some of them,
    and some released (cooling) at t=990; returns it with the pods still on it."""
    count = draw(st.integers(1, 4))
    enis = tuple(eni(i, ips=draw(st.integers(0, 14))) for i in range(count))
    ipam = node("m5.xlarge", ADAPTIVE, enis=enis)
    total = ipam.pool.usable_total
    pods = draw(st.integers(0, total))
    for i in range(pods):
        ipam.assign(key(i), pod(i), 0.0)
    gone = draw(st.integers(0, pods))
    for i in range(gone):
        ipam.release(key(i), 990.0)
    return ipam, pods - gone


@given(state=nodes_with_pods(), situation=SITUATIONS, waiting=st.integers(0, 60))
def test_growth_never_plans_beyond_the_instance_limits(
    state: tuple[Ipam, int], situation: Situation, waiting: int
) -> None:
    ipam, _pods = state
    inp = policy_input(ipam, waiting)
    effects = decide_growth(ipam.pool, inp, situation, TUNING)
    creates = [e for e in effects if isinstance(e, CreateEni)]
    assert len(creates) <= inp.max_enis - len(ipam.pool.enis)
    added = 0
    for effect in effects:
        if isinstance(effect, AssignAddresses):
            state_ = ipam.pool.enis[effect.eni_id]
            assert 0 < effect.ipv4_count <= inp.per_eni - state_.ipv4_count()
            added += effect.ipv4_count
        else:
            assert isinstance(effect, CreateEni) and 0 < effect.ipv4_count <= inp.per_eni
            added += effect.ipv4_count
    assert ipam.pool.usable_total + added <= min(inp.max_enis * inp.per_eni, inp.max_pods)
    assert len({e.eni_id for e in effects if isinstance(e, AssignAddresses)}) == len(effects) - len(
        creates
    )  # one top-up an ENI


@given(state=nodes_with_pods(), situation=SITUATIONS, now=st.floats(990.0, 5000.0))
def test_shrink_never_frees_an_address_with_a_pod_or_cooling(
    state: tuple[Ipam, int], situation: Situation, now: float
) -> None:
    ipam, pods = state
    pool = ipam.pool
    effects = decide_shrink(pool, policy_input(ipam), situation, TUNING, now)
    for effect in effects:
        if isinstance(effect, UnassignAddresses):
            for address in effect.ipv4_addresses:
                slot = pool.slots[address]
                assert slot.key is None and not slot.cooling
        else:
            assert isinstance(effect, FreeEni)
            freed = pool.enis[effect.eni_id]
            assert not freed.info.is_primary and freed.assigned == 0 and freed.cooling == 0
    assert pool.assigned == pods  # deciding changes nothing


@pytest.mark.parametrize(
    ("first_pod", "now", "young"),
    [
        (None, 299.0, True),
        (None, 899.0, True),  # no pod yet: the fill is kept for the pods to come
        (None, 900.0, False),
        (600.0, 610.0, True),  # pods coming: the hold counts from the first one
        (600.0, 899.0, False),  # ... until they settled (3 pods, then 5 min of quiet)
        (600.0, 900.0, False),
        (10.0, 310.0, False),  # an early first pod: from the first plan
    ],
)
def test_the_boot_hold_counts_from_the_first_pod(
    first_pod: float | None, now: float, young: bool
) -> None:
    backoff, demand = Backoff(TUNING), Demand(TUNING.rate_window_s)
    backoff.start(0.0)
    if first_pod is not None:
        for i in range(3):
            demand.arrival(first_pod + i)
    assert backoff.situation(demand, now).young is young


def test_pods_waiting_on_a_long_backoff_retry_no_sooner_than_the_urgent_cap() -> None:
    backoff, demand = Backoff(TUNING), Demand(TUNING.rate_window_s)
    assign = AssignAddresses(effect_id=1, eni_id="eni-0000", ipv4_count=1)
    create = CreateEni(effect_id=2, subnet_id="s", security_groups=())
    for _attempt in range(8):  # throttled again and again: the backoff is at its cap
        assign_pause = backoff.throttled(assign, "eni-0000", 100.0)
        create_pause = backoff.throttled(create, "eni-0000", 100.0)
    cap = TUNING.urgent_backoff_cap_s
    retry = min(assign_pause, cap)
    # A retry every 2.5-5 s (the old cap) from each of 500 nodes kept the account's bucket
    # empty in the 500-node burst; the pods' nodes now wait 10 s or more.
    assert retry > 10.0
    early = backoff.situation(demand, 100.0 + 10.0)
    assert not early.can_assign and not early.can_create_urgently
    assert backoff.situation(demand, 100.0 + retry).can_assign
    assert backoff.situation(demand, 100.0 + min(create_pause, cap)).can_create_urgently
    # look-ahead growth (no pod waiting) still waits the whole backoff
    assert not backoff.situation(demand, 100.0 + create_pause - 0.01).can_create
    assert backoff.situation(demand, 100.0 + create_pause).can_create
