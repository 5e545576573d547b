"""The ``adaptive`` warm-pool policy: the project's own, sized from demand instead of knobs.

Upstream holds a fixed number of idle addresses (WARM_IP_TARGET) or whole idle ENIs
(WARM_ENI_TARGET) whatever the node is doing, and retries a throttled call every 5 s. This
policy watches two rates instead, averaged exponentially over ``rate_window_s`` (30 s):

* ``arrivals``: addresses handed out per second (new allocations), bounded by the quiet
  since the last arrival (after ``g`` seconds without one, no rate above ``3 / g`` is still
  plausible: a burst's rate falls within seconds of its end, a trickle keeps its own);
* ``net``: arrivals minus releases (a released address comes back after its cooldown, so on
  a node with steady churn ``net`` is about 0 and the pool need not grow).

Targets, in addresses (``unit`` converts to /28 prefixes in prefix mode):

* ``low = max(min_warm, WARM_IP_TARGET, ceil(m + 1.5 * sqrt(m)))`` with ``m = arrivals *
  refill_horizon_s`` (8 s: a policy pass, a call and its taking effect; 1 s while pods
  wait or addresses are coming, since each call's answer runs the policy again): the ready
  addresses that cover the arrivals expected before a top-up lands, with a Poisson margin;
* ``batch = ceil(net * batch_horizon_s)`` (45 s): what one growth call adds beyond ``low``,
  so a growing node makes few larger calls and a steady node holds almost nothing idle
  (a shorter horizon while calls were never throttled, 10 s, held 5-45 % fewer idle
  address-hours at 10 nodes but left 65 pods waiting over 5 s in the 1,000-node scale-up:
  a node learns that calls are scarce only once the scale-up is under way);
* growth when ``available + pending - waiting < low``: up to ``high = low + batch``, lowest
  ENIs first, new ENIs created with their addresses in the same call;
* ENI look-ahead: when the room left on attached ENIs plus what is ready lasts less than
  ``eni_lookahead_s`` (120 s) at the ``net`` rate, the next ENI is created before it is
  needed, so nodes that grow together spread their CreateNetworkInterface calls out;
* shrink above ``keep = max(high, low, 2 * ceil(m + 1.5 * sqrt(m)))`` (the hysteresis on
  the demand's share: with no demand at all, ``keep`` is ``low``, and a floor set by
  WARM_IP_TARGET is not doubled): all the surplus, or half of it per pass
  (every ``shrink_interval_s``) while demand still grows by an address or more a batch
  horizon; an empty ENI is freed only when the other ENIs still leave a whole spare ENI of
  room.

Three situations change that (:class:`Situation`, kept by :class:`Backoff`; the whole policy,
with its demand and backoff, is :class:`AdaptivePolicy` behind :class:`ipamcore.policy.Policy`):

* young: until pods came and ``net`` settled, for at most ``boot_hold_s`` after the later
  of the first plan and the first pod (``boot_idle_hold_s``, 15 min, while no pod came at
  all: a fleet launched at 3 nodes a second takes minutes to boot, and its first nodes must
  not give their fill back just before the pods come), the
  pool holds at least its first ``boot_enis`` (2) ENIs' worth (counted on the whole pool,
  so ENIs busy with a call never make it grow twice) and shrinks no lower (what growth
  asked for beyond it at the end of a burst goes back as usual): a node the autoscaler just
  launched is about to get pods, and the calls made at boot (spread out as nodes join)
  are not made by every node at once in the middle of a cluster-wide scale-up, when the
  account's buckets (5 calls a second per action) run dry;
* congested: for ``congestion_hold_s`` after a throttled growth call, each growth call fills
  its ENI and nothing shrinks (calls are the scarce thing then, not addresses);
* scarce: for ``history_s`` (30 min) after any throttled call, shrink keeps room for the
  most pods the node had at once in that window (:class:`History`): between two peaks of a
  recurring workload the addresses would only be asked for again, in the next peak, when
  every node asks at once;
* backing off: a throttled call pauses that action only (EC2 has a bucket per action), from
  ``backoff_base_s`` doubling to ``backoff_cap_s``, times a jitter factor in [0.5, 1) from
  a CRC of the node's primary ENI id and the attempt (the core has no randomness, and a
  thousand nodes must not retry in step); growth for pods that need an address now waits
  at most ``urgent_backoff_cap_s``.

Where it loses (README, "The adaptive policy", measured by ``benchmarks/policies.py``): on
small clusters, where calls are never throttled, it holds more idle addresses than the best
fixed WARM_IP_TARGET=1-3: that setting holds one to three ready addresses and lets pods wait a
call (p99 0.3-0.7 s), where this policy keeps p99 at 0 s, as WARM_ENI_TARGET=1 does; and the
boot fill, which keeps a fleet's scale-up off the account's buckets, is idle on nodes that get
few pods. It makes more EC2 calls than WARM_ENI_TARGET.
"""

from __future__ import annotations

import collections
import math
import zlib

import attrs

from ipamcore.config import AdaptiveTuning
from ipamcore.effects import CreateEni, Effect, FreeEni
from ipamcore.inventory import EniState
from ipamcore.model import IPS_PER_PREFIX
from ipamcore.policy import (
    PolicyInput,
    assign_effect,
    create_effect,
    free_blocks,
    growable,
    may_free,
    room,
    unassign_from_highest,
)
from ipamcore.pool import AddressPool


class Demand:
    """Exponentially averaged arrival and release counts (pure: time comes in as ``now``).

    The averages lag: 30 s after a burst they still report much of its rate. So the rates
    are also bounded by the quiet since the last arrival (:func:`gap_bound`): a rate ``r``
    leaves a gap of ``g`` seconds with probability ``exp(-r * g)``, so after a gap ``g`` no
    rate above ``gap_confidence / g`` is still plausible (``gap_confidence`` 3: 5 %). A
    Poisson trickle of one pod every 15 s is barely touched (its gaps are short); the rate
    of a burst that ended falls within seconds instead of minutes.
    """

    __slots__ = ("_arrivals", "_at", "_releases", "first_arrival", "gap_confidence",
                 "last_arrival", "seen", "window_s")  # fmt: skip

    def __init__(self, window_s: float, gap_confidence: float = 3.0) -> None:
        self.window_s = window_s
        self.gap_confidence = gap_confidence
        self._arrivals = 0.0
        self._releases = 0.0
        self._at = -math.inf
        self.last_arrival = -math.inf
        self.first_arrival = math.inf
        self.seen = 0  # arrivals ever

    def _decay(self, now: float) -> None:
        if now > self._at:
            if self._arrivals or self._releases:
                factor = math.exp(-(now - self._at) / self.window_s)
                self._arrivals *= factor
                self._releases *= factor
            self._at = now

    def arrival(self, now: float) -> None:
        """Count one new allocation at ``now``."""
        self._decay(now)
        self._arrivals += 1.0
        self.seen += 1
        self.last_arrival = max(self.last_arrival, now)
        self.first_arrival = min(self.first_arrival, now)

    def release(self, now: float) -> None:
        """Count one release at ``now``."""
        self._decay(now)
        self._releases += 1.0

    def rates(self, now: float) -> Rates:
        """The rates as of ``now`` (a query: the averages are decayed in the answer only),
        the arrival rate bounded by the quiet since the last arrival."""
        factor = math.exp(-(now - self._at) / self.window_s) if now > self._at else 1.0
        if not (self._arrivals or self._releases):
            factor = 0.0
        averaged = self._arrivals * factor / self.window_s
        arrivals = min(averaged, gap_bound(now - self.last_arrival, self.gap_confidence))
        releases = self._releases * factor / self.window_s
        return Rates(arrivals, min(averaged - releases, arrivals))


def gap_bound(gap_s: float, confidence: float) -> float:
    """The highest arrival rate still plausible after ``gap_s`` seconds without an arrival
    (``confidence / gap_s``; inf for a gap of 0, 0 for an infinite one)."""
    if gap_s <= 0:
        return math.inf
    return confidence / gap_s


@attrs.frozen
class Rates:
    """Addresses per second: handed out, and handed out minus released."""

    arrivals: float = 0.0
    net: float = 0.0


@attrs.frozen
class Situation:
    """What the adaptive policy knows besides the pool: demand and its own call history."""

    rates: Rates = Rates()
    young: bool = False  # booted less than ``boot_hold_s`` ago, pods not settled yet
    congested: bool = False  # a growth call was throttled less than ``congestion_hold_s`` ago
    can_assign: bool = True  # AssignPrivateIpAddresses is not backing off
    can_create: bool = True  # CreateNetworkInterface is not backing off
    can_create_urgently: bool = True  # ... or only briefly, and pods need addresses now
    scarce: bool = False  # a call was throttled within ``history_s``: calls are scarce here
    peak: int = 0  # the most pods at once within ``history_s`` (:class:`History`)


def _young(
    now: float, started: float, demand: Demand, settled: bool, tuning: AdaptiveTuning
) -> bool:
    """Whether the node still keeps its boot fill: until ``boot_idle_hold_s`` after its
    first plan while no pod has come; once pods come, until they settle, for at most
    ``boot_hold_s`` after the later of the first plan and the first pod."""
    if demand.seen == 0:
        return now - started < tuning.boot_idle_hold_s
    return not settled and now - max(started, demand.first_arrival) < tuning.boot_hold_s


class Backoff:
    """Per-action backoff after throttled growth calls, and the node's age.

    EC2 throttles each action in a bucket of its own, so a throttled CreateNetworkInterface
    pauses ENI creation only: top-ups of attached ENIs for waiting pods go on. Growth for
    pods that need an address now waits at most ``urgent_backoff_cap_s``; look-ahead growth
    waits the whole backoff.
    """

    def __init__(self, tuning: AdaptiveTuning) -> None:
        self.tuning = tuning
        self.first_plan_at: float | None = None
        self.congested_until = -math.inf
        self.last_throttled = -math.inf
        self.streak: dict[str, int] = {}
        self.paused_from: dict[str, tuple[float, float]] = {}  # action -> (throttled at, pause)

    def start(self, now: float) -> None:
        """The node's first plan: the boot hold counts from here (once)."""
        if self.first_plan_at is None:
            self.first_plan_at = now

    def situation(self, demand: Demand, now: float) -> Situation:
        """The situation at ``now`` (a query: nothing is recorded; before :meth:`start` the
        node counts as just started)."""
        started = now if self.first_plan_at is None else self.first_plan_at
        never = (-math.inf, 0.0)
        assign_at, assign_pause = self.paused_from.get("assign", never)
        create_at, create_pause = self.paused_from.get("create", never)
        urgent_cap = self.tuning.urgent_backoff_cap_s
        rates = demand.rates(now)
        settled = demand.seen > 0 and rates.net <= self.tuning.settled_rate
        return Situation(
            rates=rates,
            young=_young(now, started, demand, settled, self.tuning),
            congested=now < self.congested_until,
            scarce=now - self.last_throttled < self.tuning.history_s,
            can_assign=now >= assign_at + min(assign_pause, urgent_cap),
            can_create=now >= create_at + create_pause,
            can_create_urgently=now >= create_at + min(create_pause, urgent_cap),
        )

    def throttled(self, effect: Effect, seed: str, now: float) -> float:
        """Record a throttled growth call; returns the pause it starts (and calls are
        scarce from now on, see :class:`Situation`)."""
        action = "create" if isinstance(effect, CreateEni) else "assign"
        attempt = self.streak.get(action, 0) + 1
        self.streak[action] = attempt
        pause = backoff_delay(attempt, f"{seed}/{action}", self.tuning)
        self.paused_from[action] = (now, pause)
        self.congested(now)
        return pause

    def congested(self, now: float) -> None:
        """A shrink call was throttled: hold the pool (no shrink, growth fills ENIs) for
        ``congestion_hold_s``; giving addresses back is never worth a retry storm."""
        self.congested_until = max(self.congested_until, now + self.tuning.congestion_hold_s)
        self.last_throttled = max(self.last_throttled, now)

    def succeeded(self, effect: Effect) -> None:
        """Forget the failure streak of ``effect``'s action: it went through."""
        self.streak.pop("create" if isinstance(effect, CreateEni) else "assign", None)

    def wake_at(self, now: float) -> float:
        """The next time a pause or hold recorded here ends (inf if none is pending)."""
        ends = [at + pause for at, pause in self.paused_from.values()]
        ends += [at + min(pause, self.tuning.urgent_backoff_cap_s)
                 for at, pause in self.paused_from.values()]  # fmt: skip
        ends.append(self.congested_until)
        if self.first_plan_at is not None:
            ends.append(self.first_plan_at + self.tuning.boot_hold_s)
            ends.append(self.first_plan_at + self.tuning.boot_idle_hold_s)
        return min((t for t in ends if t > now), default=math.inf)


class History:
    """The most pods the node had at once, per ``bucket_s``, over the last ``span_s``.

    Where calls are scarce (EC2 throttled one lately), giving addresses back between two
    peaks of a recurring workload (batch waves, a diurnal cycle) only means asking for them
    again, in the middle of the next peak, when every node asks at once. So while calls are
    scarce the pool keeps room for the recent peak; the history says when demand has
    really fallen (the peak leaves the window).
    """

    __slots__ = ("_buckets", "bucket_s", "span_s")

    def __init__(self, span_s: float, bucket_s: float) -> None:
        self.span_s = span_s
        self.bucket_s = max(bucket_s, 1e-9)
        self._buckets: collections.deque[tuple[int, int]] = collections.deque()

    def observe(self, now: float, pods: int) -> None:
        """Record ``pods`` at ``now`` (times must not go back; an older one is ignored)."""
        index = math.floor(now / self.bucket_s)
        buckets = self._buckets
        if buckets and buckets[-1][0] > index:
            return
        if buckets and buckets[-1][0] == index:
            if pods > buckets[-1][1]:
                buckets[-1] = (index, pods)
        else:
            buckets.append((index, pods))
        oldest = index - math.ceil(self.span_s / self.bucket_s)
        while buckets and buckets[0][0] < oldest:
            buckets.popleft()

    def peak(self) -> int:
        """The most pods at once in the window (0 before any observation)."""
        return max((pods for _i, pods in self._buckets), default=0)


@attrs.frozen
class Targets:
    """What the policy aims for, in addresses."""

    low: int  # grow when fewer than this are ready (or coming)
    high: int  # grow up to this
    keep: int  # give back only what is ready beyond this


def targets(
    rates: Rates, inp: PolicyInput, tuning: AdaptiveTuning, growing: bool = False
) -> Targets:
    """The ready addresses to keep (``low``) and the batch to ask for, from the demand rates.

    ``growing`` (pods wait or addresses are coming): each call's answer runs the policy
    again, so the next top-up is one call away (``burst_horizon_s``), not a policy interval.
    """
    cfg = inp.config
    horizon = tuning.burst_horizon_s if growing else tuning.refill_horizon_s
    expected = rates.arrivals * horizon
    needed = expected + tuning.safety_sigmas * math.sqrt(expected)
    covered = math.ceil(needed)
    low = max(tuning.min_warm, cfg.warm_ip_target, covered)
    batch = math.ceil(max(rates.net, 0.0) * tuning.batch_horizon_s)
    high = low + batch
    # Hysteresis against shrinking what the next arrivals would ask for again: on the
    # demand-driven part of ``low`` only (a floor set by WARM_IP_TARGET is not doubled).
    # A rate that all but decayed still counts: between two waves of a batch workload the
    # second ready address is what spares 500 nodes a call each when the next wave comes
    # (benchmarks/policies.py, batch at 500 nodes: 79 pods over 5 s with it, 258 without).
    keep = max(high, low, math.ceil(tuning.keep_factor * covered))
    return Targets(low=low, high=high, keep=keep)


def boot_fill(inp: PolicyInput, tuning: AdaptiveTuning) -> int:
    """The addresses a young node holds: its first ``boot_enis`` ENIs' worth, counted on the
    whole pool (an ENI busy with a call, or one being created, counts with what it asked
    for: the fill never grows past that while calls are in flight)."""
    return min(tuning.boot_enis, inp.max_enis) * inp.per_eni


def _unit(inp: PolicyInput) -> int:
    return IPS_PER_PREFIX if inp.prefix_mode else 1


def _units(addresses: int, inp: PolicyInput) -> int:
    return -(-addresses // _unit(inp))


def _available(pool: AddressPool) -> int:
    return pool.available


def decide_growth(
    pool: AddressPool, inp: PolicyInput, situation: Situation, tuning: AdaptiveTuning
) -> list[Effect]:
    """Top-ups and new ENIs that bring ready-or-coming addresses up to ``high``; while
    ``congested`` (a growth call was throttled lately) each call fills its ENI; while
    ``young`` (just booted) the pool holds at least :func:`boot_fill`."""
    rates, congested = situation.rates, situation.congested
    aim = targets(rates, inp, tuning, growing=inp.waiting > 0 or inp.pending_addresses > 0)
    ready = _available(pool) + inp.pending_addresses - inp.waiting
    total = pool.usable_total + inp.pending_addresses
    room_pods = inp.max_pods - total
    short = 0
    if ready < aim.low:
        short = aim.high - ready
    short = max(short, inp.config.minimum_ip_target - total)
    short = _units(min(short, room_pods), inp) if short > 0 else 0
    enis = growable(pool, inp)
    effects: list[Effect] = []
    if situation.young and not inp.prefix_mode and not inp.pending_addresses:
        short = max(short, min(boot_fill(inp, tuning) - total, room_pods))
    for eni in enis:
        if short <= 0:
            break
        free_slots = room(eni, inp)
        n = free_slots if congested else min(free_slots, short)
        if n > 0:
            if situation.can_assign:  # else: wait for the backoff, not for a new ENI
                effects.append(assign_effect(eni.eni_id, n, inp.prefix_mode))
            short -= n
    eni_slots = inp.max_enis - len(pool.enis) - inp.pending_enis
    while short > 0 and eni_slots > 0 and inp.subnet_id and situation.can_create_urgently:
        n = inp.per_eni if congested else min(inp.per_eni, short)
        effects.append(create_effect(inp, n))
        short -= n
        eni_slots -= 1
    if effects or eni_slots <= 0 or inp.pending_enis or not inp.subnet_id:
        return effects
    if not situation.can_create:
        return []
    # Look-ahead: the room left on attached ENIs (plus what is ready) at the net rate.
    headroom = sum(room(eni, inp) for eni in enis) * _unit(inp) + max(ready, 0)
    if rates.net > 0 and headroom < rates.net * tuning.eni_lookahead_s and headroom < room_pods:
        n = max(_units(aim.high - aim.low, inp), 1)
        if congested:  # top-ups later would be throttled too: ask for more now
            n = max(n, inp.per_eni * 2 // 3)
        n = min(inp.per_eni, n)
        return [create_effect(inp, n)]
    return []


def decide_shrink(
    pool: AddressPool, inp: PolicyInput, situation: Situation, tuning: AdaptiveTuning, now: float
) -> list[Effect]:
    """Give back the surplus above ``keep`` (half of it per pass while demand still grows
    by an address or more a batch horizon), or one empty ENI; while calls are ``scarce``
    keep room for the recent peak; nothing while ``congested`` (the surplus was asked for
    on purpose); while ``young``, nothing of the boot fill (what growth asked for beyond it,
    at the end of a burst, goes back as it would later)."""
    if situation.congested or (situation.young and inp.prefix_mode):
        return []
    aim = targets(situation.rates, inp, tuning)
    cfg = inp.config
    available = _available(pool)
    floor = max(cfg.minimum_ip_target, 0)
    if situation.young:
        floor = max(floor, boot_fill(inp, tuning))
    if situation.scarce:  # keep room for the recent peak: regrowing costs scarce calls
        floor = max(floor, situation.peak + aim.low)
    surplus_addresses = min(available - aim.keep, pool.usable_total - floor)
    enis_high_first = sorted(pool.enis.values(), key=lambda e: e.rank, reverse=True)
    for eni in enis_high_first:
        if (
            may_free(eni, inp, now)
            and eni.slots <= surplus_addresses
            and _spare_after(pool, eni, inp) >= aim.keep
        ):
            return [FreeEni(effect_id=0, eni_id=eni.eni_id)]
    surplus = surplus_addresses // _unit(inp)
    if surplus <= 0:
        return []
    growing = situation.rates.net * tuning.batch_horizon_s >= 1.0  # an address a batch
    give = max(1, surplus // 2) if growing else surplus
    return unassign_from_highest(pool, inp, enis_high_first, give, free_blocks)


def _spare_after(pool: AddressPool, leaving: EniState, inp: PolicyInput) -> int:
    """Addresses the other ENIs could still hand out, beyond one spare ENI's worth
    (hysteresis: creating an ENI again costs two EC2 calls)."""
    capacity = sum(
        inp.per_eni
        for eni in pool.enis.values()
        if eni is not leaving and not eni.excluded and not eni.leaving
    )
    return (capacity - inp.per_eni) * _unit(inp) - pool.assigned


def backoff_delay(attempt: int, seed: str, tuning: AdaptiveTuning) -> float:
    """Seconds to pause growth after the ``attempt``-th throttled call in a row (1, 2, ...).

    Exponential from ``backoff_base_s`` up to ``backoff_cap_s``, times a jitter factor in
    [0.5, 1) taken from a CRC of ``seed`` and ``attempt``: the same node and attempt always
    wait the same (the core has no randomness), different nodes spread out.
    """
    ceiling = min(tuning.backoff_cap_s, tuning.backoff_base_s * 2.0 ** min(max(attempt, 1) - 1, 30))
    fraction = zlib.crc32(f"{seed}/{attempt}".encode()) / 2.0**32
    return ceiling * (0.5 + 0.5 * fraction)


class AdaptivePolicy:
    """The ``adaptive`` policy behind :class:`ipamcore.policy.Policy`: demand, backoff and
    the node's age are its own state."""

    observes_pods = True

    def __init__(self, tuning: AdaptiveTuning) -> None:
        self.tuning = tuning
        self.demand = Demand(tuning.rate_window_s, tuning.gap_confidence)
        self.backoff = Backoff(tuning)
        self.history = History(tuning.history_s, tuning.history_bucket_s)

    def grow(self, pool: AddressPool, inp: PolicyInput, now: float) -> list[Effect]:
        """The growth effects for this round (see :class:`ipamcore.policy.Policy`)."""
        self.backoff.start(now)
        self.history.observe(now, pool.assigned)
        return decide_growth(pool, inp, self._situation(now), self.tuning)

    def shrink(self, pool: AddressPool, inp: PolicyInput, now: float) -> list[Effect]:
        """The shrink effects for this round (see :class:`ipamcore.policy.Policy`)."""
        self.history.observe(now, pool.assigned)
        return decide_shrink(pool, inp, self._situation(now), self.tuning, now)

    def _situation(self, now: float) -> Situation:
        situation = self.backoff.situation(self.demand, now)
        return attrs.evolve(situation, peak=self.history.peak())

    def assigned(self, now: float) -> None:
        """An address was assigned at ``now``: one arrival for the demand rates."""
        self.demand.arrival(now)

    def released(self, now: float) -> None:
        """An address was released at ``now``: one release for the demand rates."""
        self.demand.release(now)

    def succeeded(self, effect: Effect) -> None:
        """``effect`` went through: its action's backoff starts over."""
        self.backoff.succeeded(effect)

    def throttled(self, effect: Effect, seed: str, now: float) -> float:
        """``effect`` was throttled: back off that action alone; no pause of all growth."""
        self.backoff.throttled(effect, seed, now)
        return -math.inf  # per action, in the situation: no pause of all growth

    def shrink_throttled(self, now: float) -> None:
        """A shrink call was throttled: hold what the node has while calls are scarce."""
        self.backoff.congested(now)  # calls are scarce: hold what the node has

    def wake_at(self, now: float) -> float:
        """When the policy wants the next round (a backoff's end), or infinity."""
        return self.backoff.wake_at(now)
