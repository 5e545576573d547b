"""Pod workloads from a real cluster: ``kubectl get pods -A -o json``, Kubernetes events and
API-server audit logs, turned into a :class:`~adapters.simulator.workload.Trace`.

What each source shows, and what it cannot:

``kubectl-pods`` (``kubectl get pods -A -o json``, one JSON document, a ``List`` of pods, or
JSON lines of pods): a snapshot of the pods that exist *now*. A pod arrives on its node at
``status.startTime`` (the kubelet took it: the CNI ADD follows within a second; else its
``PodScheduled`` condition, else its creation time) and leaves at the last
``finishedAt`` of its containers when it completed (Succeeded or Failed: the kubelet tears
the sandbox down, the CNI DEL) or at its ``deletionTimestamp`` when it is being deleted.
Running pods stay to the end. Pods deleted before the snapshot are not in it: for those,
export events or an audit log. Pods with ``hostNetwork`` (no address from the CNI) and pods
not scheduled yet are skipped.

``events`` (``kubectl get events -A -o json``, or ``-w -o json`` JSON lines, core/v1 or
events.k8s.io/v1): a pod arrives at its ``Scheduled`` event (``Successfully assigned NS/NAME
to NODE``) and leaves at its first ``Killing`` event. Events are kept one hour by default
(kube-apiserver ``--event-ttl``), and completed Job pods have no ``Killing`` event: such a
pod stays to the end of the trace.

``audit`` (API-server audit log, JSON lines, level ``Request`` or above for the bindings): a
pod arrives when the scheduler's ``create`` of ``pods/binding`` completes (the node is the
binding's ``target.name``), and leaves at the first of: a ``delete`` of the pod, a status
update that sets phase ``Succeeded`` or ``Failed``. Only ``ResponseComplete`` entries with a
2xx code count. A deletion whose arrival the log does not show is skipped (counted).

Every importer skips what it cannot use and counts it by reason (:attr:`Imported.skipped`);
the trace is checked as a hand-written one is.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from adapters.simulator.workload import (
    ADD,
    DEL,
    RawRow,
    Trace,
    TraceError,
    build_trace,
    parse_time,
)

SOURCES = ("kubectl-pods", "events", "audit")
ASSIGNED = re.compile(r"[Ss]uccessfully assigned (\S+)/(\S+) to (\S+)")


@attrs.frozen
class Imported:
    """A trace made from a cluster export, and what was left out (reason -> count)."""

    trace: Trace
    skipped: dict[str, int]

    def notes(self) -> list[str]:
        return [f"{n} skipped: {why}" for why, n in sorted(self.skipped.items())]


def _documents(text: str, source: str) -> Iterable[Any]:
    """One JSON document (a list's items are yielded) or JSON lines."""
    stripped = text.strip()
    if not stripped:
        return
    try:
        doc = json.loads(stripped)
    except json.JSONDecodeError:
        doc = None
    if doc is not None:
        if isinstance(doc, dict) and isinstance(doc.get("items"), list):
            yield from doc["items"]
        elif isinstance(doc, list):
            yield from doc
        else:
            yield doc
        return
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(source, number, f"not valid JSON ({exc.msg})") from None
        if isinstance(obj, dict) and isinstance(obj.get("items"), list):
            yield from obj["items"]
        else:
            yield obj


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _time(*values: Any) -> float | None:
    for v in values:
        if v:
            t = parse_time(v)
            if t is not None:
                return t
    return None


def from_kubectl_pods(text: str, source: str = "<pods>") -> Imported:
    """Pods of ``kubectl get pods -A -o json`` (see the module docstring)."""
    rows: list[RawRow] = []
    skipped: Counter[str] = Counter()
    for i, pod in enumerate(_documents(text, source), start=1):
        if not isinstance(pod, dict) or pod.get("kind", "Pod") != "Pod":
            skipped["not a pod"] += 1
            continue
        meta = pod.get("metadata") or {}
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        name = f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"
        node = spec.get("nodeName")
        if spec.get("hostNetwork"):
            skipped["host-network pods (no address from the CNI)"] += 1
            continue
        if not node:
            skipped["pods not scheduled"] += 1
            continue
        scheduled = next(
            (c.get("lastTransitionTime") for c in status.get("conditions") or []
             if c.get("type") == "PodScheduled" and c.get("status") == "True"), None,
        )  # fmt: skip
        start = _time(status.get("startTime"), scheduled, meta.get("creationTimestamp"))
        if start is None:
            skipped["pods without a start time"] += 1
            continue
        end = None
        if status.get("phase") in ("Succeeded", "Failed"):
            finished = [
                _time(_get(cs, "state", "terminated", "finishedAt"))
                for cs in (status.get("initContainerStatuses") or [])
                + (status.get("containerStatuses") or [])
            ]
            end = max((t for t in finished if t is not None), default=None)
        if meta.get("deletionTimestamp"):
            deleted = _time(meta["deletionTimestamp"])
            if deleted is not None:
                end = deleted if end is None else min(end, deleted)
        rows.append((i, start, str(node), ADD, name))
        if end is not None:
            rows.append((i, max(end, start), str(node), DEL, name))
    return Imported(build_trace(rows, source), dict(skipped))


def from_events(text: str, source: str = "<events>") -> Imported:
    """Pod ``Scheduled`` and ``Killing`` events (see the module docstring)."""
    rows: list[RawRow] = []
    skipped: Counter[str] = Counter()
    node_of: dict[str, str] = {}
    gone: set[str] = set()
    items = []
    for i, ev in enumerate(_documents(text, source), start=1):
        if isinstance(ev, dict) and ev.get("type") in ("ADDED", "MODIFIED") and "object" in ev:
            ev = ev["object"]  # kubectl get events -w -o json in watch-event form
        if not isinstance(ev, dict):
            skipped["not an event"] += 1
            continue
        obj = ev.get("involvedObject") or ev.get("regarding") or {}
        if obj.get("kind") != "Pod":
            continue
        t = _time(ev.get("eventTime"), ev.get("firstTimestamp"), ev.get("lastTimestamp"),
                  _get(ev, "metadata", "creationTimestamp"))  # fmt: skip
        if t is None:
            skipped["events without a time"] += 1
            continue
        items.append((t, i, ev, obj))
    items.sort(key=lambda x: (x[0], x[1]))
    for t, i, ev, obj in items:
        reason = ev.get("reason")
        name = f"{obj.get('namespace', 'default')}/{obj.get('name', '')}"
        if reason == "Scheduled":
            m = ASSIGNED.search(ev.get("message") or ev.get("note") or "")
            if m is None:
                skipped["Scheduled events without a node"] += 1
                continue
            if name in node_of:
                continue
            node_of[name] = m.group(3)
            rows.append((i, t, m.group(3), ADD, name))
        elif reason == "Killing" and name not in gone:
            if name not in node_of:
                skipped["Killing events of pods whose Scheduled event is missing"] += 1
                continue
            gone.add(name)
            rows.append((i, t, node_of[name], DEL, name))
    return Imported(build_trace(rows, source), dict(skipped))


def from_audit(text: str, source: str = "<audit>") -> Imported:
    """Bindings, deletions and completions of pods in an audit log (module docstring)."""
    rows: list[RawRow] = []
    skipped: Counter[str] = Counter()
    node_of: dict[str, str] = {}
    gone: set[str] = set()
    items = []
    for i, entry in enumerate(_documents(text, source), start=1):
        if not isinstance(entry, dict) or entry.get("stage") != "ResponseComplete":
            continue
        ref = entry.get("objectRef") or {}
        if ref.get("resource") != "pods":
            continue
        code = _get(entry, "responseStatus", "code")
        if isinstance(code, int) and not 200 <= code < 300:
            continue
        t = _time(entry.get("stageTimestamp"), entry.get("requestReceivedTimestamp"))
        if t is None:
            skipped["entries without a time"] += 1
            continue
        items.append((t, i, entry, ref))
    items.sort(key=lambda x: (x[0], x[1]))
    for t, i, entry, ref in items:
        name = f"{ref.get('namespace', 'default')}/{ref.get('name', '')}"
        verb, sub = entry.get("verb"), ref.get("subresource")
        if verb == "create" and sub == "binding":
            node = _get(entry, "requestObject", "target", "name")
            if not node:
                skipped["bindings without the node (audit level Metadata)"] += 1
                continue
            if name in node_of and name not in gone:
                continue
            node_of[name] = str(node)
            gone.discard(name)
            rows.append((i, t, str(node), ADD, name))
            continue
        ends = verb == "delete" and not sub
        phase = _get(entry, "requestObject", "status", "phase")
        ends = ends or (sub == "status" and phase in ("Succeeded", "Failed"))
        if not ends or name in gone:
            continue
        if name not in node_of:
            skipped["ends of pods whose binding the log does not show"] += 1
            continue
        gone.add(name)
        rows.append((i, t, node_of[name], DEL, name))
    return Imported(build_trace(rows, source), dict(skipped))


IMPORTERS = {"kubectl-pods": from_kubectl_pods, "events": from_events, "audit": from_audit}


def import_trace(path: str | Path, kind: str) -> Imported:
    """Read a cluster export of ``kind`` (one of :data:`SOURCES`)."""
    p = Path(path)
    return IMPORTERS[kind](p.read_text(encoding="utf-8"), str(p))


def to_csv(trace: Trace) -> str:
    """A trace as CSV with its node names (what ``--trace`` reads back)."""
    out = []
    if trace.rebased_by:
        out.append(f"# times are seconds after Unix time {trace.rebased_by:.6f}")
    out.append("time,node,event,pod")
    out.extend(f"{round(e.time, 6)!r},{trace.node_names[e.node]},{e.event},{e.pod}"
               for e in trace.events)  # fmt: skip
    return "\n".join(out) + "\n"
