"""Pod workloads for the simulator: trace files and built-in scenarios.

A workload is a list of :class:`PodEvent` sorted by time: a pod arrives on a node (``add``,
it asks for an address) or departs (``del``, its address is released). Times are seconds
from the start of the simulation; nodes are numbered 0 to N-1.

Trace files
-----------
Two formats, chosen by extension (``.csv``; ``.jsonl``/``.json``/``.ndjson``) or, for any
other name, by the first non-blank character (``{`` means JSON lines). Blank lines and lines
starting with ``#`` are skipped in both.

CSV, one event a line, an optional header ``time,node,event,pod``::

    # time,node,event,pod
    0.0,0,add,web-1
    12.5,1,add,web-2
    600,0,del,web-1

JSON lines, one object a line with the same four keys::

    {"time": 0.0, "node": 0, "event": "add", "pod": "web-1"}
    {"time": 600, "node": 0, "event": "del", "pod": "web-1"}

``time`` is a finite number >= 0, ``node`` an integer >= 0, ``event`` ``add`` or ``del``,
``pod`` a non-empty name unique per node while it lives. A ``del`` must follow the pod's
``add`` (in time order); a second ``add`` of a live pod is an error. Any bad line raises
:class:`TraceError` naming the file and the line number.

Built-in scenarios
------------------
See :data:`SCENARIOS`: ``steady`` (churn around a constant population), ``burst``
(scale-up burst), ``batch`` (batch jobs every 10 minutes), ``diurnal`` (a compressed day:
arrival rate follows a sine), ``upstream-scaleup`` (500 nodes, 0 to 23,000 pods, as in
upstream's scale tests). Every generator draws from the ``random.Random`` it is given,
so a seed fixes the workload.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import attrs

ADD = "add"
DEL = "del"
CSV_FIELDS = ("time", "node", "event", "pod")


class PodEvent(NamedTuple):
    """One pod arrival (``add``) or departure (``del``) on one node."""

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
def parse_trace(text: str, source: str = "<trace>", fmt: str | None = None) -> list[PodEvent]:
    """Parse a trace (``fmt`` "csv" or "jsonl"; None: guess from the first character)."""
    if fmt is None:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        fmt = "jsonl" if first.startswith("{") else "csv"
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"unknown trace format {fmt!r} (csv or jsonl)")
    raw = _csv_rows(text, source) if fmt == "csv" else _json_rows(text, source)
    events = [_event(source, line, fields) for line, fields in raw]
    return _checked(events, source)


def load_trace(path: str | Path) -> list[PodEvent]:
    """Read and parse a trace file (format from the extension, else sniffed)."""
    p = Path(path)
    suffix = p.suffix.lower()
    fmt = "csv" if suffix == ".csv" else None
    if suffix in (".jsonl", ".json", ".ndjson"):
        fmt = "jsonl"
    return parse_trace(p.read_text(encoding="utf-8"), str(p), fmt)


def _csv_rows(text: str, source: str) -> Iterable[tuple[int, dict[str, Any]]]:
    lines = text.splitlines()
    for number, row in enumerate(csv.reader(io.StringIO("\n".join(lines))), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if [c.lower() for c in cells] == list(CSV_FIELDS):
            continue
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
        missing = [k for k in CSV_FIELDS if k not in obj]
        if missing:
            raise TraceError(source, number, f"missing key(s) {', '.join(missing)}")
        yield number, obj


def _event(source: str, line: int, fields: dict[str, Any]) -> tuple[int, PodEvent]:
    t, node, event, pod = (fields[k] for k in CSV_FIELDS)
    try:
        if isinstance(t, bool):
            raise ValueError
        time = float(t)
    except (TypeError, ValueError):
        raise TraceError(source, line, f"time {t!r} is not a number") from None
    if not math.isfinite(time) or time < 0:
        raise TraceError(source, line, f"time {t!r} must be a finite number >= 0")
    if isinstance(node, bool) or not (
        isinstance(node, int) or (isinstance(node, str) and node.isdigit())
    ):
        raise TraceError(source, line, f"node {node!r} is not an integer >= 0")
    index = int(node)
    if index < 0:
        raise TraceError(source, line, f"node {node!r} is not an integer >= 0")
    kind = str(event).strip().lower()
    if kind not in (ADD, DEL):
        raise TraceError(source, line, f"event {event!r} is neither 'add' nor 'del'")
    if not isinstance(pod, str) or not pod.strip():
        raise TraceError(source, line, "pod name is empty")
    return line, PodEvent(time, index, kind, pod.strip())


def _checked(events: list[tuple[int, PodEvent]], source: str) -> list[PodEvent]:
    """Sort by time (stable: file order breaks ties) and check each pod's add/del order."""
    events.sort(key=lambda le: le[1].time)
    live: set[tuple[int, str]] = set()
    for line, ev in events:
        who = (ev.node, ev.pod)
        if ev.event == ADD:
            if who in live:
                raise TraceError(source, line, f"pod {ev.pod!r} is already on node {ev.node}")
            live.add(who)
        else:
            if who not in live:
                raise TraceError(
                    source, line, f"del of pod {ev.pod!r} on node {ev.node} with no live add"
                )
            live.discard(who)
    return [ev for _line, ev in events]


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
    )
}  # fmt: skip
