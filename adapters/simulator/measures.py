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
* in a cluster of several instance types, the waits and idle address-hours by type;
* IPv6 (single or dual stack): the /80 prefixes and IPv6 addresses assigned (peaks), the
  AssignIpv6Addresses calls per node, the mutating EC2 calls nodes made after their first
  prefix and the pods that arrived after it and still waited (IPv6 single stack: none);
* multiple network cards (``ENABLE_MULTI_NIC``): multi-NIC pods served and their interfaces,
  ADDs retried (a card had no address ready: kubelet retries), and per network card the
  peak ENIs (cluster and busiest node), addresses held and assigned.
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
    ipv6_assigned: int = 0  # IPv6 addresses assigned to pods (IPv6 or dual stack)
    ipv6_prefixes: int = 0  # /80 prefixes on the nodes' ENIs


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
        self.add_retries = 0
        self.multi_nic_pods = 0
        self.multi_nic_interfaces = 0
        self.v6_pods_after_prefix = 0
        self.v6_waits_after_prefix = 0
        # network card -> [ENIs, busiest node's ENIs, addresses held, assigned]: peaks
        self.cards: dict[int, list[int]] = {}

    def multi_nic_served(self, interfaces: int) -> None:
        self.multi_nic_pods += 1
        self.multi_nic_interfaces += interfaces

    def card_sample(self, totals: dict[int, list[int]]) -> None:
        """One sample's per-card figures (cluster sums, the busiest node's ENIs): peaks."""
        for card, figures in totals.items():
            peak = self.cards.setdefault(card, [0, 0, 0, 0])
            for k, value in enumerate(figures):
                if value > peak[k]:
                    peak[k] = value

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
    families: str = "ipv4"  # "ipv4", "ipv6" (single stack) or "dual"
    ipv6_prefixes_peak: int = 0
    ipv6_assigned_peak: int = 0
    ipv6_prefix_calls_max_per_node: int = 0  # AssignIpv6Addresses calls of the busiest node
    mutating_after_ipv6_prefix: int = 0  # all nodes' mutating calls after their first /80
    pods_after_ipv6_prefix: int = 0  # pods that arrived after their node's /80 ...
    pods_waited_after_ipv6_prefix: int = 0  # ... and of those, the ones that waited at all
    multi_nic_fraction: float = 0.0
    multi_nic_pods: int = 0  # multi-NIC pods served
    multi_nic_interfaces: int = 0  # their interfaces (one per network card)
    add_retries: int = 0  # ADDs answered with an error and sent again (kubelet's retry)
    # network card -> enis_peak, enis_node_peak, held_peak, assigned_peak (ENABLE_MULTI_NIC)
    by_card: dict[str, dict[str, int]] = attrs.field(factory=dict)
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
        if self.families == "ipv6":  # no IPv4 pool: the IPv4 figures above stay 0
            rows = [(k + " (IPv4)" if k.startswith(("idle", "peak addresses")) else k, v)
                    for k, v in rows]  # fmt: skip
        rows += self.family_rows() + self.fleet_rows()
        return rows

    def family_rows(self) -> list[tuple[str, str]]:
        """Rows for IPv6 and for network cards (when the run had them)."""
        rows: list[tuple[str, str]] = []
        if self.families != "ipv4":
            rows += [
                ("IP families", "IPv6 single stack" if self.families == "ipv6"
                 else "dual stack (IPv4 + IPv6 per pod)"),
                ("IPv6 /80 prefixes (peak) / addresses assigned (peak)",
                 f"{self.ipv6_prefixes_peak} / {self.ipv6_assigned_peak}"),
                ("AssignIpv6Addresses calls (busiest node)",
                 str(self.ipv6_prefix_calls_max_per_node)),
                ("EC2 mutating calls after each node's first /80", str(
                    self.mutating_after_ipv6_prefix)),
                ("pods after the node's /80 / of them waited",
                 f"{self.pods_after_ipv6_prefix} / {self.pods_waited_after_ipv6_prefix}"),
            ]  # fmt: skip
        if self.multi_nic_fraction or self.by_card:
            rows.append((
                "multi-NIC pods served / interfaces / ADDs retried",
                f"{self.multi_nic_pods} / {self.multi_nic_interfaces} / {self.add_retries} "
                f"({self.multi_nic_fraction:.0%} of pods annotated)",
            ))  # fmt: skip
        elif self.add_retries:
            rows.append(("ADDs retried", str(self.add_retries)))
        rows += card_rows(self.by_card)
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
    families: str = "ipv4",
    multi_nic_fraction: float = 0.0,
    ipv6_calls: tuple[int, int] = (0, 0),
) -> Measures:
    """Turn what the recorder and the call counter saw into :class:`Measures`.

    ``still_waiting`` holds the waits so far of pods without an address at the end;
    ``ipv6_calls``: the busiest node's AssignIpv6Addresses calls and all nodes' mutating
    calls after their first /80.
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
        families=families,
        ipv6_prefixes_peak=max((s.ipv6_prefixes for s in samples), default=0),
        ipv6_assigned_peak=max((s.ipv6_assigned for s in samples), default=0),
        ipv6_prefix_calls_max_per_node=ipv6_calls[0],
        mutating_after_ipv6_prefix=ipv6_calls[1],
        pods_after_ipv6_prefix=rec.v6_pods_after_prefix,
        pods_waited_after_ipv6_prefix=rec.v6_waits_after_prefix,
        multi_nic_fraction=multi_nic_fraction,
        multi_nic_pods=rec.multi_nic_pods,
        multi_nic_interfaces=rec.multi_nic_interfaces,
        add_retries=rec.add_retries,
        by_card={
            str(card): dict(zip(CARD_FIGURES, peaks, strict=True))
            for card, peaks in sorted(rec.cards.items())
        },
        samples=tuple(samples),
        waits=tuple(rec.waits),
    )


CARD_FIGURES = ("enis_peak", "enis_node_peak", "held_peak", "assigned_peak")


def card_rows(by_card: dict[str, dict[str, int]]) -> list[tuple[str, str]]:
    """One row per network card, cards with the same figures in one (a p5 has 32)."""
    groups: list[tuple[list[str], dict[str, int]]] = []
    for card, figures in by_card.items():
        if groups and groups[-1][1] == figures:
            groups[-1][0].append(card)
        else:
            groups.append(([card], figures))
    rows = []
    for cards, f in groups:
        name = f"card {cards[0]}" if len(cards) == 1 else f"cards {cards[0]}-{cards[-1]} (each)"
        rows.append((
            f"{name}: ENIs (busiest node) / held / assigned, peaks",
            f"{f['enis_peak']} ({f['enis_node_peak']}) / {f['held_peak']} / "
            f"{f['assigned_peak']}",
        ))  # fmt: skip
    return rows


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
