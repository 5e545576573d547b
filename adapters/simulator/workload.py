"""Pod workloads for the simulator: trace files and built-in scenarios.

A workload is a list of :class:`PodEvent` sorted by time: a pod arrives on a node (``add``,
it asks for an address) or departs (``del``, its address is released); a node joins the
cluster (``join``: its instance is launched and its agent boots then; the event's ``pod``
field is the node's instance type, empty for the cluster's) or leaves it (``leave``: it is
drained, its pods are evicted and rescheduled on other nodes, and its instance is terminated
soon after, which frees its ENIs). Times are seconds from the start of the simulation; nodes
are numbered 0 to N-1. A node with no ``join`` is there from the start.

Trace files
-----------
Two formats, chosen by extension (``.csv``; ``.jsonl``/``.json``/``.ndjson``) or, for any
other name, by the first non-blank character (``{`` means JSON lines). Blank lines and lines
starting with ``#`` are skipped in both. (:mod:`.importers` turns ``kubectl get pods -o json``,
Kubernetes events and audit logs into this.)

CSV, one event a line, an optional header ``time,node,event,pod``::

    # time,node,event,pod
    0.0,0,add,web-1
    12.5,ip-10-0-1-7.ec2.internal,add,web-2
    600,0,del,web-1

JSON lines, one object a line with the same four keys::

    {"time": 0.0, "node": 0, "event": "add", "pod": "web-1"}
    {"time": 600, "node": 0, "event": "del", "pod": "web-1"}

Nodes that join and leave (autoscaling), and instance types per node: a ``join`` line's
fourth field is the node's instance type (empty: the cluster's), a ``leave`` line's is empty
(in JSON lines ``pod`` may be left out of both, and ``instance_type`` names the type)::

    0,big-1,join,m5.4xlarge
    300,ip-10-0-9-9.ec2.internal,join,
    310,ip-10-0-9-9.ec2.internal,add,web-3
    1500,ip-10-0-9-9.ec2.internal,leave,

``time`` is seconds (a finite number >= 0) or an ISO 8601 date-time with a zone
(``2026-12-07T10:00:00Z``). ``node`` is an integer >= 0 (its index in the cluster) or a name:
when every node of a trace is an integer they are the indices, otherwise each distinct node
gets an index in order of first appearance. ``event`` is ``add``, ``del``, ``join`` or
``leave``; for ``add`` and ``del`` ``pod`` is a non-empty name unique per node while it
lives. A ``del`` must follow the pod's ``add`` (in time order); a second ``add`` of a live
pod is an error. A node joins at most once, before any of its pods, and leaves at most once,
after them all (pods still on it then are drained). Any bad line raises :class:`TraceError`
naming the file and the line number.

Absolute times (Unix epoch seconds, or ISO dates) are detected (the first event after
:data:`EPOCH_THRESHOLD_S`, 1973) and rebased so the first event comes :data:`REBASE_LEAD_S`
after the start (the nodes boot at 0): :attr:`Trace.rebased_by` says by how much.

Built-in scenarios
------------------
See :data:`SCENARIOS`: ``steady`` (churn around a constant population), ``burst``
(scale-up burst), ``batch`` (batch jobs every 10 minutes), ``diurnal`` (a compressed day:
arrival rate follows a sine), ``upstream-scaleup`` (500 nodes, 0 to 23,000 pods, as in
upstream's scale tests), ``autoscale`` (half the nodes at first; a scale-up brings the
others, which join, take pods, and leave again when demand falls). Every generator draws
from the ``random.Random`` it is given, so a seed fixes the workload.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import attrs

ADD = "add"
DEL = "del"
JOIN = "join"  # PodEvent.pod: the node's instance type ("" = the cluster's)
LEAVE = "leave"  # PodEvent.pod: ""
NODE_EVENTS = (JOIN, LEAVE)
CSV_FIELDS = ("time", "node", "event", "pod")


class PodEvent(NamedTuple):
    """One pod arrival (``add``) or departure (``del``) on one node, or the node's ``join``
    (``pod``: its instance type, "" for the cluster's) or ``leave`` (``pod``: "")."""

    time: float
    node: int
    event: str
    pod: str


class TraceError(ValueError):
    """A trace file line that cannot be used; the message names the file and the line."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source} line {line}: {message}")
        self.source = source
        self.line = line
        self.message = message


# ------------------------------------------------------------------------------ traces
EPOCH_THRESHOLD_S = 1e8  # 1973-03-03: a first event later than this is an absolute time
REBASE_LEAD_S = 30.0  # a rebased trace starts this long after the nodes boot


@attrs.frozen
class Trace:
    """A parsed trace: the events, the node names by index, and the rebase applied."""

    events: list[PodEvent]
    node_names: tuple[str, ...]
    rebased_by: float = 0.0  # seconds subtracted from every time (absolute-time traces)
    source: str = "<trace>"

    @property
    def nodes(self) -> int:
        return len(self.node_names)


RawRow = tuple[int, float, int | str, str, str]  # line, time, node, event, pod


def parse_trace(text: str, source: str = "<trace>", fmt: str | None = None) -> list[PodEvent]:
    """Parse a trace (``fmt`` "csv" or "jsonl"; None: guess from the first character)."""
    return read_trace_text(text, source, fmt).events


def read_trace_text(text: str, source: str = "<trace>", fmt: str | None = None) -> Trace:
    """Parse a trace into a :class:`Trace` (node names, rebase of absolute times)."""
    if fmt is None:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        fmt = "jsonl" if first.startswith("{") else "csv"
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"unknown trace format {fmt!r} (csv or jsonl)")
    raw = _csv_rows(text, source) if fmt == "csv" else _json_rows(text, source)
    return build_trace([_row(source, line, fields) for line, fields in raw], source)


def load_trace(path: str | Path) -> list[PodEvent]:
    """Read and parse a trace file (format from the extension, else sniffed)."""
    return read_trace(path).events


def read_trace(path: str | Path) -> Trace:
    """Read a trace file into a :class:`Trace`."""
    p = Path(path)
    suffix = p.suffix.lower()
    fmt = "csv" if suffix == ".csv" else None
    if suffix in (".jsonl", ".json", ".ndjson"):
        fmt = "jsonl"
    return read_trace_text(p.read_text(encoding="utf-8"), str(p), fmt)


def _csv_rows(text: str, source: str) -> Iterable[tuple[int, dict[str, Any]]]:
    lines = text.splitlines()
    for number, row in enumerate(csv.reader(io.StringIO("\n".join(lines))), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if [c.lower() for c in cells] == list(CSV_FIELDS):
            continue
        if len(cells) == 3 and cells[2].lower() in NODE_EVENTS:
            cells.append("")  # "1500,node-7,leave": the empty fourth field left out
        if len(cells) != len(CSV_FIELDS):
            raise TraceError(
                source, number, f"expected 4 fields time,node,event,pod, got {len(cells)}"
            )
        yield number, dict(zip(CSV_FIELDS, cells, strict=True))


def _json_rows(text: str, source: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise TraceError(source, number, f"not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise TraceError(source, number, "expected a JSON object")
        if str(obj.get("event", "")).strip().lower() in NODE_EVENTS:
            obj = {"pod": str(obj.get("instance_type") or ""), **obj}
        missing = [k for k in CSV_FIELDS if k not in obj]
        if missing:
            raise TraceError(source, number, f"missing key(s) {', '.join(missing)}")
        yield number, obj


def parse_time(value: Any) -> float | None:
    """Seconds from a number, a numeric string or an ISO 8601 date-time with a zone (epoch
    seconds); None if it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def _row(source: str, line: int, fields: dict[str, Any]) -> RawRow:
    t, node, event, pod = (fields[k] for k in CSV_FIELDS)
    time = parse_time(t)
    if time is None:
        raise TraceError(
            source, line, f"time {t!r} is not a number (seconds) or an ISO date-time with a zone"
        )
    if not math.isfinite(time) or time < 0:
        raise TraceError(source, line, f"time {t!r} must be a finite number >= 0")
    who: int | str
    if isinstance(node, bool) or node is None:
        raise TraceError(source, line, f"node {node!r} is neither an integer >= 0 nor a name")
    if isinstance(node, int):
        who = node
    elif isinstance(node, str) and node.strip().isdigit():
        who = int(node.strip())
    elif isinstance(node, str) and node.strip() and not node.strip().lstrip("-").isdigit():
        who = node.strip()
    else:
        raise TraceError(source, line, f"node {node!r} is neither an integer >= 0 nor a name")
    if isinstance(who, int) and who < 0:
        raise TraceError(source, line, f"node {node!r} is neither an integer >= 0 nor a name")
    kind = str(event).strip().lower()
    if kind not in (ADD, DEL, *NODE_EVENTS):
        raise TraceError(
            source, line, f"event {event!r} is neither 'add' nor 'del' (nor 'join', 'leave')"
        )
    if kind in NODE_EVENTS:
        text = "" if pod is None else str(pod).strip()
        if kind == LEAVE and text:
            raise TraceError(source, line, f"a leave has no fourth field, got {pod!r}")
        if text and not _TYPE_NAME.fullmatch(text):
            raise TraceError(source, line, f"instance type {pod!r} is not a type name")
        return line, time, who, kind, text
    if not isinstance(pod, str) or not pod.strip():
        raise TraceError(source, line, "pod name is empty")
    return line, time, who, kind, pod.strip()


_TYPE_NAME = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9-]+")


def build_trace(rows: list[RawRow], source: str = "<trace>") -> Trace:
    """Number the nodes, rebase absolute times, sort by time (stable: input order breaks
    ties) and check each pod's add/del order."""
    if all(isinstance(node, int) for _l, _t, node, _e, _p in rows):
        count = max((int(node) for _l, _t, node, _e, _p in rows), default=-1) + 1
        names = tuple(str(i) for i in range(count))
        index: dict[int | str, int] = {i: i for i in range(count)}
    else:
        order: dict[str, int] = {}
        for _l, _t, node, _e, _p in rows:
            order.setdefault(str(node), len(order))
        names = tuple(order)
        index = {node: order[str(node)] for _l, _t, node, _e, _p in rows}
    first = min((t for _l, t, _n, _e, _p in rows), default=0.0)
    shift = first - REBASE_LEAD_S if first >= EPOCH_THRESHOLD_S else 0.0
    events = [
        (line, PodEvent(t - shift, index[node], kind, pod)) for line, t, node, kind, pod in rows
    ]
    events.sort(key=lambda le: le[1].time)
    check_node_events([(line, ev) for line, ev in events], names, source)
    live: set[tuple[int, str]] = set()
    for line, ev in events:
        who = (ev.node, ev.pod)
        name = names[ev.node] if ev.node < len(names) else str(ev.node)
        if ev.event in NODE_EVENTS:
            continue
        if ev.event == ADD:
            if who in live:
                raise TraceError(source, line, f"pod {ev.pod!r} is already on node {name}")
            live.add(who)
        else:
            if who not in live:
                raise TraceError(
                    source, line, f"del of pod {ev.pod!r} on node {name} with no live add"
                )
            live.discard(who)
    return Trace([ev for _line, ev in events], names, shift, source)


def check_node_events(
    events: Iterable[tuple[int, PodEvent]], names: tuple[str, ...] = (), source: str = "<trace>"
) -> None:
    """Each node joins at most once, before its pods, and leaves at most once, after them
    (events in time order, each with its line number; :class:`TraceError` otherwise)."""
    seen: set[int] = set()  # nodes with any event so far
    joined: set[int] = set()
    left: set[int] = set()
    for line, ev in events:
        name = names[ev.node] if ev.node < len(names) else str(ev.node)
        if ev.node in left:
            raise TraceError(source, line, f"node {name} has an event after it left")
        if ev.event == JOIN:
            if ev.node in joined:
                raise TraceError(source, line, f"node {name} joins twice")
            if ev.node in seen:
                raise TraceError(source, line, f"node {name} joins after events of its own")
            joined.add(ev.node)
        elif ev.event == LEAVE:
            left.add(ev.node)
        seen.add(ev.node)


def dump_csv(events: Iterable[PodEvent]) -> str:
    """A workload as a CSV trace (what :func:`parse_trace` reads back)."""
    out = ["time,node,event,pod"]
    out.extend(f"{e.time!r},{e.node},{e.event},{e.pod}" for e in events)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- scenarios
Generator = Callable[[int, float, float, random.Random], list[PodEvent]]


@attrs.frozen
class Scenario:
    """A built-in workload with its defaults (the CLI may override nodes and duration).

    Nodes boot spread over ``boot_spread_s(nodes)`` seconds from 0; pods start arriving at
    ``begin = boot spread + 30 s`` and the generator fills ``[begin, duration)``.
    """

    name: str
    description: str
    nodes: int
    instance_type: str
    duration_s: float
    generate: Generator

    def boot_spread_s(self, nodes: int) -> float:
        """Nodes join at about 3 a second (a fleet launched at once is throttled at boot)."""
        return max(30.0, nodes * 0.3)

    def events(self, nodes: int, duration_s: float, seed: int) -> list[PodEvent]:
        begin = self.boot_spread_s(nodes) + 30.0
        rng = random.Random(f"{self.name}/{seed}")
        events = self.generate(nodes, begin, duration_s, rng)
        events.sort(key=lambda e: e.time)
        return events


def _steady(nodes: int, begin: float, end: float, rng: random.Random) -> list[PodEvent]:
    """20 pods a node; each lives ~5 min (exponential) and is replaced ~5 s after it goes."""
    out: list[PodEvent] = []
    expo = rng.expovariate
    for node in range(nodes):
        serial = 0
        for _slot in range(20):
            t = begin + rng.uniform(0.0, 60.0)
            while t < end:
                serial += 1
                name = f"n{node}-p{serial}"
                out.append(PodEvent(t, node, ADD, name))
                gone = t + expo(1 / 300.0)
                if gone >= end:
                    break
                out.append(PodEvent(gone, node, DEL, name))
                t = gone + expo(1 / 5.0)
    return out


def _burst(nodes: int, begin: float, end: float, rng: random.Random) -> list[PodEvent]:
    """5 pods a node, then 2 minutes later a burst of 30 more within 10 s, gone after ~10 min."""
    out: list[PodEvent] = []
    for node in range(nodes):
        for i in range(5):
            out.append(PodEvent(begin + rng.uniform(0.0, 10.0), node, ADD, f"n{node}-base{i}"))
        start = begin + 120.0
        for i in range(30):
            t = start + rng.uniform(0.0, 10.0)
            if t >= end:
                continue
            out.append(PodEvent(t, node, ADD, f"n{node}-burst{i}"))
            gone = start + 600.0 + rng.uniform(0.0, 60.0)
            if gone < end:
                out.append(PodEvent(gone, node, DEL, f"n{node}-burst{i}"))
    return out


def _batch(nodes: int, begin: float, end: float, rng: random.Random) -> list[PodEvent]:
    """Every 10 minutes each node runs 15 jobs, started within 5 s, each 1 to 4 minutes."""
    out: list[PodEvent] = []
    wave = 0
    t0 = begin
    while t0 < end:
        for node in range(nodes):
            for i in range(15):
                name = f"n{node}-w{wave}-j{i}"
                t = t0 + rng.uniform(0.0, 5.0)
                if t >= end:
                    continue
                out.append(PodEvent(t, node, ADD, name))
                gone = t + rng.uniform(60.0, 240.0)
                if gone < end:
                    out.append(PodEvent(gone, node, DEL, name))
        wave += 1
        t0 += 600.0
    return out


def _diurnal(nodes: int, begin: float, end: float, rng: random.Random) -> list[PodEvent]:
    """One day compressed into the run: the arrival rate follows a sine from a trough of 4
    to a peak of 40 pods a node (lifetimes ~10 min, exponential)."""
    out: list[PodEvent] = []
    period = max(end - begin, 1.0)
    life = 600.0
    peak_rate = 40.0 / life
    low = 0.1
    for node in range(nodes):
        t = begin
        serial = 0
        while True:
            t += rng.expovariate(peak_rate)
            if t >= end:
                break
            phase = (t - begin) / period
            rate = low + (1 - low) * 0.5 * (1 - math.cos(2 * math.pi * phase))
            if rng.random() >= rate:  # thinning
                continue
            serial += 1
            name = f"n{node}-d{serial}"
            out.append(PodEvent(t, node, ADD, name))
            gone = t + rng.expovariate(1 / life)
            if gone < end:
                out.append(PodEvent(gone, node, DEL, name))
    return out


UPSTREAM_PODS_PER_NODE = 46  # 23,000 pods / 500 nodes
UPSTREAM_PODS_PER_S = 100.0  # pods the control plane creates a second


def _upstream_scaleup(nodes: int, begin: float, end: float, rng: random.Random) -> list[PodEvent]:
    """0 to 46 pods a node (23,000 on 500 nodes), created at 100 pods/s cluster-wide and
    spread evenly (each round of the scheduler visits every node once, in random order)."""
    out: list[PodEvent] = []
    i = 0
    for rnd in range(UPSTREAM_PODS_PER_NODE):
        order = list(range(nodes))
        rng.shuffle(order)
        for node in order:
            t = begin + i / UPSTREAM_PODS_PER_S
            i += 1
            if t < end:
                out.append(PodEvent(t, node, ADD, f"n{node}-s{rnd}"))
    return out


AUTOSCALE_SCALE_UP_S = 120.0  # after the first pods: demand grows past the first nodes
AUTOSCALE_SCALE_DOWN_S = 1200.0  # after the first pods: demand falls back
AUTOSCALE_UNNEEDED_S = 600.0  # cluster-autoscaler's --scale-down-unneeded-time default


def _autoscale(nodes: int, begin: float, end: float, rng: random.Random) -> list[PodEvent]:
    """Cluster-autoscaler's life. The first half of the nodes (at least one) run 10 pods
    each. 2 minutes in, demand grows: the first nodes take 10 more pods each (within 10 s),
    and the pods that do not fit bring the other nodes, which join 60-90 s later (launch and
    registration) and take 30 pods each 30-40 s after joining (kubelet ready: the pending
    pods start within seconds), so a new node boots into a burst. 20 minutes in, the extra pods go
    (within a minute) except 3 on each new node; 10 minutes later (the autoscaler's unneeded
    time) the new nodes leave, one every 10 s: drained, their pods rescheduled on the nodes
    that stay."""
    out: list[PodEvent] = []
    first = max(1, nodes // 2)
    up, down = begin + AUTOSCALE_SCALE_UP_S, begin + AUTOSCALE_SCALE_DOWN_S
    gone_by = down + 60.0

    def pod(node: int, name: str, t: float, leaves: float | None) -> None:
        if t >= end:
            return
        out.append(PodEvent(t, node, ADD, name))
        if leaves is not None and leaves < end:
            out.append(PodEvent(max(leaves, t), node, DEL, name))

    for node in range(first):
        for i in range(10):
            pod(node, f"n{node}-base{i}", begin + rng.uniform(0.0, 10.0), None)
        for i in range(10):
            pod(node, f"n{node}-up{i}", up + rng.uniform(0.0, 10.0),
                down + rng.uniform(0.0, 60.0))  # fmt: skip
    for k, node in enumerate(range(first, nodes)):
        joins = up + rng.uniform(60.0, 90.0)
        out.append(PodEvent(joins, node, JOIN, ""))
        ready = joins + 30.0
        for i in range(30):
            stays = i < 3
            pod(node, f"n{node}-up{i}", ready + rng.uniform(0.0, 10.0),
                None if stays else down + rng.uniform(0.0, 60.0))  # fmt: skip
        leaves = gone_by + AUTOSCALE_UNNEEDED_S + 10.0 * k
        if leaves < end:
            out.append(PodEvent(leaves, node, LEAVE, ""))
    return out


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("steady", "steady churn: 20 pods a node, ~5 min lifetimes", 10, "m5.xlarge",
                 3600.0, _steady),
        Scenario("burst", "scale-up burst: 5 pods a node, then +30 within 10 s", 10, "m5.xlarge",
                 1800.0, _burst),
        Scenario("batch", "batch jobs: 15 short jobs a node every 10 min", 10, "m5.xlarge",
                 3600.0, _batch),
        Scenario("diurnal", "diurnal: a day compressed into the run, 4 to 40 pods a node", 10,
                 "m5.xlarge", 7200.0, _diurnal),
        Scenario("upstream-scaleup", "upstream's scale test: 500 nodes, 0 to 23,000 pods", 500,
                 "m5.4xlarge", 900.0, _upstream_scaleup),
        Scenario("autoscale", "autoscaling: half the nodes, a scale-up brings the rest (they "
                 "join into a burst), they leave again (drained, pods rescheduled)", 10,
                 "m5.xlarge", 2700.0, _autoscale),
    )
}  # fmt: skip
