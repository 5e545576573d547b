"""``ipamctl replay`` and ``ipamctl explain``: read the daemon's flight record.

``replay LOG`` re-runs the record (``LOG.1`` first when it exists) through the node and checks
that every command comes out as the daemon issued it. ``replay LOG --what-if
WARM_IP_TARGET=5`` (repeatable) runs the record's pod arrivals and departures through the
simulator (the same node, the fake cloud in virtual time, the instance type of the record)
twice, with the recorded settings and with the changed ones, and prints both measures.
``explain --pod NS/NAME`` (or ``--eni ID``) replays it too and tells, with times, why the pod
waited or the ENI came or went: the inputs and the rule that decided.
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Iterator
from typing import Any, TextIO

import attrs

from adapters.ipamctl.render import as_json
from adapters.simulator import Cluster, PodEvent, SimConfig
from adapters.simulator.workload import ADD, DEL
from ipamcore.config import PolicyName
from ipamcore.effects import CreateEni, FreeEni
from ipamcore.events import EffectFailed, EniCreated, EniFreed
from ipamcore.node import Node, record
from ipamcore.node import commands as c
from ipamcore.node import inputs as i

DEFAULT_LOG = "/var/run/aws-node/flight.log"


def add_parsers(sub: Any) -> None:
    rp = sub.add_parser("replay", help="re-run the daemon's flight record and check it")
    rp.add_argument("log", nargs="?", default=DEFAULT_LOG, help="default %(default)s")
    rp.add_argument(
        "--what-if", action="append", default=[], metavar="NAME=VALUE",
        help="replay the record's pods through the simulator with this setting changed: "
        + ", ".join(sorted(WHAT_IF)),
    )  # fmt: skip
    ex = sub.add_parser("explain", help="why a pod waited or an ENI came or went (flight record)")
    ex.add_argument("--log", default=DEFAULT_LOG, help="default %(default)s")
    what = ex.add_mutually_exclusive_group(required=True)
    what.add_argument("--pod", metavar="NS/NAME")
    what.add_argument("--eni", metavar="ENI_ID")


def _lines(path: str) -> Iterator[str]:
    for name in (path + ".1", path):
        if os.path.exists(name):
            with open(name, encoding="utf-8") as f:
                yield from f


def _load(path: str, out: TextIO) -> record.Record | None:
    rec = record.read(_lines(path))
    if rec.config is None:
        out.write(
            f"{path}: the record does not reach back to the daemon's start "
            "(rotated away, or no record): nothing to replay\n"
        )
        return None
    return rec


# Settings a what-if may change: variable -> (PoolConfig field, parser).
WHAT_IF: dict[str, tuple[str, Any]] = {
    "WARM_ENI_TARGET": ("warm_eni_target", int),
    "WARM_IP_TARGET": ("warm_ip_target", int),
    "MINIMUM_IP_TARGET": ("minimum_ip_target", int),
    "WARM_PREFIX_TARGET": ("warm_prefix_target", int),
    "IPAMD_POLICY": ("policy", PolicyName),
}


def pod_events(rec: record.Record) -> tuple[str, list[PodEvent]]:
    """The record's instance type and its pods' arrivals (ADD) and departures (DEL), in
    seconds from the record's start, as a simulator workload for one node."""
    instance_type, events = "", []
    start = rec.steps[0][0].now if rec.steps else 0.0
    names: dict[Any, str] = {}
    for inp, _ in rec.steps:
        if isinstance(inp, i.IdentityRead):
            instance_type = inp.identity.instance_type
        elif isinstance(inp, i.Add) and inp.key not in names:
            names[inp.key] = f"{inp.pod.namespace}/{inp.pod.name or inp.key.container_id}"
            events.append(PodEvent(round(inp.now - start, 6), 0, ADD, names[inp.key]))
        elif isinstance(inp, i.Del) and inp.key in names:
            events.append(PodEvent(round(inp.now - start, 6), 0, DEL, names.pop(inp.key)))
    return instance_type, events


def run_what_if(args: argparse.Namespace, rec: record.Record, out: TextIO) -> int:
    assert rec.config is not None
    changes: dict[str, Any] = {}
    for item in args.what_if:
        name, _, value = item.partition("=")
        if name not in WHAT_IF:
            out.write(f"--what-if: {name!r} is not one of {', '.join(sorted(WHAT_IF))}\n")
            return 2
        field, parse = WHAT_IF[name]
        changes[field] = parse(value)
    instance_type, events = pod_events(rec)
    if not instance_type or not events:
        out.write("the record holds no start or no pod: nothing to simulate\n")
        return 1
    duration = max(e.time for e in events) + 600.0
    recorded = rec.config.pool
    results = {}
    for label, pool in (("recorded", recorded), ("what-if", attrs.evolve(recorded, **changes))):
        sim = SimConfig(
            nodes=1, duration_s=duration, instance_type=instance_type, pool=pool,
            policy_interval_s=rec.config.policy_interval_s,
            reconcile_interval_s=rec.config.reconcile_interval_s,
        )  # fmt: skip
        results[label] = Cluster(sim, events).run()
    if args.json:
        as_json(out, {label: m.to_dict() for label, m in results.items()})
        return 0
    rows = zip(results["recorded"].rows(), results["what-if"].rows(), strict=True)
    what = ", ".join(args.what_if)
    out.write(f"{len(events)} pod events of the record on a simulated {instance_type}\n")
    width = max(len(name) for name, _ in results["recorded"].rows())
    out.write(f"{'':{width}}  {'recorded settings':>28}  {what:>28}\n")
    for (name, a), (_, b) in rows:
        out.write(f"{name:{width}}  {a:>28}  {b:>28}\n")
    return 0


def run_replay(args: argparse.Namespace, out: TextIO) -> int:
    rec = _load(args.log, out)
    if rec is None or rec.config is None:
        return 1
    if args.what_if:
        return run_what_if(args, rec, out)
    total = commands = 0
    first_bad: record.Step | None = None
    for step in record.replay(rec.config, rec.steps):
        total += 1
        commands += len(step.commands)
        if not step.matches and first_bad is None:
            first_bad = step
    if args.json:
        as_json(
            out,
            {
                "inputs": total,
                "commands": commands,
                "reproduced": first_bad is None,
                "first_mismatch": None if first_bad is None else first_bad.index,
            },
        )
    elif first_bad is None:
        out.write(f"{total} inputs replayed: all {commands} commands reproduced bit for bit\n")
    else:
        out.write(
            f"input {first_bad.index} ({type(first_bad.input).__name__} at "
            f"{first_bad.input.now}) gave other commands than recorded\n"
        )
    return 0 if first_bad is None else 1


class _Story:
    """Collects, while a record replays, what concerns one pod or one ENI."""

    def __init__(self, pod: tuple[str, str] | None, eni: str | None, wall_offset: float) -> None:
        self.pod, self.eni, self.offset = pod, eni, wall_offset
        self.lines: list[tuple[float, str]] = []
        self.requests: dict[int, float] = {}  # this pod's ADD/DEL request ids -> arrival
        self.effects: dict[int, tuple[Any, float]] = {}  # cid -> (effect, when planned)
        self.created: dict[str, float] = {}  # ENI id -> when its CreateEni was answered

    def at(self, now: float, text: str) -> None:
        self.lines.append((now, text))

    def watch(self, node: Node, step: record.Step) -> None:
        inp, now = step.input, step.input.now
        if isinstance(inp, i.Add) and self.pod == (inp.pod.namespace, inp.pod.name):
            self.requests[inp.request_id] = now
            stats = node.core.stats(now) if node.ipam is not None else None
            waiters = (*node._waiters, *node._card_waiters)
            waits = any(w.request.request_id == inp.request_id for w in waiters)
            if waits and stats is not None:
                self.at(
                    now,
                    f"ADD {inp.key}: no address ready ({stats.available} available, "
                    f"{stats.cooling} cooling, {stats.assigned}/{stats.total} assigned, "
                    f"{stats.pending} coming): it waits, first in line after "
                    f"{node.waiting - 1} others; the pool policy is kicked",
                )
            else:
                self.at(now, f"ADD {inp.key}")
        elif isinstance(inp, i.Del | i.Cancel) and inp.request_id not in self.requests:
            key = getattr(inp, "key", None)
            if key is not None and any(key == k for k in self._pod_keys(node)):
                self.requests[inp.request_id] = now
                self.at(now, f"DEL {key}")
        elif isinstance(inp, i.EffectDone) and inp.cid in self.effects:
            self._outcome(node, inp)
        for command in step.commands:
            if isinstance(command, c.PerformEffect):
                self._planned(node, command, now)
            elif isinstance(command, c.Reply) and command.request_id in self.requests:
                since = self.requests.pop(command.request_id)
                if command.error:
                    self.at(now, f"reply: {command.error}: {command.message}")
                elif command.allocation is not None and command.pod is not None:
                    self.at(
                        now,
                        f"reply: {command.allocation.ipv4} on "
                        f"{command.allocation.eni_id}, {now - since:.2f} s after the ADD",
                    )
                else:
                    self.at(now, f"reply: released {command.released}")
            elif isinstance(command, c.SetUpEni) and command.eni_id == self.eni:
                self.at(
                    now,
                    f"instance metadata lists {self.eni}: set up in the datapath, "
                    "its addresses serve pods from now",
                )
            elif isinstance(command, c.Log) and self.eni and self.eni in repr(command.fields):
                self.at(now, f"log {command.level}: {command.event}")

    def _pod_keys(self, node: Node) -> list[Any]:
        if self.pod is None or node.ipam is None:
            return []
        return [a.key for a in node.core.find_by_pod(*self.pod)]

    def _planned(self, node: Node, command: c.PerformEffect, now: float) -> None:
        effect = command.effect
        mine = self.pod is not None and self.requests
        if self.eni is not None and getattr(effect, "eni_id", None) != self.eni:
            if not isinstance(effect, CreateEni):
                return
        elif self.eni is None and not mine:
            return
        self.effects[command.cid] = (effect, now)
        if isinstance(effect, CreateEni | FreeEni) or self.eni is None or mine:
            stats = node.core.stats(now)
            rule = (
                "growth: ADDs waiting or the warm targets short"
                if not isinstance(effect, FreeEni)
                and type(effect).__name__ in ("CreateEni", "AssignAddresses")
                else "shrink: no ADD waiting, the warm targets exceeded, nothing assigned or "
                "cooling on what goes"
            )
            if self.eni is None or not isinstance(effect, CreateEni):
                self.at(
                    now,
                    f"effect {effect.effect_id} {type(effect).__name__} planned "
                    f"({rule}; {node.waiting} waiting, {stats.available} available, "
                    f"{stats.pending} coming)",
                )

    def _outcome(self, node: Node, inp: i.EffectDone) -> None:
        effect, planned = self.effects.pop(inp.cid)
        outcome, now = inp.outcome, inp.now
        if isinstance(outcome, EniCreated):
            if self.eni is not None and outcome.eni.eni_id != self.eni:
                return
            if self.eni is not None:
                self.at(
                    planned,
                    f"CreateEni planned (effect {effect.effect_id}: growth, "
                    f"{effect.ipv4_count} addresses, device {effect.device_index}"
                    + (f" on card {effect.network_card})" if effect.network_card else ")"),
                )
            self.at(
                now,
                f"effect {effect.effect_id} answered after {now - planned:.2f} s: "
                f"{outcome.eni.eni_id} created and attached; used once instance "
                "metadata lists it",
            )
        elif isinstance(outcome, EffectFailed):
            self.at(
                now, f"effect {effect.effect_id} failed ({outcome.kind.value}): {outcome.message}"
            )
        elif isinstance(outcome, EniFreed):
            self.at(now, f"effect {effect.effect_id}: {effect.eni_id} detached and deleted")
        else:
            self.at(now, f"effect {effect.effect_id} answered: {type(outcome).__name__}")

    def render(self, out: TextIO, start: float) -> None:
        for now, text in self.lines:
            wall = datetime.datetime.fromtimestamp(now + self.offset, tz=datetime.UTC)
            out.write(f"{wall:%Y-%m-%d %H:%M:%S.%f}"[:-3] + f" (+{now - start:8.3f} s)  {text}\n")


def run_explain(args: argparse.Namespace, out: TextIO) -> int:
    rec = _load(args.log, out)
    if rec is None or rec.config is None:
        return 1
    pod = None
    if args.pod:
        namespace, _, name = args.pod.partition("/")
        if not name:
            out.write("--pod takes NAMESPACE/NAME\n")
            return 2
        pod = (namespace, name)
    story = _Story(pod, args.eni, rec.wall_offset)
    start = rec.steps[0][0].now if rec.steps else 0.0
    for _ in record.replay(rec.config, rec.steps, story.watch):
        pass
    if not story.lines:
        out.write(f"nothing in the record about {args.pod or args.eni}\n")
        return 1
    if args.json:
        as_json(
            out,
            [
                {"now": now, "wall": now + rec.wall_offset, "what": text}
                for now, text in story.lines
            ],
        )
    else:
        story.render(out, start)
    return 0
