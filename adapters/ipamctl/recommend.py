"""``ipamctl recommend``: sweep the warm-pool knobs on a trace or scenario in the simulator and
print every setting side by side with upstream's default (idle address-hours, p99 address
wait, pods waiting over 5 s, EC2 mutating calls), the trade-off each one makes against it, the
settings on the trade-off frontier, and one recommendation, or why there is none.

Every candidate runs the same workload (same seed) on the same simulated cluster; upstream's
default (WARM_ENI_TARGET=1) always runs too, as the baseline. A candidate is on the frontier
when no other is at least as good on idle address-hours, p99 wait and EC2 calls and better on
one. The recommendation: among frontier candidates that served every pod with a p99 wait
within ``--max-p99`` (default 1 s: one EC2 round trip), no pod over ``--wait-threshold``
(when that is above the p99 budget) and no throttled calls if any candidate managed none,
the one holding the fewest idle address-hours (ties, within 5 %: fewer EC2 calls).

When none qualifies the command says so and why (nodes full: more pods at once than a node
holds; EC2 throttling; pods arriving faster than a call brings addresses), names the closest
setting (lowest p99) without recommending it, and exits 1; ``--json`` has ``"met": false``
and the reasons. Settings impossible on the instance type (prefix delegation on a type that
is not Nitro, WARM_IP_TARGET beyond what a node holds) are refused in ``--candidate`` and
skipped, with a note, in the default sweep; knobs a setting ignores are named.

Labels are ``--candidate`` specs (``WARM_IP_TARGET=5,MINIMUM_IP_TARGET=20``,
``policy=adaptive``): paste one back to rerun it, or set its knobs on the node.
``--plot FILE.png`` draws idle address-hours against p99 wait (checked before the run).
Exit codes: 0 a recommendation, 1 none meets the requirements (or the picture failed),
2 bad arguments, an impossible setting or a bad trace.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import attrs

from adapters.ipamctl.families import (
    IPV6_NO_SWEEP,
    family_label,
    recommend_knobs,
    with_family,
)
from adapters.ipamctl.simulate import (
    IDLE_DEFINITION,
    TRACE_HELP,
    ProgressBar,
    Setup,
    SimulateUsageError,
    add_source_arguments,
    build_setup,
    check_plot_target,
    check_settings_all,
    draw_safely,
    fleet_label,
    knob_names,
    node_capacity,
    pool_config,
    type_counts,
)
from adapters.simulator import Cluster, Measures, SimConfig
from adapters.simulator.cluster import node_types_of
from adapters.simulator.workload import ADD, DEL, PodEvent
from ipamcore.config import PolicyName, PoolConfig
from ipamcore.economy import usable_addresses
from ipamcore.limits import InstanceLimits, limits_for

DEFAULT_SPEC = "WARM_ENI_TARGET=1"
# upstream's knobs in the ranges operators use, and the adaptive policy (labels are specs)
DEFAULT_SPECS: tuple[str, ...] = (
    DEFAULT_SPEC,
    "WARM_ENI_TARGET=2",
    "WARM_IP_TARGET=1",
    "WARM_IP_TARGET=2",
    "WARM_IP_TARGET=3",
    "WARM_IP_TARGET=5",
    "WARM_IP_TARGET=8",
    "WARM_IP_TARGET=5,MINIMUM_IP_TARGET=20",
    "ENABLE_PREFIX_DELEGATION=true,WARM_PREFIX_TARGET=1",
    "policy=adaptive",
)
MEASURES = ("idle_address_hours", "wait_p99_s", "mutating_total")
IDLE_TIE = 0.05
SAME = 0.05  # a ratio within 5 % of the default's is "the same"
P99_SAME_S = 0.05


@attrs.frozen
class Candidate:
    """One setting and what it measured."""

    label: str
    policy: str
    knobs: tuple[str, ...]
    measures: Measures
    notes: tuple[str, ...] = ()

    def key(self) -> tuple[float, float, float]:
        m = self.measures
        return (m.idle_address_hours, m.wait_p99_s, float(m.mutating_total))

    def summary(self) -> dict[str, Any]:
        m = self.measures
        return {
            "label": self.label, "policy": self.policy, "knobs": list(self.knobs),
            "idle_address_hours": m.idle_address_hours, "wait_p50_s": m.wait_p50_s,
            "wait_p99_s": m.wait_p99_s, "wait_max_s": m.wait_max_s,
            "pods_over_threshold": m.pods_over_threshold, "pods_unserved": m.pods_unserved,
            "mutating_calls": m.mutating_total, "throttled_calls": m.throttled_total,
            "peak_held": m.peak_held, "notes": list(self.notes),
        }  # fmt: skip

    def is_default(self) -> bool:
        return pool_config(self.policy, self.knobs) == PoolConfig()


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is at least as good as ``b`` on every measure and better on one (lower wins)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def frontier(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates no other candidate dominates, in input order."""
    keys = [c.key() for c in candidates]
    return [c for c, k in zip(candidates, keys, strict=True)
            if not any(dominates(other, k) for other in keys)]  # fmt: skip


def qualifies(c: Candidate, max_p99_s: float) -> bool:
    """Served every pod, p99 within the budget, and (when the budget is below the wait
    threshold) no pod over the threshold."""
    m = c.measures
    over_ok = m.pods_over_threshold == 0 or max_p99_s >= m.wait_threshold_s
    return m.pods_unserved == 0 and m.wait_p99_s <= max_p99_s and over_ok


def recommend(candidates: Sequence[Candidate], max_p99_s: float) -> Candidate:
    """The frontier candidate to use, or, when none qualifies, the closest (lowest p99);
    :func:`qualifies` tells which (see the module docstring for the rule)."""
    front = frontier(candidates)
    ok = [c for c in front if qualifies(c, max_p99_s)]
    calm = [c for c in ok if c.measures.throttled_total == 0]
    pool = calm or ok
    if not pool:
        return min(candidates, key=lambda c: (
            c.measures.pods_unserved, c.measures.pods_over_threshold, c.measures.wait_p99_s,
            c.measures.throttled_total, c.measures.idle_address_hours))  # fmt: skip
    least = min(c.measures.idle_address_hours for c in pool)
    near = [c for c in pool if c.measures.idle_address_hours <= least * (1 + IDLE_TIE) + 1e-9]
    return min(near, key=lambda c: (c.measures.mutating_total, c.measures.idle_address_hours))


def canonical_label(policy: str, knobs: Sequence[str]) -> str:
    """The spec that ``--candidate`` reads back: ``policy=X`` first (if not upstream), then
    the knobs as given, comma-separated without spaces."""
    parts = [] if policy == PolicyName.UPSTREAM.value else [f"policy={policy}"]
    parts += ["=".join(p.strip() for p in k.partition("=")[::2]) for k in knobs]
    return ",".join(parts) or DEFAULT_SPEC


def parse_candidate(spec: str) -> tuple[str, str, tuple[str, ...]]:
    """``--candidate "policy=adaptive"`` or ``"WARM_IP_TARGET=5,MINIMUM_IP_TARGET=10"``;
    returns (label, policy, knobs) with the label in the canonical, pasteable form."""
    policy, knobs = PolicyName.UPSTREAM.value, []
    policies = 0
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, value = item.partition("=")
        if name.strip().lower() == "policy":
            policies += 1
            policy = value.strip()
            if policy not in {p.value for p in PolicyName}:
                raise SimulateUsageError(
                    f"--candidate {spec!r}: policy must be one of "
                    + ", ".join(p.value for p in PolicyName)
                )
        else:
            knobs.append(item)
    if policies > 1:
        raise SimulateUsageError(f"--candidate {spec!r}: policy is given twice")
    try:
        pool_config(policy, knobs)  # validate now, before any run
    except SimulateUsageError as exc:
        raise SimulateUsageError(f"--candidate {spec!r}: {exc}") from None
    return canonical_label(policy, knobs), policy, tuple(knobs)


def add_recommend_parser(subparsers: Any) -> argparse.ArgumentParser:
    sp: argparse.ArgumentParser = subparsers.add_parser(
        "recommend",
        help="sweep warm-pool settings in the simulator and recommend one",
        description="Run the workload once per candidate setting and upstream's default, "
        "print each side by side with the default (idle address-hours, p99 wait, pods "
        "waiting, EC2 calls) with the trade-off it makes, the frontier, and one "
        "recommendation, or why none meets --max-p99 (exit 1).",
        epilog=TRACE_HELP + "\n" + IDLE_DEFINITION + ".\n\nexit codes: 0 a recommendation, "
        "1 no setting meets the requirements, 2 bad arguments or an impossible setting",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_arguments(sp)
    sp.add_argument("--candidate", action="append", default=[], metavar="SPEC",
                    help='a setting to try instead of the default sweep, e.g. '
                    '"WARM_IP_TARGET=5,MINIMUM_IP_TARGET=10" or "policy=adaptive" '
                    "(repeat; the labels printed are specs you can paste back)")  # fmt: skip
    sp.add_argument("--max-p99", type=float, default=1.0, metavar="SECONDS",
                    help="p99 wait a recommendation may have (default %(default)s)")
    sp.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", dest="knobs",
                    help="the cluster's IP families and network cards, which every setting "
                    "shares: ENABLE_IPv6, ENABLE_IPv4, ENABLE_MULTI_NIC (IPv6 single stack: "
                    "nothing to sweep, said so with the one run's figures)")
    sp.add_argument("--json", action="store_true", dest="rec_json", help="print JSON")
    sp.add_argument("--plot", metavar="FILE.png", help="plot the frontier")
    sp.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return sp


Runner = Callable[[SimConfig, Sequence[PodEvent]], Measures]
Spec = tuple[str, str, tuple[str, ...]]


def _run(config: SimConfig, events: Sequence[PodEvent]) -> Measures:
    return Cluster(config, events).run()


def sweep(
    base: SimConfig,
    events: Sequence[PodEvent],
    specs: Sequence[Spec],
    progress: TextIO | None = None,
    run: Runner = _run,
    notes: dict[str, tuple[str, ...]] | None = None,
) -> list[Candidate]:
    """Run every candidate on the same workload; a line on ``progress`` per candidate (and
    a bar by wall time while one runs)."""
    out: list[Candidate] = []
    began = time.perf_counter()
    for i, (label, policy, knobs) in enumerate(specs, start=1):
        config = attrs.evolve(base, pool=with_family(pool_config(policy, knobs), base.pool))
        if progress is not None:
            head = f"[{i}/{len(specs)}] {label}"
            bar = ProgressBar(progress, width=20)
            progress.write(head)
            progress.flush()
            if run is _run:
                measures = Cluster(config, events).run(
                    lambda d, t, c, bar=bar, head=head: _bar(progress, head, bar, d, t),
                    steps=ProgressBar.STEPS,
                )
            else:
                measures = run(config, events)
            progress.write(f"\r{head}: idle {measures.idle_address_hours:,.1f} address-hours, "
                           f"p99 {measures.wait_p99_s:.2f} s, {measures.mutating_total:,} "
                           f"calls ({time.perf_counter() - began:.1f} s){' ' * 20}\n")
        else:
            measures = run(config, events)
        out.append(Candidate(label, policy, knobs, measures, (notes or {}).get(label, ())))
    return out


def _bar(stream: TextIO, head: str, bar: ProgressBar, done: float, total: float) -> None:
    frac = min(done / total, 1.0) if total else 1.0
    wall = bar.wall() - bar.began
    if frac >= 1.0 or wall - bar.drawn < bar.every_s:
        return
    bar.drawn = wall
    stream.write(f"\r{head} ... {frac:4.0%} simulated, {wall:.0f} s")
    stream.flush()


# --------------------------------------------------------------------------- judging
def ratio_text(value: float, base: float) -> str:
    """"0.19x", "44x", "=" against the default's figure."""
    if base <= 0:
        return "=" if value <= 0 else "new"
    r = value / base
    if abs(r - 1) <= SAME:
        return "="
    return f"{r:.2f}x" if r < 10 else f"{r:,.0f}x"


def trade_off(c: Candidate, base: Candidate) -> str:
    """What ``c`` gives and what it gets against the default, in words."""
    same_over = c.measures.pods_over_threshold == base.measures.pods_over_threshold
    if c.key() == base.key() and same_over:
        return "the default" if c.is_default() else "the same as the default"
    m, d = c.measures, base.measures
    gains: list[str] = []
    costs: list[str] = []

    def compare(value: float, ref: float, fewer: str, more: str) -> None:
        if ref <= 0 and value <= 0:
            return
        r = value / ref if ref > 0 else math.inf
        if r < 1 - SAME:
            gains.append(fewer.format(pct=f"{1 - r:.0%}"))
        elif r > 1 + SAME:
            costs.append(more.format(x=f"{r:.1f}x" if r < 10 else f"{r:,.0f}x")
                         if math.isfinite(r) else more.format(x="some"))  # fmt: skip

    compare(m.idle_address_hours, d.idle_address_hours, "{pct} fewer idle addresses",
            "{x} the idle addresses")  # fmt: skip
    compare(m.mutating_total, d.mutating_total, "{pct} fewer EC2 calls", "{x} the EC2 calls")
    dp = m.wait_p99_s - d.wait_p99_s
    if dp > P99_SAME_S:
        costs.append(f"p99 wait +{dp:.2f} s")
    elif dp < -P99_SAME_S:
        gains.append(f"p99 wait {dp:.2f} s")
    do = m.pods_over_threshold - d.pods_over_threshold
    if do > 0:
        costs.append(f"{do:,} more pods waiting > {m.wait_threshold_s:g} s")
    elif do < 0:
        gains.append(f"{-do:,} fewer pods waiting > {m.wait_threshold_s:g} s")
    if m.pods_unserved > d.pods_unserved:
        costs.append(f"{m.pods_unserved - d.pods_unserved:,} more pods never served")
    dt = m.throttled_total - d.throttled_total
    if dt > 0:
        costs.append(f"{dt:,} more throttled calls")
    elif dt < 0:
        gains.append(f"{-dt:,} fewer throttled calls")
    if not costs:
        return "better: " + ", ".join(gains)
    if not gains:
        return "worse: " + ", ".join(costs)
    return ", ".join(gains) + " for " + ", ".join(costs)


def no_regret(candidates: Sequence[Candidate], default: Candidate) -> Candidate | None:
    """The setting with the fewest idle address-hours among those at least as good as the
    default on every measure (idle, p99, calls, pods over the threshold, unserved,
    throttled) and better on one: a change that costs nothing. None if there is none."""
    def key(c: Candidate) -> tuple[float, ...]:
        m = c.measures
        return (m.idle_address_hours, m.wait_p99_s, float(m.mutating_total),
                float(m.pods_over_threshold), float(m.pods_unserved), float(m.throttled_total))

    base = key(default)
    better = [c for c in candidates if c is not default and dominates(key(c), base)]
    return min(better, key=lambda c: c.measures.idle_address_hours, default=None)


def peak_pods_per_node(events: Sequence[PodEvent]) -> tuple[int, int]:
    """(most pods alive at once on one node, that node's index) in a workload."""
    live: Counter[int] = Counter()
    peak, where = 0, 0
    for e in events:
        if e.event != ADD and e.event != DEL:
            continue
        live[e.node] += 1 if e.event == ADD else -1
        if live[e.node] > peak:
            peak, where = live[e.node], e.node
    return peak, where


def peak_pods_in_cluster(events: Sequence[PodEvent]) -> int:
    """Most pods alive at once across the cluster."""
    live = peak = 0
    for e in events:
        if e.event == ADD or e.event == DEL:
            live += 1 if e.event == ADD else -1
            peak = max(peak, live)
    return peak


@attrs.frozen
class Verdict:
    """The recommendation, or the closest setting and why nothing qualifies."""

    best: Candidate
    met: bool
    reasons: tuple[str, ...] = ()


def judge(
    candidates: Sequence[Candidate],
    max_p99_s: float,
    events: Sequence[PodEvent],
    limits: InstanceLimits,
    node_names: Sequence[str] = (),
    skipped: Sequence[str] = (),
    subnet_addresses: int = 0,
    node_limits: Sequence[InstanceLimits] = (),
) -> Verdict:
    """:func:`recommend`, and when its choice does not qualify, the reasons in numbers
    (``node_limits``: each node's type, in a cluster of several; else ``limits``)."""
    best = recommend(candidates, max_p99_s)
    if qualifies(best, max_p99_s):
        return Verdict(best, True)
    m = best.measures
    reasons: list[str] = []
    bad = []
    if m.pods_unserved:
        bad.append(f"{m.pods_unserved:,} pods never got an address")
    if m.wait_p99_s > max_p99_s:
        bad.append(f"p99 wait {m.wait_p99_s:.2f} s > --max-p99 {max_p99_s:g} s")
    if m.pods_over_threshold and max_p99_s < m.wait_threshold_s:
        bad.append(f"{m.pods_over_threshold:,} pods waited > {m.wait_threshold_s:g} s")
    reasons.append(f"no setting meets the requirements; the closest ({best.label}): "
                   + ", ".join(bad))  # fmt: skip
    peak, where = peak_pods_per_node(events)
    name = node_names[where] if where < len(node_names) else str(where)
    if where < len(node_limits):
        limits = node_limits[where]
    secondary = node_capacity(limits, PoolConfig())
    itype = limits.instance_type
    if peak > secondary:
        why = (f"nodes full: node {name} has up to {peak:,} pods at once; a {itype} node "
               f"holds {secondary:,} pod addresses ({limits.max_enis} ENIs x "
               f"{limits.ips_per_eni}) without prefix delegation")  # fmt: skip
        if not limits.supports_prefix_delegation:
            why += (f", and prefix delegation is unsupported on {itype} (not Nitro): "
                    "use a larger or Nitro instance type, or fewer pods a node")
        else:
            pd = node_capacity(limits, PoolConfig(prefix_delegation=True))
            why += f"; with prefix delegation it holds {pd:,}"
        reasons.append(why)
    if m.failed_effects.get("subnet_full") or m.subnet_peak_fraction >= 0.98:
        full = m.failed_effects.get("subnet_full", 0)
        reasons.append(
            f"subnets full: the fullest subnet reached {m.subnet_peak_fraction:.0%} of its "
            f"addresses ({m.subnet_peak_used:,} in use across the subnets; "
            f"{plural(full, 'call')} failed with InsufficientFreeAddressesInSubnet): a "
            "larger subnet, fewer nodes a subnet, or a warm pool that holds fewer idle "
            "addresses"
        )
        if subnet_addresses:
            live = peak_pods_in_cluster(events)
            reasons[-1] += (f"; the workload has up to {live:,} pods at once, the subnets "
                            f"{subnet_addresses:,} addresses for pods")
    throttled = [c for c in candidates if not qualifies(c, max_p99_s)
                 and c.measures.throttled_total > 0]  # fmt: skip
    if len(throttled) == len(candidates) and candidates:
        least = min(c.measures.throttled_total for c in candidates)
        reasons.append(f"EC2 throttled every setting (at least {least:,} throttled calls): "
                       f"{m.nodes:,} nodes share the account's buckets (about 5 calls a second "
                       "per action); spread node launches or pre-warm with MINIMUM_IP_TARGET")
    if len(reasons) == 1:
        reasons.append(f"pods arrive faster than an EC2 call brings addresses: the lowest p99 "
                       f"of any setting is {m.wait_p99_s:.2f} s; raise --max-p99 or add "
                       "settings that keep more addresses ready (--candidate)")  # fmt: skip
    reasons.extend(skipped)
    return Verdict(best, False, tuple(reasons))


# --------------------------------------------------------------------------- picture
def plot(candidates: Sequence[Candidate], verdict: Verdict, max_p99_s: float, path: str,
         title: str) -> None:  # fmt: skip
    """The sweep's picture (:func:`adapters.ipamctl.simplots.plot_recommendation`)."""
    from adapters.ipamctl.simplots import plot_recommendation

    plot_recommendation(candidates, verdict, max_p99_s, path, title)


def candidate_specs(args: argparse.Namespace, limits: InstanceLimits | Sequence[InstanceLimits]
                    ) -> tuple[list[Spec], dict[str, tuple[str, ...]], list[str]]:  # fmt: skip
    """(specs to run, notes by label, skipped settings): the default always first; a
    ``--candidate`` impossible on the type (on any of the cluster's types) is refused, one
    of the default sweep skipped."""
    every = [limits] if isinstance(limits, InstanceLimits) else list(limits)
    given = [parse_candidate(s) for s in args.candidate]
    seen: set[str] = set()
    for label, _p, _k in given:
        if label in seen:
            raise SimulateUsageError(f"--candidate {label} is given twice")
        seen.add(label)
    specs = given or [parse_candidate(s) for s in DEFAULT_SPECS]
    if not any(pool_config(p, k) == PoolConfig() for _l, p, k in specs):
        specs.insert(0, parse_candidate(DEFAULT_SPEC))
    out: list[Spec] = []
    notes: dict[str, tuple[str, ...]] = {}
    skipped: list[str] = []
    for label, policy, knobs in specs:
        impossible, ignored = check_settings_all(pool_config(policy, knobs), knob_names(knobs),
                                                 every)  # fmt: skip
        if impossible:
            if given:
                raise SimulateUsageError(f"--candidate {label}: " + "; ".join(impossible))
            skipped.append(f"skipped {label}: " + "; ".join(impossible))
            continue
        notes[label] = tuple(ignored)
        out.append((label, policy, knobs))
    return out, notes, skipped


def run_recommend(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    try:
        try:
            fixed = recommend_knobs(list(getattr(args, "knobs", [])), knob_names(args.knobs))
        except ValueError as exc:
            raise SimulateUsageError(str(exc)) from None
        args.policy, args.knobs = PolicyName.UPSTREAM.value, fixed
        setup: Setup = build_setup(args)
        base = setup.config
        if base.pool.ipv6_only:
            if args.plot:
                check_plot_target(args.plot)
            return run_ipv6_only(args, setup, stream)
        node_limits = [limits_for(t) for t in node_types_of(base, setup.events)]
        limits = limits_for(base.instance_type)
        specs, notes, skipped = candidate_specs(
            args, list({lim.instance_type: lim for lim in node_limits}.values())
        )
        if args.max_p99 < 0:
            raise SimulateUsageError("--max-p99 must be 0 or more")
        if args.plot:
            check_plot_target(args.plot)
    except SimulateUsageError as exc:
        sys.stderr.write(f"ipamctl recommend: {exc}\n")
        return 2
    for note in [*setup.notes, *skipped]:
        sys.stderr.write(f"ipamctl recommend: {note}\n")
    for label, warnings in notes.items():
        for w in warnings:
            sys.stderr.write(f"ipamctl recommend: warning: {label}: {w}\n")
    progress = None if args.no_progress else sys.stderr
    candidates = sweep(base, setup.events, specs, progress, notes=notes)
    names = setup.trace.node_names if setup.trace is not None else ()
    subnets = -(-base.nodes // base.nodes_per_subnet)
    room = subnets * usable_addresses(f"10.0.0.0/{base.subnet_prefix_len}") - base.nodes
    verdict = judge(candidates, args.max_p99, setup.events, limits, names, skipped, room,
                    node_limits)
    best = verdict.best
    front = frontier(candidates)
    default = next(c for c in candidates if c.is_default())
    title = f"{setup.source}, {fleet_label(base)}" + family_label(base)
    code = 0 if verdict.met else 1
    safe = no_regret(candidates, default)
    if args.rec_json or getattr(args, "json", False):
        doc = {
            "source": setup.source, "nodes": base.nodes, "instance_type": base.instance_type,
            "instance_types": type_counts(base),
            "seed": base.seed, "max_p99_s": args.max_p99, "met": verdict.met,
            "reasons": list(verdict.reasons), "notes": list(setup.notes),
            "skipped": skipped, "default": default.label,
            "candidates": [
                dict(c.summary(), frontier=c in front, default=c.is_default(),
                     meets_requirements=qualifies(c, args.max_p99),
                     trade_off=trade_off(c, default),
                     vs_default={
                         "idle_address_hours": ratio_text(c.measures.idle_address_hours,
                                                          default.measures.idle_address_hours),
                         "mutating_calls": ratio_text(c.measures.mutating_total,
                                                      default.measures.mutating_total),
                         "wait_p99_s_delta": round(c.measures.wait_p99_s
                                                   - default.measures.wait_p99_s, 6),
                     })
                for c in candidates
            ],
            "recommendation": dict(best.summary(), trade_off=trade_off(best, default))
            if verdict.met else None,
            "closest": None if verdict.met else best.summary(),
            "no_regret": safe.label if safe is not None else None,
            "definitions": {"idle_address_hours": IDLE_DEFINITION},
        }  # fmt: skip
        stream.write(json.dumps(doc, indent=2) + "\n")
    else:
        write_table(stream, candidates, verdict, default, front, title, args.max_p99)
    stream.flush()
    if args.plot and not draw_safely(
        lambda: plot(candidates, verdict, args.max_p99, args.plot, title), args.plot, "recommend"
    ):
        code = 1
    return code


def run_ipv6_only(args: argparse.Namespace, setup: Setup, stream: TextIO) -> int:
    """IPv6 single stack: the warm knobs are ignored (as upstream), so nothing is swept;
    say so, and give the one run's figures (and its picture with ``--plot``)."""
    for note in setup.notes:
        if not note.startswith("warning: IPv6 mode"):  # IPV6_NO_SWEEP says it
            sys.stderr.write(f"ipamctl recommend: {note}\n")
    if args.candidate:
        sys.stderr.write("ipamctl recommend: warning: --candidate ignored: in IPv6 single stack "
                         "every warm-pool setting measures the same\n")  # fmt: skip
    progress = None if args.no_progress else ProgressBar(sys.stderr)
    measures = Cluster(setup.config, setup.events).run(progress, steps=ProgressBar.STEPS)
    title = f"{setup.source}, {fleet_label(setup.config)}, IPv6 single stack"
    if args.rec_json or getattr(args, "json", False):
        doc = {"source": setup.source, "swept": False, "met": None, "reasons": [IPV6_NO_SWEEP],
               "notes": list(setup.notes), "recommendation": None,
               "measures": measures.to_dict()}  # fmt: skip
        stream.write(json.dumps(doc, indent=2) + "\n")
    else:
        stream.write(f"{title}: nothing to recommend\n  {IPV6_NO_SWEEP}\n")
        for key, value in measures.rows():
            stream.write(f"  {key}: {value}\n")
    stream.flush()
    if args.plot:
        from adapters.ipamctl.simplots import plot_simulation

        draw = lambda: plot_simulation(measures, args.plot, title, setup.events)  # noqa: E731
        if not draw_safely(draw, args.plot, "recommend"):
            return 1
    return 0


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def write_table(stream: TextIO, candidates: Sequence[Candidate], verdict: Verdict,
                default: Candidate, front: Sequence[Candidate], title: str,
                max_p99_s: float) -> None:  # fmt: skip
    d = default.measures
    thr = f"{d.wait_threshold_s:g}"
    header = ("", "SETTING", "IDLE ADDR-H", "P99 WAIT S", f"PODS >{thr}S", "EC2 CALLS",
              "THROTTLED", "AGAINST THE DEFAULT")  # fmt: skip
    rows = [header]
    for c in candidates:
        m = c.measures
        mark = ("=" if c.is_default() else "") + ("*" if c in front else "")
        idle_r = ratio_text(m.idle_address_hours, d.idle_address_hours)
        calls_r = ratio_text(m.mutating_total, d.mutating_total)
        unserved = f" +{m.pods_unserved:,} unserved" if m.pods_unserved else ""
        rows.append((
            mark, c.label,
            f"{m.idle_address_hours:,.1f}" + ("" if c.is_default() else f" ({idle_r})"),
            f"{m.wait_p99_s:.2f}", f"{m.pods_over_threshold:,}{unserved}",
            f"{m.mutating_total:,}" + ("" if c.is_default() else f" ({calls_r})"),
            f"{m.throttled_total:,}", trade_off(c, default),
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    stream.write(f"{title}: {plural(len(candidates), 'setting')}; = upstream's default, "
                 "* on the frontier (no other setting is better on idle, p99 and calls at "
                 "once); (0.19x) = against the default\n")  # fmt: skip
    for row in rows:
        stream.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        stream.write("\n")
    best = verdict.best
    m = best.measures

    def figures(x: Measures) -> str:
        return (f"idle {x.idle_address_hours:,.1f} address-hours, p99 wait {x.wait_p99_s:.2f} s "
                f"(max {x.wait_max_s:.2f} s), {plural(x.pods_over_threshold, 'pod')} waiting > "
                f"{x.wait_threshold_s:g} s, {x.pods_unserved:,} never served, "
                f"{x.mutating_total:,} EC2 mutating calls ({x.throttled_total:,} throttled)")

    if verdict.met:
        stream.write(f"\nrecommended: {best.label}\n")
    else:
        stream.write(f"\nNO RECOMMENDATION: no setting meets --max-p99 {max_p99_s:g} s with "
                     f"every pod served; the closest is {best.label}, not recommended\n")
        for reason in verdict.reasons:
            stream.write(f"  why: {reason}\n")
    stream.write(f"  {best.label}: {figures(m)}\n")
    for key, value in m.fleet_rows():
        stream.write(f"    {key}: {value}\n")
    if not best.is_default():
        stream.write(f"  default {default.label}: {figures(d)}\n")
        stream.write(f"  trade-off: {trade_off(best, default)}\n")
    for note in best.notes:
        stream.write(f"  warning: {note}\n")
    safe = no_regret(candidates, default)
    if safe is not None and safe is not best:
        stream.write(f"\nno-regret alternative: {safe.label} is at least as good as the default "
                     f"on every measure ({trade_off(safe, default)}): {figures(safe.measures)}\n")
    stream.write(f"\n{IDLE_DEFINITION}.\n")
