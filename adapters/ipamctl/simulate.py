"""``ipamctl simulate``: run the node agent's core on a simulated cluster (fake cloud, virtual
time) and report pod address waits, idle addresses, EC2 calls and throttling.

Wire it into ``ipamctl`` (``adapters/ipamctl/main.py``)::

    from adapters.ipamctl.simulate import add_simulate_parser, run_simulate
    ...
    add_simulate_parser(sub)                      # in build_parser(), after the others
    COMMANDS["simulate"] = lambda args, out: run_simulate(args, out)

``--json`` works before or after ``simulate``. Exit codes: 0 ok, 2 bad arguments, an
impossible setting or a bad trace.

Settings are checked against the instance type before the run (:func:`check_settings`):
impossible ones are refused (prefix delegation or IPv6 on a type that is not Nitro, IPv6
single stack without prefix delegation, multi-NIC pods without ENABLE_MULTI_NIC, a
WARM_IP_TARGET or MINIMUM_IP_TARGET above what a node can hold), ignored ones are named on
stderr (knobs the adaptive policy does not read, WARM_ENI_TARGET under WARM_IP_TARGET, the
warm targets in IPv6 mode, ...: :mod:`adapters.ipamctl.families` for the IP families and
network cards). ``--plot`` is
checked before the run too (matplotlib importable, the directory exists), and the table is
printed even if drawing fails.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from adapters.ipamctl.families import FALSE, FAMILY_KNOBS, TRUE, check_families
from adapters.simulator import SCENARIOS, Cluster, Measures, SimConfig, TraceError
from adapters.simulator.cluster import DRAINS
from adapters.simulator.importers import SOURCES, import_trace, to_csv
from adapters.simulator.workload import EPOCH_THRESHOLD_S, JOIN, PodEvent, Trace, read_trace
from backends.fakecloud.latency import REALISTIC_METADATA_LAG_S
from ipamcore.config import PolicyName, PoolConfig
from ipamcore.errors import ConfigError, UnknownInstanceType
from ipamcore.limits import InstanceLimits, limits_for
from ipamcore.model import IPS_PER_PREFIX

KNOBS: dict[str, tuple[str, type]] = {
    "WARM_ENI_TARGET": ("warm_eni_target", int),
    "WARM_IP_TARGET": ("warm_ip_target", int),
    "MINIMUM_IP_TARGET": ("minimum_ip_target", int),
    "WARM_PREFIX_TARGET": ("warm_prefix_target", int),
    "ENABLE_PREFIX_DELEGATION": ("prefix_delegation", bool),
    "IP_COOLDOWN_PERIOD": ("cooldown_s", float),
    **FAMILY_KNOBS,
}
KNOB_NAMES = {name.upper(): name for name in KNOBS}  # --set reads names in any case
IDLE_DEFINITION = (
    "idle address-hours: addresses held on the nodes' ENIs but not assigned to a pod, summed "
    "over the run (one address idle for one hour = 1); the subnet addresses the warm pool keeps "
    "from everyone else"
)
TRACE_HELP = """\
trace files (--trace FILE): one pod event a line, CSV or JSON lines (.csv; .jsonl/.ndjson/.json;
else sniffed: a line starting with { is JSON). Blank lines and lines starting with # are skipped.
  CSV, optional header:   time,node,event,pod
                          0.0,ip-10-0-1-7.ec2.internal,add,web-1
                          600,ip-10-0-1-7.ec2.internal,del,web-1
  JSON lines:             {"time": 0.0, "node": 0, "event": "add", "pod": "web-1"}
  time   seconds from the start, Unix epoch seconds, or an ISO 8601 date-time with a zone;
         absolute times (after 1973) are rebased so the first event comes 30 s after the
         nodes boot (said on stderr)
  node   an integer >= 0 (the node's index) or a node name (numbered in order of appearance)
  event  add (the pod's CNI ADD: it needs an address) or del (its address is released);
         join (the node is launched then; a node without one is there from the start) or
         leave (the node is drained: its pods are evicted and, unless --drain count,
         rescheduled on the running node with the fewest pods; its instance is terminated
         30 s later and its ENIs deleted, freeing their subnet addresses)
  pod    a name, unique on its node while the pod lives; a del must follow its add.
         For join: the node's instance type (empty: --instance-type's); for leave: empty.
                          300,ip-10-0-9-9.ec2.internal,join,c5.2xlarge
                          1500,ip-10-0-9-9.ec2.internal,leave,
Without --nodes the cluster has as many nodes as the trace names.
Mixed instance types: --instance-type m5.xlarge:6,c5.2xlarge:4 gives nodes 0-5 (in the
order the trace names them) m5.xlarge and 6-9 c5.2xlarge; the last type may leave out its
count (the rest of the nodes); a join's type overrides it. Waits and idle address-hours are
then reported by type too.

--trace-from reads a cluster export instead (so you can replay your own cluster):
  kubectl-pods  kubectl get pods -A -o json > pods.json  (pods that exist now: start times,
                completion or deletion times, node names; host-network pods skipped)
  events        kubectl get events -A -o json  (Scheduled / Killing events of pods)
  audit         API-server audit log, JSON lines (pods/binding creates, pod deletes and
                completions; level Request or above)
  ipamctl import-trace --from KIND FILE writes the CSV trace it makes, to read or edit.
"""


class SimulateUsageError(Exception):
    """A bad argument: printed and exit code 2."""


def add_simulate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``simulate`` command to an ``add_subparsers()`` object; returns its parser."""
    sp: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="simulate a cluster of node agents on a fake EC2 (virtual time)",
        description="Run the IPAM core of N nodes against one simulated EC2 account (shared "
        "throttling buckets and subnets) through a pod workload, and report pod address "
        "waits, idle addresses, EC2 calls and throttling. Scenarios: "
        + "; ".join(f"{s.name} ({s.description})" for s in SCENARIOS.values()),
        epilog=TRACE_HELP + "\n" + IDLE_DEFINITION + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_arguments(sp)
    sp.add_argument(
        "--policy", choices=[p.value for p in PolicyName], default=PolicyName.UPSTREAM.value,
        help="warm-pool policy (default %(default)s)",
    )  # fmt: skip
    sp.add_argument(
        "--set", action="append", default=[], metavar="KNOB=VALUE", dest="knobs",
        help="a pool knob: " + ", ".join(KNOBS),
    )  # fmt: skip
    sp.add_argument("--json", action="store_true", dest="sim_json", help="print JSON")
    sp.add_argument("--plot", metavar="FILE.png", help="plot addresses and waits over time")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return sp


def add_source_arguments(sp: argparse.ArgumentParser) -> None:
    """The workload and cluster arguments ``simulate`` and ``recommend`` share."""
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--scenario", choices=sorted(SCENARIOS), help="a built-in workload")
    src.add_argument("--trace", metavar="FILE",
                     help="a CSV or JSON-lines trace of pod events (format below)")
    sp.add_argument("--trace-from", choices=SOURCES, metavar="KIND",
                    help="--trace is a cluster export: " + ", ".join(SOURCES) + " (below)")
    sp.add_argument("--nodes", type=int, help="nodes (default: the scenario's, or the trace's)")
    sp.add_argument("--instance-type", metavar="TYPE[:N,TYPE...]",
                    help="EC2 instance type (default: the scenario's), or a mix by node: "
                    "m5.xlarge:6,c5.2xlarge:4 (the last count may be left out: the rest)")
    sp.add_argument("--drain", choices=DRAINS, default="reschedule",
                    help="a leaving node's pods: rescheduled on other nodes, or only counted "
                    "(default %(default)s)")
    sp.add_argument("--duration", type=float, metavar="SECONDS", help="simulated seconds")
    sp.add_argument("--seed", type=int, default=0, help="workload and boot-order seed")
    sp.add_argument("--boot-spread", type=float, metavar="SECONDS",
                    help="nodes boot spread over this long (scenario default ~0.3 s a node)")
    sp.add_argument("--wait-threshold", type=float, default=5.0, metavar="SECONDS",
                    help="count pods that waited longer than this (default %(default)s)")
    sp.add_argument("--subnet-size", metavar="/N", default="/16",
                    help="each subnet's prefix length, /16 to /28 (default %(default)s): a "
                    "small one runs out, as real subnets do")
    sp.add_argument("--nodes-per-subnet", type=int, default=250, metavar="N",
                    help="nodes launched in each subnet (default %(default)s)")
    sp.add_argument("--metadata-lag", type=float, default=REALISTIC_METADATA_LAG_S,
                    metavar="SECONDS",
                    help="instance metadata shows a new ENI this long after its attach; the "
                    "node uses it only then (default %(default)s, as on EC2; "
                    "benchmarks/calibration.py)")
    sp.add_argument("--multi-nic-fraction", type=float, default=0.0, metavar="F",
                    help="this fraction of pods (drawn by seed) is annotated "
                    "k8s.amazonaws.com/nicConfig: multi-nic-attachment: one interface per "
                    "network card (needs --set ENABLE_MULTI_NIC=true and a type with several "
                    "cards, e.g. p5.48xlarge or trn1.32xlarge)")


def pool_config(policy: str, knobs: Sequence[str]) -> PoolConfig:
    """A PoolConfig from ``--policy`` and ``--set KNOB=VALUE`` items."""
    fields: dict[str, Any] = {"policy": PolicyName(policy)}
    seen: dict[str, str] = {}
    for item in knobs:
        name, sep, value = item.partition("=")
        name, value = KNOB_NAMES.get(name.strip().upper(), ""), value.strip()
        if not sep or not name:
            raise SimulateUsageError(
                f"--set {item!r}: expected KNOB=VALUE with KNOB one of {', '.join(KNOBS)}"
            )
        if name in seen:
            raise SimulateUsageError(
                f"{name} is given twice ({seen[name]} and {value}): give each knob once"
            )
        seen[name] = value
        field, kind = KNOBS[name]
        try:
            if kind is bool:
                if value.lower() not in TRUE + FALSE:
                    raise ValueError
                fields[field] = value.lower() in TRUE
            else:
                fields[field] = kind(value)
        except ValueError:
            raise SimulateUsageError(f"--set {name}: {value!r} is not a {kind.__name__}") from None
    try:
        return PoolConfig(**fields)
    except ConfigError as exc:
        raise SimulateUsageError(f"{exc.setting}: {exc.message}") from None


def knob_names(knobs: Sequence[str]) -> set[str]:
    """The knob names given in ``KNOB=VALUE`` items (upper case)."""
    return {item.partition("=")[0].strip().upper() for item in knobs}


def node_capacity(limits: InstanceLimits, pool: PoolConfig) -> int:
    """Pod addresses one node can hold under ``pool`` (MAX_ENI, prefix delegation)."""
    enis = min(limits.max_enis, pool.max_eni or limits.max_enis)
    if pool.prefix_delegation:
        return enis * limits.prefixes_per_eni * IPS_PER_PREFIX
    return enis * limits.ips_per_eni


def check_settings(
    pool: PoolConfig, given: set[str], limits: InstanceLimits, multi_nic_fraction: float = 0.0
) -> tuple[list[str], list[str]]:
    """(impossible, ignored): why a setting cannot work on this instance type, and which
    knobs given would have no effect. Both name the knob and the figure (IP families and
    network cards: :func:`adapters.ipamctl.families.check_families`)."""
    itype = limits.instance_type
    impossible, ignored = check_families(pool, given, limits, multi_nic_fraction)
    if pool.prefix_delegation and not limits.supports_prefix_delegation:
        impossible.append(
            f"ENABLE_PREFIX_DELEGATION=true: {itype} is not a Nitro instance type (hypervisor "
            f"{limits.hypervisor}); EC2 assigns /28 prefixes only to Nitro instances"
        )
    if pool.ipv6_only:  # the warm knobs are ignored (said above): no figure to check
        return impossible, ignored
    cap = node_capacity(limits, pool)
    enis = min(limits.max_enis, pool.max_eni or limits.max_enis)
    how = (f"{enis} ENIs x {limits.prefixes_per_eni} /28 prefixes x {IPS_PER_PREFIX}"
           if pool.prefix_delegation else f"{enis} ENIs x {limits.ips_per_eni}")  # fmt: skip
    for knob, value in (("WARM_IP_TARGET", pool.warm_ip_target),
                        ("MINIMUM_IP_TARGET", pool.minimum_ip_target)):  # fmt: skip
        if value > cap:
            impossible.append(
                f"{knob}={value}: a {itype} node holds at most {cap} pod addresses ({how}); "
                "the pool could never reach it"
            )
    if pool.prefix_delegation and pool.warm_prefix_target > enis * limits.prefixes_per_eni:
        impossible.append(
            f"WARM_PREFIX_TARGET={pool.warm_prefix_target}: a {itype} node holds at most "
            f"{enis * limits.prefixes_per_eni} prefixes"
        )
    adaptive = pool.policy is PolicyName.ADAPTIVE
    if adaptive:
        for knob in ("WARM_ENI_TARGET", "WARM_PREFIX_TARGET"):
            if knob in given:
                ignored.append(
                    f"{knob} is ignored by the adaptive policy (it sizes the pool from demand; "
                    "it reads WARM_IP_TARGET as a floor and MINIMUM_IP_TARGET)"
                )
    else:
        if "WARM_ENI_TARGET" in given and pool.warm_ip_targets_defined:
            ignored.append(
                "WARM_ENI_TARGET is ignored when WARM_IP_TARGET or MINIMUM_IP_TARGET is set "
                "(upstream's rule)"
            )
        if "WARM_ENI_TARGET" in given and pool.prefix_delegation:
            ignored.append("WARM_ENI_TARGET is ignored with prefix delegation (upstream's rule)")
        if "WARM_ENI_TARGET" in given and pool.warm_eni_target >= enis and not ignored:
            ignored.append(
                f"WARM_ENI_TARGET={pool.warm_eni_target}: a {itype} node has {enis} ENIs; "
                "every ENI is filled at boot, any value from "
                f"{max(enis - 1, 1)} up behaves the same"
            )
        if "WARM_PREFIX_TARGET" in given and not pool.prefix_delegation:
            ignored.append(
                "WARM_PREFIX_TARGET is ignored without ENABLE_PREFIX_DELEGATION=true"
            )
        elif "WARM_PREFIX_TARGET" in given and pool.warm_ip_targets_defined:
            ignored.append(
                "WARM_PREFIX_TARGET is ignored when WARM_IP_TARGET or MINIMUM_IP_TARGET is set "
                "(upstream's rule)"
            )
    return impossible, ignored


@attrs.frozen
class Setup:
    """What a run needs, from the command line: config, workload, and notes for stderr."""

    config: SimConfig
    events: list[PodEvent]
    source: str
    notes: tuple[str, ...] = ()
    trace: Trace | None = None


def load_workload_trace(args: argparse.Namespace) -> tuple[Trace, list[str]]:
    """The trace of ``--trace`` (or of a cluster export, ``--trace-from``) and notes."""
    notes: list[str] = []
    try:
        if getattr(args, "trace_from", None):
            imported = import_trace(args.trace, args.trace_from)
            trace = imported.trace
            notes.append(
                f"{args.trace}: {len(trace.events)} pod events on {trace.nodes} nodes from "
                f"{args.trace_from}" + ("; " + "; ".join(imported.notes()) if imported.skipped
                                         else "")
            )  # fmt: skip
        else:
            trace = read_trace(args.trace)
    except OSError as exc:
        raise SimulateUsageError(f"--trace: {exc}") from None
    except TraceError as exc:
        raise SimulateUsageError(str(exc)) from None
    if not trace.events:
        raise SimulateUsageError(f"{args.trace}: no pod events")
    if trace.rebased_by:
        first = datetime.datetime.fromtimestamp(trace.rebased_by + 30.0, tz=datetime.UTC)
        notes.append(
            f"{args.trace}: times are absolute (first event {first:%Y-%m-%d %H:%M:%S} UTC); "
            f"rebased so the first event comes at 30 s (simulated span "
            f"{max(e.time for e in trace.events):,.0f} s)"
        )
    return trace, notes


def build_setup(args: argparse.Namespace) -> Setup:
    """The run's SimConfig and workload from the parsed arguments (settings checked)."""
    pool = pool_config(args.policy, args.knobs)
    if args.nodes is not None and args.nodes < 1:
        raise SimulateUsageError("--nodes must be 1 or more")
    if args.duration is not None and args.duration <= 0:
        raise SimulateUsageError("--duration must be > 0")
    if getattr(args, "trace_from", None) and not args.trace:
        raise SimulateUsageError("--trace-from needs --trace FILE")
    notes: list[str] = []
    trace = None
    mix = parse_instance_types(args.instance_type) if args.instance_type else []
    counted = sum(n for _t, n in mix if n) if all(n for _t, n in mix) and mix else None
    if args.scenario:
        scenario = SCENARIOS[args.scenario]
        nodes = args.nodes or counted or scenario.nodes
        duration = args.duration or scenario.duration_s
        instance_type = mix[0][0] if mix else scenario.instance_type
        spread = scenario.boot_spread_s(nodes)
        events = scenario.events(nodes, duration, args.seed)
        source = f"scenario {args.scenario}"
    else:
        trace, notes = load_workload_trace(args)
        events = trace.events
        needed = max(trace.nodes, max((e.node for e in events), default=0) + 1)
        nodes = args.nodes or counted or needed
        if nodes < needed:
            raise SimulateUsageError(f"the trace uses {needed} nodes; --nodes is {nodes}")
        last = max((e.time for e in events), default=0.0)
        if last > EPOCH_THRESHOLD_S:
            raise SimulateUsageError(f"{args.trace}: the trace spans {last:,.0f} s")
        duration = args.duration or last + 60.0
        instance_type = mix[0][0] if mix else "m5.xlarge"
        spread = 0.0
        source = f"trace {Path(args.trace).name}"
    if args.boot_spread is not None:
        spread = args.boot_spread
    types = node_types(mix, nodes) if len(mix) > 1 or counted else ()
    joined = {e.pod for e in events if e.event == JOIN and e.pod}
    all_limits = [type_limits(t) for t in sorted({instance_type, *types, *joined})]
    subnet_len = parse_subnet_size(getattr(args, "subnet_size", "/16"))
    per_subnet = getattr(args, "nodes_per_subnet", 250)
    if per_subnet < 1:
        raise SimulateUsageError("--nodes-per-subnet must be 1 or more")
    if -(-nodes // per_subnet) > 256:
        raise SimulateUsageError(
            f"{nodes} nodes at {per_subnet} a subnet need more than the 256 subnets "
            "10.0.0.0/8 holds: raise --nodes-per-subnet"
        )
    lag = float(getattr(args, "metadata_lag", REALISTIC_METADATA_LAG_S))
    if not 0 <= lag <= 60:
        raise SimulateUsageError("--metadata-lag must be from 0 to 60 seconds")
    fraction = float(getattr(args, "multi_nic_fraction", 0.0) or 0.0)
    if not 0.0 <= fraction <= 1.0:
        raise SimulateUsageError("--multi-nic-fraction must be from 0 to 1")
    impossible, ignored = check_settings_all(pool, knob_names(args.knobs), all_limits, fraction)
    if impossible:
        raise SimulateUsageError("; ".join(impossible))
    notes.extend(f"warning: {w}" for w in ignored)
    config = SimConfig(
        nodes=nodes, duration_s=duration, instance_type=instance_type, pool=pool,
        seed=args.seed, boot_spread_s=spread, wait_threshold_s=args.wait_threshold,
        subnet_prefix_len=subnet_len, nodes_per_subnet=per_subnet,
        metadata_lag_s=lag, instance_types=types, drain=getattr(args, "drain", "reschedule"),
        multi_nic_fraction=fraction,
    )  # fmt: skip
    return Setup(config, events, source, tuple(notes), trace)


def type_counts(config: SimConfig) -> dict[str, int]:
    """Nodes by instance type (as configured; a join's own type is not counted here)."""
    types = config.instance_types or (config.instance_type,) * config.nodes
    return {t: types.count(t) for t in dict.fromkeys(types)}


def fleet_label(config: SimConfig, with_count: bool = True) -> str:
    """``10 x m5.xlarge`` or ``6 x m5.xlarge + 4 x c5.2xlarge`` (without counts when one type)."""
    counts = type_counts(config)
    if len(counts) == 1 and not with_count:
        return config.instance_type
    return " + ".join(f"{n} x {t}" for t, n in counts.items())


def parse_instance_types(text: str) -> list[tuple[str, int]]:
    """``m5.xlarge`` or ``m5.xlarge:6,c5.2xlarge:4`` (the last count may be left out: 0)."""
    out: list[tuple[str, int]] = []
    parts = [p.strip() for p in str(text).split(",")]
    for k, part in enumerate(parts):
        name, sep, count = part.partition(":")
        name = name.strip()
        if not name:
            raise SimulateUsageError(f"--instance-type {text!r}: an empty type")
        if sep and not (count.strip().isdigit() and int(count) > 0):
            raise SimulateUsageError(
                f"--instance-type {text!r}: {part!r}: the count must be a whole number >= 1"
            )
        if not sep and len(parts) > 1 and k < len(parts) - 1:
            raise SimulateUsageError(
                f"--instance-type {text!r}: {part!r} needs a count (TYPE:N); only the last "
                "type may leave it out (the rest of the nodes)"
            )
        if any(name == t for t, _n in out):
            raise SimulateUsageError(f"--instance-type {text!r}: {name} is given twice")
        out.append((name, int(count) if sep else 0))
    return out


def node_types(mix: Sequence[tuple[str, int]], nodes: int) -> tuple[str, ...]:
    """One type per node from a mix (node order); the counts must add up to ``nodes``."""
    counted = sum(n for _t, n in mix)
    rest = nodes - counted
    if rest < 0 or (rest and mix[-1][1]):
        raise SimulateUsageError(
            f"--instance-type counts add up to {counted} nodes; the cluster has {nodes}"
            + ("" if mix[-1][1] else " (the last type takes the rest)")
        )
    return tuple(t for t, n in mix for _ in range(n or rest))


def type_limits(instance_type: str) -> InstanceLimits:
    try:
        return limits_for(instance_type)
    except UnknownInstanceType:
        raise SimulateUsageError(f"unknown instance type {instance_type!r}") from None


def check_settings_all(
    pool: PoolConfig, given: set[str], all_limits: Sequence[InstanceLimits],
    multi_nic_fraction: float = 0.0,
) -> tuple[list[str], list[str]]:
    """:func:`check_settings` on every instance type of the cluster (messages once each)."""
    impossible: dict[str, None] = {}
    ignored: dict[str, None] = {}
    for limits in all_limits:
        bad, unused = check_settings(pool, given, limits, multi_nic_fraction)
        impossible.update(dict.fromkeys(bad))
        ignored.update(dict.fromkeys(unused))
    return list(impossible), list(ignored)


def parse_subnet_size(text: str) -> int:
    """``/24`` or ``24`` -> 24, from 16 to 28."""
    value = str(text).strip().lstrip("/")
    if not value.isdigit() or not 16 <= int(value) <= 28:
        raise SimulateUsageError(f"--subnet-size {text!r}: a prefix length from /16 to /28")
    return int(value)


def build_config(args: argparse.Namespace) -> tuple[SimConfig, list[PodEvent]]:
    """The run's SimConfig and workload (see :func:`build_setup`)."""
    setup = build_setup(args)
    return setup.config, setup.events


def check_plot_target(path: str) -> None:
    """Refuse ``--plot`` before a run that could not draw it: matplotlib missing, the
    directory missing or not writable, not a .png name."""
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise SimulateUsageError(f"--plot {path}: the picture is a PNG; name it FILE.png")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise SimulateUsageError(f"--plot {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise SimulateUsageError(f"--plot {path}: directory {parent} is not writable")
    if importlib.util.find_spec("matplotlib") is None:
        raise SimulateUsageError(
            "--plot needs matplotlib, which is not installed: pip install 'ipamcore[plot]' "
            "(or pip install matplotlib), or leave --plot out"
        )


class ProgressBar:
    """A plain-text bar on a stream, redrawn in place with ``\\r`` at most every
    ``every_s`` of wall time (and at the end), whatever the simulated span."""

    STEPS = 1000  # the run calls the bar this often; it draws by wall time

    def __init__(self, stream: TextIO, width: int = 30, every_s: float = 0.5,
                 wall: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        self.stream = stream
        self.width = width
        self.every_s = every_s
        self.wall = wall
        self.began = wall()
        self.drawn = 0.0

    def __call__(self, done_s: float, total_s: float, cluster: Cluster | None) -> None:
        frac = min(done_s / total_s, 1.0) if total_s else 1.0
        wall = self.wall() - self.began
        if frac < 1.0 and wall - self.drawn < self.every_s:
            return
        self.drawn = wall
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        eta = f", ~{wall / frac - wall:.0f} s left" if 0.02 <= frac < 1.0 else ""
        self.stream.write(
            f"\r[{bar}] {frac:4.0%} {done_s:,.0f}/{total_s:,.0f} s simulated, "
            f"{wall:.1f} s wall{eta}   "
        )
        if frac >= 1.0:
            self.stream.write("\n")
        self.stream.flush()


def plot(measures: Measures, path: str, title: str,
         events: Sequence[PodEvent] = ()) -> None:  # fmt: skip
    """The run's picture (:func:`adapters.ipamctl.simplots.plot_simulation`)."""
    from adapters.ipamctl.simplots import plot_simulation

    plot_simulation(measures, path, title, events)


def pool_doc(pool: PoolConfig) -> dict[str, Any]:
    """The pool settings as JSON-able values (the adaptive policy's tuning only with it)."""
    doc: dict[str, Any] = {}
    for key, value in attrs.asdict(pool, recurse=False).items():
        if key == "placement" or (key == "adaptive" and pool.policy is not PolicyName.ADAPTIVE):
            continue
        if attrs.has(type(value)):
            value = attrs.asdict(value)
        doc[key] = value.value if isinstance(value, PolicyName) else value
    return doc


def draw_safely(draw: Callable[[], None], path: str, command: str) -> bool:
    """Draw a picture; on failure say why on stderr (no traceback), False."""
    try:
        draw()
    except Exception as exc:  # a picture must never cost the run's figures
        sys.stderr.write(f"ipamctl {command}: --plot {path} failed: {exc}\n")
        return False
    return True


def run_simulate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``ipamctl simulate``; measures as a table (or JSON) on ``out``."""
    stream = out if out is not None else sys.stdout
    try:
        setup = build_setup(args)
        if args.plot:
            check_plot_target(args.plot)
    except SimulateUsageError as exc:
        sys.stderr.write(f"ipamctl simulate: {exc}\n")
        return 2
    for note in setup.notes:
        sys.stderr.write(f"ipamctl simulate: {note}\n")
    config = setup.config
    progress = None if args.no_progress else ProgressBar(sys.stderr)
    measures = Cluster(config, setup.events).run(progress, steps=ProgressBar.STEPS)
    source = setup.source
    code = 0
    if args.sim_json or getattr(args, "json", False):
        doc = {
            "source": source,
            "instance_type": config.instance_type,
            "instance_types": type_counts(config),
            "seed": config.seed,
            "pool": pool_doc(config.pool),
            "measures": measures.to_dict(),
            "notes": list(setup.notes),
            "definitions": {"idle_address_hours": IDLE_DEFINITION},
        }  # fmt: skip
        if setup.trace is not None and setup.trace.rebased_by:
            doc["trace_rebased_by_s"] = setup.trace.rebased_by
        stream.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        rows = [("source", source), ("instance type", fleet_label(config, with_count=False)),
                ("policy", config.pool.policy.value), *measures.rows()]  # fmt: skip
        width = max(len(k) for k, _ in rows)
        stream.write(f"{'MEASURE'.ljust(width)}  VALUE\n")
        for key, value in rows:
            stream.write(f"{key.ljust(width)}  {value}\n")
        stream.write(f"\n{IDLE_DEFINITION}.\n")
    stream.flush()
    if args.plot:
        knobs = "".join(f", {k.strip()}" for k in args.knobs)
        if config.multi_nic_fraction:
            knobs += f", {config.multi_nic_fraction:.0%} of pods multi-NIC"
        title = f"{source}, {fleet_label(config)}, policy {config.pool.policy.value}{knobs}"
        draw = lambda: plot(measures, args.plot, title, setup.events)  # noqa: E731
        if not draw_safely(draw, args.plot, "simulate"):
            code = 1
    return code


def add_import_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``ipamctl import-trace --from KIND FILE``: a cluster export as a CSV trace."""
    sp: argparse.ArgumentParser = subparsers.add_parser(
        "import-trace",
        help="turn kubectl pods / events / an audit log into a trace for simulate and recommend",
        description="Read a cluster export and print the CSV trace it makes (pod arrivals and "
        "departures by node name; absolute times rebased), to replay with "
        "`ipamctl simulate --trace FILE` or `ipamctl recommend --trace FILE`.",
        epilog=TRACE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument("--from", dest="kind", choices=SOURCES, required=True, help="export kind")
    sp.add_argument("file", metavar="FILE", help="the export (JSON, a List, or JSON lines)")
    sp.add_argument("-o", "--output", metavar="OUT.csv", help="write here instead of stdout")
    return sp


def run_import(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    try:
        imported = import_trace(args.file, args.kind)
    except OSError as exc:
        sys.stderr.write(f"ipamctl import-trace: {exc}\n")
        return 2
    except TraceError as exc:
        sys.stderr.write(f"ipamctl import-trace: {exc}\n")
        return 2
    trace = imported.trace
    text = to_csv(trace)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        stream.write(text)
    adds = sum(1 for e in trace.events if e.event == "add")
    sys.stderr.write(f"ipamctl import-trace: {adds} pods, {len(trace.events)} events on "
                     f"{trace.nodes} nodes" + "".join(f"; {n}" for n in imported.notes())
                     + "\n")  # fmt: skip
    return 0 if trace.events else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m adapters.ipamctl.simulate simulate ...``)."""
    parser = argparse.ArgumentParser(prog="ipamctl")
    add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    return run_simulate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
