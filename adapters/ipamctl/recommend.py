"""``ipamctl recommend``: sweep the warm-pool knobs on a trace or scenario in the simulator and
print the settings on the trade-off frontier (idle address-hours, p99 address wait, EC2
mutating calls), with one recommendation and its figures.

Every candidate runs the same workload (same seed) on the same simulated cluster; a candidate
is on the frontier when no other is at least as good on all three measures and better on
one. The recommendation: among frontier candidates that served every pod with a p99 wait
within ``--max-p99`` (default 1 s: one EC2 round trip) and no throttled calls if any
candidate managed none, the one holding the fewest idle address-hours (ties, within 5 %:
fewer EC2 calls). If none qualifies, the one with the lowest p99 wait.

``--json`` prints every candidate and the recommendation; ``--plot FILE.png`` draws idle
address-hours against p99 wait, calls as the marker size, the frontier joined up.
Exit codes: 0 ok, 2 bad arguments or trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import attrs

from adapters.ipamctl.simulate import (
    SimulateUsageError,
    add_source_arguments,
    build_config,
    pool_config,
)
from adapters.simulator import Cluster, Measures, SimConfig
from adapters.simulator.workload import PodEvent
from ipamcore.config import PolicyName

# (label, policy, knobs): upstream's knobs in the ranges operators use, and the adaptive policy.
DEFAULT_CANDIDATES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("WARM_ENI_TARGET=1 (default)", "upstream", ()),
    ("WARM_ENI_TARGET=2", "upstream", ("WARM_ENI_TARGET=2",)),
    ("WARM_IP_TARGET=1", "upstream", ("WARM_IP_TARGET=1",)),
    ("WARM_IP_TARGET=2", "upstream", ("WARM_IP_TARGET=2",)),
    ("WARM_IP_TARGET=3", "upstream", ("WARM_IP_TARGET=3",)),
    ("WARM_IP_TARGET=5", "upstream", ("WARM_IP_TARGET=5",)),
    ("WARM_IP_TARGET=8", "upstream", ("WARM_IP_TARGET=8",)),
    ("WARM_IP_TARGET=5 MINIMUM_IP_TARGET=20", "upstream",
     ("WARM_IP_TARGET=5", "MINIMUM_IP_TARGET=20")),
    ("prefix delegation, WARM_PREFIX_TARGET=1", "upstream",
     ("ENABLE_PREFIX_DELEGATION=true", "WARM_PREFIX_TARGET=1")),
    ("adaptive policy", "adaptive", ()),
)  # fmt: skip
MEASURES = ("idle_address_hours", "wait_p99_s", "mutating_total")
IDLE_TIE = 0.05


@attrs.frozen
class Candidate:
    """One setting and what it measured."""

    label: str
    policy: str
    knobs: tuple[str, ...]
    measures: Measures

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
            "peak_held": m.peak_held,
        }  # fmt: skip


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is at least as good as ``b`` on every measure and better on one (lower wins)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def frontier(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates no other candidate dominates, in input order."""
    keys = [c.key() for c in candidates]
    return [c for c, k in zip(candidates, keys, strict=True)
            if not any(dominates(other, k) for other in keys)]  # fmt: skip


def recommend(candidates: Sequence[Candidate], max_p99_s: float) -> Candidate:
    """The frontier candidate to use (see the module docstring for the rule)."""
    front = frontier(candidates)
    ok = [c for c in front
          if c.measures.pods_unserved == 0 and c.measures.wait_p99_s <= max_p99_s]  # fmt: skip
    calm = [c for c in ok if c.measures.throttled_total == 0]
    pool = calm or ok
    if not pool:
        return min(front, key=lambda c: (c.measures.wait_p99_s, c.measures.idle_address_hours))
    least = min(c.measures.idle_address_hours for c in pool)
    near = [c for c in pool if c.measures.idle_address_hours <= least * (1 + IDLE_TIE) + 1e-9]
    return min(near, key=lambda c: (c.measures.mutating_total, c.measures.idle_address_hours))


def parse_candidate(spec: str) -> tuple[str, str, tuple[str, ...]]:
    """``--candidate "policy=adaptive"`` or ``"WARM_IP_TARGET=5,MINIMUM_IP_TARGET=10"``."""
    policy, knobs = PolicyName.UPSTREAM.value, []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, value = item.partition("=")
        if name.strip().lower() == "policy":
            policy = value.strip()
            if policy not in {p.value for p in PolicyName}:
                raise SimulateUsageError(
                    f"--candidate {spec!r}: policy must be one of "
                    + ", ".join(p.value for p in PolicyName)
                )
        else:
            knobs.append(item)
    pool_config(policy, knobs)  # validate now, before any run
    return spec, policy, tuple(knobs)


def add_recommend_parser(subparsers: Any) -> argparse.ArgumentParser:
    sp: argparse.ArgumentParser = subparsers.add_parser(
        "recommend",
        help="sweep warm-pool settings in the simulator and recommend one",
        description="Run the workload once per candidate setting, print the trade-off "
        "frontier (idle address-hours vs p99 wait vs EC2 calls) and one recommendation.",
    )
    add_source_arguments(sp)
    sp.add_argument("--candidate", action="append", default=[], metavar="SPEC",
                    help='a setting to try instead of the default sweep, e.g. '
                    '"WARM_IP_TARGET=5,MINIMUM_IP_TARGET=10" or "policy=adaptive" '
                    "(repeat)")  # fmt: skip
    sp.add_argument("--max-p99", type=float, default=1.0, metavar="SECONDS",
                    help="p99 wait a recommendation may have (default %(default)s)")
    sp.add_argument("--json", action="store_true", dest="rec_json", help="print JSON")
    sp.add_argument("--plot", metavar="FILE.png", help="plot the frontier")
    sp.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return sp


Runner = Callable[[SimConfig, Sequence[PodEvent]], Measures]


def _run(config: SimConfig, events: Sequence[PodEvent]) -> Measures:
    return Cluster(config, events).run()


def sweep(
    base: SimConfig,
    events: Sequence[PodEvent],
    specs: Sequence[tuple[str, str, tuple[str, ...]]],
    progress: TextIO | None = None,
    run: Runner = _run,
) -> list[Candidate]:
    """Run every candidate on the same workload; a line on ``progress`` per candidate."""
    out: list[Candidate] = []
    began = time.perf_counter()
    for i, (label, policy, knobs) in enumerate(specs, start=1):
        if progress is not None:
            progress.write(f"[{i}/{len(specs)}] {label} ...")
            progress.flush()
        config = attrs.evolve(base, pool=pool_config(policy, knobs))
        measures = run(config, events)
        out.append(Candidate(label, policy, knobs, measures))
        if progress is not None:
            progress.write(f" idle {measures.idle_address_hours:g} addr-h, p99 "
                           f"{measures.wait_p99_s:g} s, {measures.mutating_total} calls "
                           f"({time.perf_counter() - began:.1f} s)\n")  # fmt: skip
    return out


def plot(candidates: Sequence[Candidate], best: Candidate, path: str, title: str) -> None:
    """Idle address-hours against p99 wait; marker area grows with EC2 calls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = frontier(candidates)
    fig, ax = plt.subplots(figsize=(9, 6))
    top = max((c.measures.mutating_total for c in candidates), default=1) or 1
    for c in candidates:
        m = c.measures
        on = c in front
        ax.scatter([m.idle_address_hours], [m.wait_p99_s], s=30 + 400 * m.mutating_total / top,
                   alpha=0.8 if on else 0.35, color="tab:blue" if on else "tab:gray",
                   edgecolors="black" if c is best else "none", linewidths=2)  # fmt: skip
        ax.annotate(c.label, (m.idle_address_hours, m.wait_p99_s), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
    pts = sorted((c.measures.idle_address_hours, c.measures.wait_p99_s) for c in front)
    ax.plot([x for x, _ in pts], [y for _, y in pts], color="tab:blue", linewidth=0.8,
            label="frontier (marker area: EC2 calls)")  # fmt: skip
    ax.set_xlabel("idle address-hours")
    ax.set_ylabel("p99 address wait (s)")
    ax.set_title(f"{title}\nrecommended: {best.label}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_recommend(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    try:
        args.policy, args.knobs = PolicyName.UPSTREAM.value, []
        base, events = build_config(args)
        specs = [parse_candidate(s) for s in args.candidate] or list(DEFAULT_CANDIDATES)
        if args.max_p99 < 0:
            raise SimulateUsageError("--max-p99 must be 0 or more")
    except SimulateUsageError as exc:
        sys.stderr.write(f"ipamctl recommend: {exc}\n")
        return 2
    progress = None if args.no_progress else sys.stderr
    candidates = sweep(base, events, specs, progress)
    best = recommend(candidates, args.max_p99)
    front = frontier(candidates)
    source = f"scenario {args.scenario}" if args.scenario else f"trace {args.trace}"
    title = f"{source}, {base.nodes} x {base.instance_type}"
    if args.plot:
        plot(candidates, best, args.plot, title)
    if args.rec_json or getattr(args, "json", False):
        doc = {
            "source": source, "nodes": base.nodes, "instance_type": base.instance_type,
            "seed": base.seed, "max_p99_s": args.max_p99,
            "candidates": [dict(c.summary(), frontier=c in front) for c in candidates],
            "recommendation": best.summary(),
        }  # fmt: skip
        stream.write(json.dumps(doc, indent=2) + "\n")
        return 0
    header = ("", "SETTING", "IDLE ADDR-H", "P99 WAIT S", "MAX WAIT S", "EC2 CALLS", "THROTTLED")
    rows = [header] + [
        ("*" if c in front else "", c.label, f"{c.measures.idle_address_hours:.1f}",
         f"{c.measures.wait_p99_s:.2f}", f"{c.measures.wait_max_s:.2f}",
         str(c.measures.mutating_total), str(c.measures.throttled_total))
        for c in candidates
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    stream.write(f"{title}: {len(candidates)} settings, * = on the frontier\n")
    for row in rows:
        stream.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        stream.write("\n")
    m = best.measures
    stream.write(
        f"\nrecommended: {best.label}\n  idle {m.idle_address_hours:g} address-hours, "
        f"p99 wait {m.wait_p99_s:g} s (max {m.wait_max_s:g} s, {m.pods_over_threshold} pods "
        f"over {m.wait_threshold_s:g} s), {m.mutating_total} EC2 mutating calls "
        f"({m.throttled_total} throttled)\n"
    )
    return 0
