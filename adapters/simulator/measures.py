"""What a simulation measures, and the recorder the nodes report to.

* pod address waits: p50 / p99 / max over pods that got an address (a pod still waiting at
  the end counts with the time it has waited so far), pods that waited longer than a
  threshold, pods still waiting at the end, pods deleted while still waiting;
* addresses: idle address-hours (held but not assigned, integrated over the samples taken
  every ``sample_interval_s``) and the peak held across the cluster;
* EC2: mutating calls and throttled calls by action (every node shares the account's
  buckets), effects failed by kind;
* subnets: peak addresses in use (all subnets) and the peak fraction of the fullest subnet;
* ENIs created and freed (successful ``CreateEni`` / ``FreeEni`` outcomes), allocations
  force-removed by reconciliation;
* nodes that joined and left during the run, pods drained from leaving nodes (and
  rescheduled, or not: no node left to take them), ENIs deleted with their instances;
* in a cluster of several instance types, the waits and idle address-hours by type.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import attrs

from backends.observe import MUTATING_ACTIONS, CallCounter
from ipamcore.model import Allocation


@attrs.frozen
class Sample:
    """Cluster totals at one instant (seconds from the start)."""

    t: float
    held: int  # addresses on the nodes' ENIs (not leaving)
    assigned: int
    available: int  # ready to hand out (cooling excluded)
    cooling: int
    waiting: int  # pods waiting for an address
    subnet_used: int
    nodes: int = 0  # nodes running (launched, not terminated)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an ascending list; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


class Recorder:
    """Collects what nodes report while the simulation runs (cheap appends and counters)."""

    def __init__(self) -> None:
        self.waits: list[tuple[float, float]] = []  # (arrival t from start, wait s)
        self.abandoned = 0
        self.pod_events = 0
        self.enis_created = 0
        self.enis_freed = 0
        self.force_removed = 0
        self.failed: Counter[str] = Counter()
        self.samples: list[Sample] = []
        self.start = 0.0
        self.nodes_joined = 0
        self.nodes_left = 0
        self.pods_drained = 0
        self.pods_rescheduled = 0
        self.pods_not_rescheduled = 0
        self.enis_terminated = 0

    def served(self, arrived: float, now: float) -> None:
        self.waits.append((arrived - self.start, now - arrived))

    def force_removed_allocations(self, removed: tuple[Allocation, ...]) -> None:
        self.force_removed += len(removed)


@attrs.frozen
class Measures:
    """The results of one run; :meth:`to_dict` is what ``--json`` prints."""

    nodes: int
    duration_s: float
    pod_events: int
    pods_served: int
    pods_unserved: int
    pods_abandoned: int
    wait_p50_s: float
    wait_p99_s: float
    wait_max_s: float
    wait_threshold_s: float
    pods_over_threshold: int
    idle_address_hours: float
    peak_held: int
    peak_assigned: int
    mutating_calls: dict[str, int]
    throttled_calls: dict[str, int]
    failed_effects: dict[str, int]
    subnet_peak_used: int
    subnet_peak_fraction: float
    enis_created: int
    enis_freed: int
    force_removed: int
    nodes_joined: int = 0
    nodes_left: int = 0
    pods_drained: int = 0
    pods_rescheduled: int = 0
    pods_not_rescheduled: int = 0
    enis_terminated: int = 0
    # instance type -> nodes, pods_served, pods_unserved, wait_p50_s, wait_p99_s, wait_max_s,
    # pods_over_threshold, idle_address_hours (only when the cluster mixes types)
    by_type: dict[str, dict[str, float]] = attrs.field(factory=dict)
    samples: tuple[Sample, ...] = attrs.field(default=(), repr=False, eq=False)
    waits: tuple[tuple[float, float], ...] = attrs.field(default=(), repr=False, eq=False)

    @property
    def mutating_total(self) -> int:
        return sum(self.mutating_calls.values())

    @property
    def throttled_total(self) -> int:
        return sum(self.throttled_calls.values())

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self, filter=lambda a, _v: a.name not in ("samples", "waits"))
        out["mutating_calls_total"] = self.mutating_total
        out["throttled_calls_total"] = self.throttled_total
        return out

    def rows(self) -> list[tuple[str, str]]:
        """(measure, value) rows for a table."""
        def by_action(d: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"

        rows = [
            ("nodes", str(self.nodes)),
            ("simulated seconds", f"{self.duration_s:g}"),
            ("pod events", str(self.pod_events)),
            ("pods served / unserved / deleted waiting",
             f"{self.pods_served} / {self.pods_unserved} / {self.pods_abandoned}"),
            ("address wait p50 / p99 / max (s)",
             f"{self.wait_p50_s:.3f} / {self.wait_p99_s:.3f} / {self.wait_max_s:.3f}"),
            (f"pods waiting > {self.wait_threshold_s:g} s", str(self.pods_over_threshold)),
            ("idle address-hours", f"{self.idle_address_hours:.1f}"),
            ("peak addresses held / assigned", f"{self.peak_held} / {self.peak_assigned}"),
            ("EC2 mutating calls", f"{self.mutating_total} ({by_action(self.mutating_calls)})"),
            ("EC2 throttled calls",
             f"{self.throttled_total} ({by_action(self.throttled_calls)})"),
            ("effects failed", by_action(self.failed_effects)),
            ("subnet peak used (fullest subnet)",
             f"{self.subnet_peak_used} ({self.subnet_peak_fraction:.1%})"),
            ("ENIs created / freed", f"{self.enis_created} / {self.enis_freed}"),
            ("allocations force-removed", str(self.force_removed)),
        ]  # fmt: skip
        rows += self.fleet_rows()
        return rows

    def fleet_rows(self) -> list[tuple[str, str]]:
        """Rows for nodes joining and leaving, and by instance type (when there are any)."""
        rows: list[tuple[str, str]] = []
        if self.nodes_joined or self.nodes_left:
            rows += [
                ("nodes joined / left", f"{self.nodes_joined} / {self.nodes_left}"),
                ("pods drained / rescheduled / not",
                 f"{self.pods_drained} / {self.pods_rescheduled} / "
                 f"{self.pods_not_rescheduled}"),
                ("ENIs deleted with their instance", str(self.enis_terminated)),
            ]  # fmt: skip
        for itype, t in self.by_type.items():
            rows.append((
                f"{itype} ({int(t['nodes'])} nodes)",
                f"p50 / p99 / max wait {t['wait_p50_s']:.3f} / {t['wait_p99_s']:.3f} / "
                f"{t['wait_max_s']:.3f} s, {int(t['pods_over_threshold'])} pods > "
                f"{self.wait_threshold_s:g} s, {int(t['pods_served'])} served / "
                f"{int(t['pods_unserved'])} unserved, idle {t['idle_address_hours']:.1f} "
                "address-hours",
            ))  # fmt: skip
        return rows


def summarize(
    rec: Recorder,
    calls: CallCounter,
    *,
    nodes: int,
    duration_s: float,
    still_waiting: list[float],
    threshold_s: float,
    sample_interval_s: float,
    subnet_peak_fraction: float,
) -> Measures:
    """Turn what the recorder and the call counter saw into :class:`Measures`.

    ``still_waiting`` holds the waits so far of pods without an address at the end.
    """
    waits = sorted([w for _t, w in rec.waits] + still_waiting)
    samples = rec.samples
    idle_s = sum(max(s.held - s.assigned, 0) for s in samples) * sample_interval_s
    mutating: Counter[str] = Counter()
    throttled: Counter[str] = Counter()
    for (action, outcome), n in calls.counts.items():
        if action in MUTATING_ACTIONS:
            mutating[action] += n
        if outcome == "throttled":
            throttled[action] += n
    return Measures(
        nodes=nodes,
        duration_s=duration_s,
        pod_events=rec.pod_events,
        pods_served=len(rec.waits),
        pods_unserved=len(still_waiting),
        pods_abandoned=rec.abandoned,
        wait_p50_s=round(percentile(waits, 50), 6),
        wait_p99_s=round(percentile(waits, 99), 6),
        wait_max_s=round(waits[-1] if waits else 0.0, 6),
        wait_threshold_s=threshold_s,
        pods_over_threshold=sum(1 for w in waits if w > threshold_s),
        idle_address_hours=round(idle_s / 3600.0, 3),
        peak_held=max((s.held for s in samples), default=0),
        peak_assigned=max((s.assigned for s in samples), default=0),
        mutating_calls=dict(sorted(mutating.items())),
        throttled_calls=dict(sorted(throttled.items())),
        failed_effects=dict(sorted(rec.failed.items())),
        subnet_peak_used=max((s.subnet_used for s in samples), default=0),
        subnet_peak_fraction=round(subnet_peak_fraction, 6),
        enis_created=rec.enis_created,
        enis_freed=rec.enis_freed,
        force_removed=rec.force_removed,
        nodes_joined=rec.nodes_joined,
        nodes_left=rec.nodes_left,
        pods_drained=rec.pods_drained,
        pods_rescheduled=rec.pods_rescheduled,
        pods_not_rescheduled=rec.pods_not_rescheduled,
        enis_terminated=rec.enis_terminated,
        samples=tuple(samples),
        waits=tuple(rec.waits),
    )


def type_measures(
    nodes: int, waits: list[float], unserved: int, threshold_s: float, idle_s: float
) -> dict[str, float]:
    """One instance type's figures in a mixed cluster (``waits`` ascending, the unserved
    pods' waits so far included)."""
    return {
        "nodes": nodes,
        "pods_served": len(waits) - unserved,
        "pods_unserved": unserved,
        "wait_p50_s": round(percentile(waits, 50), 6),
        "wait_p99_s": round(percentile(waits, 99), 6),
        "wait_max_s": round(waits[-1] if waits else 0.0, 6),
        "pods_over_threshold": sum(1 for w in waits if w > threshold_s),
        "idle_address_hours": round(idle_s / 3600.0, 3),
    }
