"""Many simulated nodes sharing one :class:`FakeCloud` (one account: shared throttling buckets
and shared subnets), a workload, and the run loop.

    cluster = Cluster(SimConfig(nodes=10, duration_s=3600), events)
    measures = cluster.run()

Everything is driven by one :class:`SimClock`, which the fake cloud follows (``clock=``).
Nothing reads the real clock or an unseeded random source, so the same config, workload and
seed give the same measures, byte for byte.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from adapters.simulator.clock import Callback, SimClock
from adapters.simulator.measures import Measures, Recorder, Sample, summarize
from adapters.simulator.node import SimNode
from adapters.simulator.workload import ADD, PodEvent
from backends.fakecloud import DEFAULT_START, FakeCloud
from backends.observe import CallCounter
from ipamcore.config import PoolConfig
from ipamcore.limits import limits_for

# Virtual latency of each EC2 action (seconds), roughly what EC2 answers in; only reported by
# the fake, the simulator schedules each outcome that much later.
DEFAULT_LATENCIES: tuple[tuple[str, float], ...] = (
    ("AssignPrivateIpAddresses", 0.3),
    ("AttachNetworkInterface", 0.6),
    ("CreateNetworkInterface", 0.4),
    ("DeleteNetworkInterface", 0.3),
    ("DescribeInstances", 0.15),
    ("DescribeNetworkInterfaces", 0.15),
    ("DetachNetworkInterface", 0.6),
    ("ModifyNetworkInterfaceAttribute", 0.15),
    ("UnassignPrivateIpAddresses", 0.2),
)

Progress = Callable[[float, float, "Cluster"], None]


@attrs.frozen
class SimConfig:
    """One run's set-up. ``boot_spread_s``: nodes boot evenly spread over it from t=0."""

    nodes: int
    duration_s: float = attrs.field(converter=float)
    instance_type: str = "m5.xlarge"
    pool: PoolConfig = attrs.field(factory=PoolConfig)
    seed: int = 0
    boot_spread_s: float = 0.0
    policy_interval_s: float = 5.0
    reconcile_interval_s: float = 60.0
    sample_interval_s: float = 10.0
    wait_threshold_s: float = 5.0
    throttling: bool = True
    metadata_lag_s: float = 0.0
    leaked_eni_cleanup: bool = True  # the daemon's default: a sweep at boot, then hourly
    latencies: tuple[tuple[str, float], ...] = DEFAULT_LATENCIES
    nodes_per_subnet: int = 250  # each subnet a /16 of 10.0.0.0/8
    start: float = DEFAULT_START

    def __attrs_post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if self.duration_s <= 0:
            raise ValueError("duration must be > 0")
        if math.ceil(self.nodes / self.nodes_per_subnet) > 256:
            raise ValueError("too many subnets for 10.0.0.0/8: raise nodes_per_subnet")


class Cluster:
    """The fake account, its subnets and instances, one :class:`SimNode` per instance."""

    def __init__(self, config: SimConfig, events: Sequence[PodEvent]) -> None:
        self.config = config
        self.clock = clock = SimClock(config.start)
        self.calls = CallCounter()
        self.recorder = rec = Recorder()
        rec.start = config.start
        self.cloud = cloud = FakeCloud(
            vpc_cidrs=("10.0.0.0/8",), start=config.start, clock=clock,
            throttling=config.throttling, metadata_lag=config.metadata_lag_s,
            observer=self.calls,
        )  # fmt: skip
        for action, seconds in config.latencies:
            cloud.set_latency(action, seconds)
        n_subnets = math.ceil(config.nodes / config.nodes_per_subnet)
        self.subnets = [cloud.add_subnet(f"10.{i}.0.0/16") for i in range(n_subnets)]
        self._subnet_capacity = {s: cloud.free_addresses(s) for s in self.subnets}
        limits_for(config.instance_type)  # an unknown type fails here, before the run
        self.nodes: list[SimNode] = []
        for i in range(config.nodes):
            iid = cloud.launch_instance(config.instance_type, self.subnets[i % n_subnets])
            self.nodes.append(
                SimNode(i, cloud, iid, clock, config.pool, rec, config.policy_interval_s,
                        config.reconcile_interval_s, config.leaked_eni_cleanup)
            )  # fmt: skip
        # Capacity taken by the primary addresses at launch counts as used from the start.
        order = list(range(config.nodes))
        random.Random(f"boot/{config.seed}").shuffle(order)
        spread = config.boot_spread_s
        boots: list[tuple[float, Callback, Any]] = [
            (config.start + spread * rank / config.nodes, self.nodes[i].boot, None)
            for rank, i in enumerate(order)
        ]
        for e in events:
            if e.node >= config.nodes:
                raise ValueError(f"workload names node {e.node}; the cluster has {config.nodes}")
        start = config.start
        pods: list[tuple[float, Callback, Any]] = [
            (start + e.time, (n.pod_add if e.event == ADD else n.pod_del), e.pod)
            for e in events
            for n in (self.nodes[e.node],)
        ]
        clock.extend(boots + pods)
        clock.at(start, self._sample)

    # ------------------------------------------------------------------ sampling
    def _sample(self, _arg: object) -> None:
        now = self.clock.now
        held = assigned = available = cooling = waiting = 0
        for node in self.nodes:
            waiting += len(node.waiting)
            if node.ipam is None:  # not booted yet
                continue
            pool = node.ipam.pool
            pool.advance(now)
            held += pool.total - pool.leaving
            assigned += pool.assigned
            available += pool.total - pool.leaving - pool.assigned - pool.cooling
            cooling += pool.cooling
        used = 0
        for subnet in self.subnets:
            taken = self._subnet_capacity[subnet] - self.cloud.free_addresses(subnet)
            used += taken
            fraction = taken / self._subnet_capacity[subnet]
            if fraction > self._subnet_peak_fraction:
                self._subnet_peak_fraction = fraction
        self.recorder.samples.append(
            Sample(round(now - self.config.start, 6), held, assigned, available, cooling,
                   waiting, used)
        )  # fmt: skip
        self.clock.at(now + self.config.sample_interval_s, self._sample)

    _subnet_peak_fraction = 0.0

    # ------------------------------------------------------------------ run
    def run(self, progress: Progress | None = None, steps: int = 100) -> Measures:
        """Run to the end; ``progress(done_s, total_s, cluster)`` is called ``steps`` times."""
        cfg = self.config
        end = cfg.start + cfg.duration_s
        for k in range(1, steps + 1):
            self.clock.run_until(cfg.start + cfg.duration_s * k / steps if k < steps else end)
            if progress is not None:
                progress(self.clock.now - cfg.start, cfg.duration_s, self)
        now = self.clock.now
        still = [now - since for n in self.nodes for since in n.waiting.values()]
        return summarize(
            self.recorder, self.calls, nodes=cfg.nodes, duration_s=cfg.duration_s,
            still_waiting=still, threshold_s=cfg.wait_threshold_s,
            sample_interval_s=cfg.sample_interval_s,
            subnet_peak_fraction=self._subnet_peak_fraction,
        )  # fmt: skip


def simulate(
    config: SimConfig, events: Sequence[PodEvent], progress: Progress | None = None
) -> Measures:
    """Build a cluster and run it."""
    return Cluster(config, events).run(progress)
