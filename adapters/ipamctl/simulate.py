"""``ipamctl simulate``: run the node agent's core on a simulated cluster (fake cloud, virtual
time) and report pod address waits, idle addresses, EC2 calls and throttling.

Wire it into ``ipamctl`` (``adapters/ipamctl/main.py``)::

    from adapters.ipamctl.simulate import add_simulate_parser, run_simulate
    ...
    add_simulate_parser(sub)                      # in build_parser(), after the others
    COMMANDS["simulate"] = lambda args, out: run_simulate(args, out)

``--json`` works before or after ``simulate``. Exit codes: 0 ok, 2 bad arguments or trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import attrs

from adapters.simulator import SCENARIOS, Cluster, Measures, SimConfig, TraceError, load_trace
from adapters.simulator.workload import PodEvent
from ipamcore.config import PolicyName, PoolConfig
from ipamcore.errors import ConfigError, UnknownInstanceType
from ipamcore.limits import limits_for

KNOBS: dict[str, tuple[str, type]] = {
    "WARM_ENI_TARGET": ("warm_eni_target", int),
    "WARM_IP_TARGET": ("warm_ip_target", int),
    "MINIMUM_IP_TARGET": ("minimum_ip_target", int),
    "WARM_PREFIX_TARGET": ("warm_prefix_target", int),
    "ENABLE_PREFIX_DELEGATION": ("prefix_delegation", bool),
    "IP_COOLDOWN_PERIOD": ("cooldown_s", float),
}
TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")


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
    src.add_argument("--trace", metavar="FILE", help="a CSV or JSON-lines trace of pod events")
    sp.add_argument("--nodes", type=int, help="nodes (default: the scenario's, or the trace's)")
    sp.add_argument("--instance-type", help="EC2 instance type (default: the scenario's)")
    sp.add_argument("--duration", type=float, metavar="SECONDS", help="simulated seconds")
    sp.add_argument("--seed", type=int, default=0, help="workload and boot-order seed")
    sp.add_argument("--boot-spread", type=float, metavar="SECONDS",
                    help="nodes boot spread over this long (scenario default ~0.3 s a node)")
    sp.add_argument("--wait-threshold", type=float, default=5.0, metavar="SECONDS",
                    help="count pods that waited longer than this (default %(default)s)")


def pool_config(policy: str, knobs: Sequence[str]) -> PoolConfig:
    """A PoolConfig from ``--policy`` and ``--set KNOB=VALUE`` items."""
    fields: dict[str, Any] = {"policy": PolicyName(policy)}
    for item in knobs:
        name, sep, value = item.partition("=")
        name, value = name.strip().upper(), value.strip()
        if not sep or name not in KNOBS:
            raise SimulateUsageError(
                f"--set {item!r}: expected KNOB=VALUE with KNOB one of {', '.join(KNOBS)}"
            )
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


def build_config(args: argparse.Namespace) -> tuple[SimConfig, list[PodEvent]]:
    """The run's SimConfig and workload from the parsed arguments."""
    pool = pool_config(args.policy, args.knobs)
    if args.nodes is not None and args.nodes < 1:
        raise SimulateUsageError("--nodes must be 1 or more")
    if args.duration is not None and args.duration <= 0:
        raise SimulateUsageError("--duration must be > 0")
    if args.scenario:
        scenario = SCENARIOS[args.scenario]
        nodes = args.nodes or scenario.nodes
        duration = args.duration or scenario.duration_s
        instance_type = args.instance_type or scenario.instance_type
        spread = scenario.boot_spread_s(nodes)
        events = scenario.events(nodes, duration, args.seed)
    else:
        try:
            events = load_trace(args.trace)
        except OSError as exc:
            raise SimulateUsageError(f"--trace: {exc}") from None
        except TraceError as exc:
            raise SimulateUsageError(str(exc)) from None
        needed = max((e.node for e in events), default=0) + 1
        nodes = args.nodes or needed
        if nodes < needed:
            raise SimulateUsageError(f"the trace uses {needed} nodes; --nodes is {nodes}")
        last = max((e.time for e in events), default=0.0)
        duration = args.duration or last + 60.0
        instance_type = args.instance_type or "m5.xlarge"
        spread = 0.0
    if args.boot_spread is not None:
        spread = args.boot_spread
    try:
        limits_for(instance_type)
    except UnknownInstanceType:
        raise SimulateUsageError(f"unknown instance type {instance_type!r}") from None
    config = SimConfig(
        nodes=nodes, duration_s=duration, instance_type=instance_type, pool=pool,
        seed=args.seed, boot_spread_s=spread, wait_threshold_s=args.wait_threshold,
    )  # fmt: skip
    return config, events


class ProgressBar:
    """A plain-text bar on a stream, redrawn in place with ``\\r``."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.began = time.perf_counter()

    def __call__(self, done_s: float, total_s: float, cluster: Cluster) -> None:
        frac = min(done_s / total_s, 1.0) if total_s else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        wall = time.perf_counter() - self.began
        self.stream.write(
            f"\r[{bar}] {frac:4.0%} {done_s:,.0f}/{total_s:,.0f} s simulated, {wall:.1f} s wall"
        )
        if frac >= 1.0:
            self.stream.write("\n")
        self.stream.flush()


def plot(measures: Measures, path: str, title: str) -> None:
    """Addresses held / assigned / available over time, and each pod's wait (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    t = [s.t for s in measures.samples]
    top.plot(t, [s.held for s in measures.samples], label="held")
    top.plot(t, [s.assigned for s in measures.samples], label="assigned")
    top.plot(t, [s.available for s in measures.samples], label="available")
    top.plot(t, [s.cooling for s in measures.samples], label="cooling", linestyle=":")
    top.set_ylabel("addresses (cluster)")
    top.legend(loc="upper left")
    top.set_title(title)
    waits = [(a, w) for a, w in measures.waits if w > 0]
    bottom.scatter([a for a, _ in waits], [w for _, w in waits], s=4, label="pods that waited")
    bottom.axhline(measures.wait_threshold_s, color="red", linewidth=0.8, label="threshold")
    bottom.set_xlabel("simulated seconds")
    bottom.set_ylabel("address wait (s)")
    bottom.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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


def run_simulate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``ipamctl simulate``; measures as a table (or JSON) on ``out``."""
    stream = out if out is not None else sys.stdout
    try:
        config, events = build_config(args)
    except SimulateUsageError as exc:
        sys.stderr.write(f"ipamctl simulate: {exc}\n")
        return 2
    progress = None if args.no_progress else ProgressBar(sys.stderr)
    measures = Cluster(config, events).run(progress)
    source = f"scenario {args.scenario}" if args.scenario else f"trace {args.trace}"
    if args.plot:
        plot(measures, args.plot, f"{source}, {config.nodes} x {config.instance_type}, "
             f"policy {config.pool.policy.value}")  # fmt: skip
    if args.sim_json or getattr(args, "json", False):
        doc = {
            "source": source,
            "instance_type": config.instance_type,
            "seed": config.seed,
            "pool": pool_doc(config.pool),
            "measures": measures.to_dict(),
        }  # fmt: skip
        stream.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return 0
    rows = [("source", source), ("instance type", config.instance_type),
            ("policy", config.pool.policy.value), *measures.rows()]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    stream.write(f"{'MEASURE'.ljust(width)}  VALUE\n")
    for key, value in rows:
        stream.write(f"{key.ljust(width)}  {value}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m adapters.ipamctl.simulate simulate ...``)."""
    parser = argparse.ArgumentParser(prog="ipamctl")
    add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    return run_simulate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
