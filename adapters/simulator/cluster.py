"""Many simulated nodes sharing one :class:`FakeCloud` (one account: shared throttling buckets
and shared subnets), a workload, and the run loop.

    cluster = Cluster(SimConfig(nodes=10, duration_s=3600), events)
    measures = cluster.run()

Nodes may join late and leave (``join`` / ``leave`` events of the workload): a joining
node's instance is launched then (its type from the event, else ``instance_types``, else
``instance_type``), and its agent boots; a leaving node is drained (its pods get their DELs
and, with ``drain="reschedule"``, come back ``reschedule_delay_s`` later on the running node
with the fewest pods, among those not due to leave if there are any: the autoscaler cordons
the nodes it removes) and its instance is terminated ``terminate_after_s`` later, which
deletes its ENIs (they are DeleteOnTermination) and so frees their subnet addresses.

Everything is driven by one :class:`SimClock`, which the fake cloud follows (``clock=``).
Nothing reads the real clock or an unseeded random source, so the same config, workload and
seed give the same measures, byte for byte.
"""

from __future__ import annotations

import ipaddress
import math
import random
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from adapters.simulator.clock import Callback, SimClock
from adapters.simulator.measures import Measures, Recorder, Sample, summarize, type_measures
from adapters.simulator.node import SimNode
from adapters.simulator.workload import ADD, DEL, JOIN, LEAVE, PodEvent, check_node_events
from backends.fakecloud import DEFAULT_START, FakeCloud
from backends.fakecloud.vpc import FAKE_VPC_IPV6_CIDR
from backends.observe import CallCounter
from ipamcore.config import PoolConfig
from ipamcore.limits import limits_for
from ipamcore.pool import AddressPool

# Virtual latency of each EC2 action (seconds), roughly what EC2 answers in; only reported by
# the fake, the simulator schedules each outcome that much later.
DEFAULT_LATENCIES: tuple[tuple[str, float], ...] = (
    ("AssignIpv6Addresses", 0.3),
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
DRAINS = ("reschedule", "count")


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)
  # a leaving node's pods: moved to other nodes, or only counted


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
    nodes_per_subnet: int = 250  # each subnet a /subnet_prefix_len of 10.0.0.0/8
    subnet_prefix_len: int = attrs.field(default=16, validator=attrs.validators.in_(range(16, 29)))
    start: float = DEFAULT_START
    # per node (index order), overriding instance_type; empty: every node instance_type
    instance_types: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    drain: str = attrs.field(default="reschedule", validator=attrs.validators.in_(DRAINS))
    reschedule_delay_s: float = 5.0  # an evicted pod's replacement reaches its new node
    terminate_after_s: float = 30.0  # a leaving node's instance goes this long after its drain
    # each EC2 call takes effect when its latency has passed (as against the daemon's fake),
    # not the moment it is issued: a describe cannot see an ENI still being created, and the
    # metadata lag runs from the attach
    calls_take_effect_late: bool = True
    # pods annotated k8s.amazonaws.com/nicConfig: multi-nic-attachment (one interface per
    # network card, with ENABLE_MULTI_NIC): each pod is drawn with this chance (seeded)
    multi_nic_fraction: float = attrs.field(default=0.0, converter=float)
    # an ADD answered with an error (a multi-NIC pod with a card not ready) is sent again this
    # long after, as kubelet's pod worker retries a failed sandbox (its 10 s back-off)
    kubelet_retry_s: float = 10.0

    def __attrs_post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if self.instance_types and len(self.instance_types) != self.nodes:
            raise ValueError(
                f"instance_types names {len(self.instance_types)} nodes; the cluster has "
                f"{self.nodes}"
            )
        if self.duration_s <= 0:
            raise ValueError("duration must be > 0")
        if math.ceil(self.nodes / self.nodes_per_subnet) > 256:
            raise ValueError("too many subnets for 10.0.0.0/8: raise nodes_per_subnet")
        if not 0.0 <= self.multi_nic_fraction <= 1.0:
            raise ValueError("multi_nic_fraction must be from 0 to 1")
        if self.kubelet_retry_s <= 0:
            raise ValueError("kubelet_retry_s must be > 0")


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
        size = config.subnet_prefix_len
        # With IPv6 each subnet gets the next /64 of the fake VPC's /56 (256 of them: as many
        # as the IPv4 /16s of 10.0.0.0/8), as an IPv6 cluster's subnets have one each.
        self.subnets = [
            cloud.add_subnet(f"10.{i}.0.0/{size}", ipv6_cidr=subnet_ipv6_cidr(i) if
                             config.pool.ipv6 else "")
            for i in range(n_subnets)
        ]  # fmt: skip
        self._subnet_capacity = {s: cloud.free_addresses(s) for s in self.subnets}
        for e in events:
            if e.node >= config.nodes:
                raise ValueError(f"workload names node {e.node}; the cluster has {config.nodes}")
        if any(e.event == JOIN or e.event == LEAVE for e in events):
            check_node_events(sorted(enumerate(events, start=1), key=lambda le: le[1].time))
        self.types = node_types_of(config, events)
        joins = {e.node: e.time for e in events if e.event == JOIN}
        leaves = {e.node: e.time for e in events if e.event == LEAVE}
        for itype in sorted(set(self.types)):
            limits_for(itype)  # an unknown type fails here, before the run
        self.mixed = len(set(self.types)) > 1
        self.nodes: list[SimNode] = []
        for i in range(config.nodes):
            iid = None if i in joins else self._launch(i)
            node = SimNode(i, cloud, iid, clock, config.pool, rec, config.policy_interval_s,
                           config.reconcile_interval_s, config.leaked_eni_cleanup,
                           config.calls_take_effect_late)  # fmt: skip
            node.multi_nic = self._multi_nic_draw(i)
            node.retry_s = config.kubelet_retry_s
            if self.mixed:
                node.type_waits = []
            self.nodes.append(node)
        # Capacity taken by the primary addresses at launch counts as used from the start.
        order = [i for i in range(config.nodes) if i not in joins]
        random.Random(f"boot/{config.seed}").shuffle(order)
        spread = config.boot_spread_s
        boots: list[tuple[float, Callback, Any]] = [
            (config.start + spread * rank / config.nodes, self.nodes[i].boot, None)
            for rank, i in enumerate(order)
        ]
        start = config.start
        boots += [(start + t, self._join, i) for i, t in joins.items()]
        boots += [(start + t, self._leave, i) for i, t in leaves.items()]
        self._leaves_at = leaves
        pods: list[tuple[float, Callback, Any]] = [
            (start + e.time, (n.pod_add if e.event == ADD else n.pod_del), e.pod)
            for e in events
            if e.event == ADD or e.event == DEL
            for n in (self.nodes[e.node],)
        ]
        clock.extend(boots + pods)
        clock.at(start, self._sample)
        self._idle_by_type: dict[str, float] = dict.fromkeys(self.types, 0.0)

    def _multi_nic_draw(self, index: int) -> Callable[[str], bool] | None:
        """Whether a pod of node ``index`` is annotated for a multi-NIC attachment: drawn
        from a hash of the seed, the node and the pod's name (so a pod rescheduled elsewhere
        is drawn again, and the same run gives the same pods)."""
        fraction = self.config.multi_nic_fraction
        if fraction <= 0.0:
            return None
        seed = self.config.seed

        def draw(name: str) -> bool:
            return zlib.crc32(f"{seed}/{index}/{name}".encode()) < fraction * 2**32

        return draw

    # ------------------------------------------------------------------ joining, leaving
    def _launch(self, index: int) -> str:
        subnet = self.subnets[index % len(self.subnets)]
        return self.cloud.launch_instance(self.types[index], subnet)

    def _join(self, index: int) -> None:
        """A node joins: its instance is launched and its agent boots."""
        node = self.nodes[index]
        node.launch(self._launch(index))
        self.recorder.nodes_joined += 1
        node.boot()

    def _leave(self, index: int) -> None:
        """A node leaves: drained now (pods rescheduled or counted), terminated later."""
        node = self.nodes[index]
        rec, cfg = self.recorder, self.config
        if not node.launched or node.leaving:
            return
        names = node.drain()
        rec.pods_drained += len(names)
        if cfg.drain == "reschedule":
            when = self.clock.now + cfg.reschedule_delay_s
            self.clock.extend((when, self._reschedule, (name, index)) for name in names)
        self.clock.at(self.clock.now + cfg.terminate_after_s, self._terminate, index)

    def _reschedule(self, arg: tuple[str, int]) -> None:
        """An evicted pod's replacement, on the running node with the fewest pods."""
        name, origin = arg
        running = [n for n in self.nodes if n.launched and not n.leaving]
        if not running:
            self.recorder.pods_not_rescheduled += 1
            return
        later = self._leaves_at  # nodes due to leave are cordoned: the pods go elsewhere first
        target = min(running, key=lambda n: (n.index in later, n.load, n.index))
        self.recorder.pods_rescheduled += 1
        target.pod_add(f"{name}~{origin}")

    def _terminate(self, index: int) -> None:
        node = self.nodes[index]
        self.recorder.enis_terminated += len(self.cloud.enis_of(node.instance_id))
        self.cloud.terminate_instance(node.instance_id)
        node.stop()
        self.recorder.nodes_left += 1

    # ------------------------------------------------------------------ sampling
    def _sample(self, _arg: object) -> None:
        now = self.clock.now
        held = assigned = available = cooling = waiting = 0
        running = v6_assigned = v6_prefixes = 0
        mixed = self.mixed
        cards: dict[int, list[int]] | None = {} if self.config.pool.multi_nic else None
        for node in self.nodes:
            if node.gone or not node.launched:
                continue
            running += 1
            waiting += len(node.waiting)
            if node.ipam is None:  # not booted yet
                continue
            ipam = node.ipam
            if ipam.v6 is not None:
                v6 = ipam.v6_stats()
                v6_assigned += v6.assigned
                v6_prefixes += v6.prefixes
            # With ENABLE_MULTI_NIC the addresses of every card count (card 0 otherwise).
            pools = [ipam.pool]
            if cards is not None:
                card_figures(ipam.pool, ipam.card_pools, cards, now)
                pools += ipam.card_pools.values()
                if ipam.v6 is not None and ipam.config.ipv6_only:  # each card's /80
                    for card, sums in cards.items():
                        sums[3] += ipam.v6.stats(card).assigned
            node_held = node_assigned = 0
            for pool in pools:
                pool.advance(now)
                node_held += pool.total - pool.leaving
                node_assigned += pool.assigned
                available += pool.total - pool.leaving - pool.assigned - pool.cooling
                cooling += pool.cooling
            held += node_held
            assigned += node_assigned
            if mixed:
                self._idle_by_type[node.instance_type] += max(node_held - node_assigned, 0)
        used = 0
        for subnet in self.subnets:
            taken = self._subnet_capacity[subnet] - self.cloud.free_addresses(subnet)
            used += taken
            fraction = taken / self._subnet_capacity[subnet]
            if fraction > self._subnet_peak_fraction:
                self._subnet_peak_fraction = fraction
        self.recorder.samples.append(
            Sample(round(now - self.config.start, 6), held, assigned, available, cooling,
                   waiting, used, running, v6_assigned, v6_prefixes)
        )  # fmt: skip
        if cards is not None:
            self.recorder.card_sample(cards)
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
        still = [now - since for n in self.nodes if not n.gone for since in n.waiting.values()]
        measures = summarize(
            self.recorder, self.calls, nodes=cfg.nodes, duration_s=cfg.duration_s,
            still_waiting=still, threshold_s=cfg.wait_threshold_s,
            sample_interval_s=cfg.sample_interval_s,
            subnet_peak_fraction=self._subnet_peak_fraction,
            families=families_of(cfg.pool), multi_nic_fraction=cfg.multi_nic_fraction,
            ipv6_calls=(
                max((n.mutating["AssignIpv6Addresses"] for n in self.nodes), default=0),
                sum(n.mutating_after_v6 for n in self.nodes),
            ),
        )  # fmt: skip
        if self.mixed:
            measures = attrs.evolve(measures, by_type=self._by_type(now))
        return measures

    def _by_type(self, now: float) -> dict[str, dict[str, float]]:
        """Per instance type: nodes, waits, pods over the threshold, idle address-hours."""
        cfg = self.config
        out: dict[str, dict[str, float]] = {}
        for itype in sorted(set(self.types)):
            nodes = [n for n in self.nodes if self.types[n.index] == itype]
            still = [now - t for n in nodes if not n.gone for t in n.waiting.values()]
            waits = sorted([w for n in nodes for w in n.type_waits or ()] + still)
            out[itype] = type_measures(len(nodes), waits, len(still), cfg.wait_threshold_s,
                                       self._idle_by_type[itype] * cfg.sample_interval_s)
        return out


def families_of(pool: PoolConfig) -> str:
    """``ipv4``, ``ipv6`` (single stack) or ``dual``."""
    return "dual" if pool.dual_stack else "ipv6" if pool.ipv6_only else "ipv4"


def card_figures(
    card0: AddressPool, others: dict[int, AddressPool], out: dict[int, list[int]], now: float
) -> None:
    """Add one node's figures per network card to ``out`` (card -> [ENIs, the busiest
    node's ENIs, addresses held, assigned])."""
    for card, pool in ((0, card0), *sorted(others.items())):
        pool.advance(now)
        enis = len(pool.enis)
        sums = out.setdefault(card, [0, 0, 0, 0])
        sums[0] += enis
        sums[1] = max(sums[1], enis)
        sums[2] += pool.total - pool.leaving
        sums[3] += pool.assigned


def subnet_ipv6_cidr(index: int) -> str:
    """The ``index``-th /64 of the fake VPC's IPv6 /56."""
    vpc = ipaddress.IPv6Network(FAKE_VPC_IPV6_CIDR)
    return str(ipaddress.IPv6Network((int(vpc.network_address) + (index << 64), 64)))


def node_types_of(config: SimConfig, events: Sequence[PodEvent]) -> list[str]:
    """Each node's instance type: its join's, else ``instance_types``', else the cluster's."""
    types = list(config.instance_types or [config.instance_type] * config.nodes)
    for e in events:
        if e.event == JOIN and e.pod and e.node < len(types):
            types[e.node] = e.pod
    return types


def simulate(
    config: SimConfig, events: Sequence[PodEvent], progress: Progress | None = None
) -> Measures:
    """Build a cluster and run it."""
    return Cluster(config, events).run(progress)
