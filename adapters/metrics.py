"""Prometheus metrics of the node agent, with upstream's names, in a registry of its own.

Each daemon gets its own :class:`prometheus_client.CollectorRegistry` (never the global one),
so several daemons run side by side in one test process.

Counters keep upstream's exact sample names (``awscni_add_ip_req_count``, not
``..._total``): prometheus_client appends ``_total`` to everything typed *counter*, which
would break upstream's dashboards and alerts, so they are exposed as monotonic gauges
(``rate()`` works the same). Pool gauges are read from the core at scrape time; upstream's
(``awscni_eni_max``, ``awscni_ip_max``, ``awscni_eni_allocated``, ``awscni_total_ip_addresses``,
``awscni_assigned_ip_addresses``, ``awscni_total_ipv4_prefixes``) carry a ``network_card``
label (``"0"``: the node's pool; each card above 0 with ENABLE_MULTI_NIC). EC2 call
figures come from :class:`backends.observe.CallRecord` (``observe_call`` is a CallObserver;
it is called from worker threads, and prometheus_client's metrics are thread-safe).

What an operator alerts on (issue 13; ``deploy/monitoring/`` has the rules and a dashboard),
computed at scrape time from the pool's views by :mod:`ipamcore.economy` once
:meth:`Metrics.bind_node` is called (labels added to upstream's names where they exist):

* ``awscni_assigned_ip_per_eni{eni,subnet,network_card}`` (upstream's, ``subnet`` and
  ``network_card`` added), ``awscni_assigned_ip_per_cidr{cidr}`` (upstream's),
  ``awscni_ip_addresses{subnet,eni,state,network_card}`` with state assigned / available /
  cooling / leaving (total = the sum),
  ``awscni_available_ip_addresses`` and ``awscni_cooling_ip_addresses`` (the node);
* ``awscni_subnet_available_ip_addresses{subnet,cidr,az}`` (EC2's AvailableIpAddressCount),
  ``awscni_subnet_usable_ip_addresses``, ``awscni_subnet_free_prefixes_at_most``,
  ``awscni_subnet_node_ip_addresses`` (this node's ENIs there) and
  ``awscni_subnet_described_timestamp_seconds``: from ``DescribeSubnets``, one call for all
  the node's subnets, made only when someone scrapes or asks and the figure is older than
  :data:`SUBNET_REFRESH_S` (10 min, minus up to 10 % jitter; see :class:`SubnetWatch`);
* ``awscni_pods_waiting_for_ip`` (ADDs waiting for an address now) and the histogram
  ``awscni_ip_wait_seconds`` (how long each waited);
* ``awscni_ec2api_req_count{fn}`` / ``awscni_ec2api_error_count{fn}`` (upstream's) and
  ``awscni_aws_api_error_count{api,error}`` (upstream's: throttles are
  ``error="RequestLimitExceeded"``);
* ``awscni_ipv4_prefixes_by_use{subnet,use}`` (empty / sparse: at most 4 of 16 in use /
  partial / full) and ``awscni_ipv4_prefixes_freeable_by_repacking{subnet}``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge, Histogram, Summary, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from backends.observe import OK, CallRecord
from ipamcore import economy
from ipamcore.ipv6 import V6Stats
from ipamcore.model import Subnet
from ipamcore.views import EniView, PoolStats

ADD_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
IP_WAIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
# DescribeSubnets at most this often per node (only while someone scrapes). EC2 meters each
# action per account in a token bucket of its own; a non-mutating action's holds 100 tokens
# refilled at 20 a second: a 1,000-node cluster asking every 600 s spends 1.7 tokens a second
# of DescribeSubnets' bucket, under a tenth of its refill, and nothing of the buckets of the
# calls pods wait on. Above about 2,000 nodes, raise it (nodes / 2 seconds keeps it at a
# twentieth).
SUBNET_REFRESH_S = 600.0
SUBNET_JITTER = 0.1

UPSTREAM_NAMES = (
    "awscni_eni_max",
    "awscni_ip_max",
    "awscni_eni_allocated",
    "awscni_total_ip_addresses",
    "awscni_assigned_ip_addresses",
    "awscni_total_ipv4_prefixes",
    "awscni_add_ip_req_count",
    "awscni_del_ip_req_count",
    "awscni_aws_api_latency_ms",
    "awscni_ec2api_req_count",
    "awscni_ec2api_error_count",
    "awscni_no_available_ip_addresses",
    "awscni_reconcile_count",
    "awscni_force_removed_enis",
    "awscni_force_removed_ips",
    "awscni_ipamd_startup_duration_seconds",
    "awscni_aws_api_error_count",
    "awscni_assigned_ip_per_eni",
    "awscni_assigned_ip_per_cidr",
)
ECONOMY_NAMES = (
    "awscni_ip_addresses",
    "awscni_available_ip_addresses",
    "awscni_cooling_ip_addresses",
    "awscni_pods_waiting_for_ip",
    "awscni_ip_wait_seconds",
    "awscni_subnet_available_ip_addresses",
    "awscni_subnet_usable_ip_addresses",
    "awscni_subnet_free_prefixes_at_most",
    "awscni_subnet_node_ip_addresses",
    "awscni_subnet_described_timestamp_seconds",
    "awscni_ipv4_prefixes_by_use",
    "awscni_ipv4_prefixes_freeable_by_repacking",
)


class SubnetDescriber(Protocol):
    """The part of a cloud port :class:`SubnetWatch` uses."""

    def describe_subnets(self, subnet_ids: Sequence[str] = (), tag_key: str = "") -> list[Subnet]:
        ...


class SubnetWatch:
    """EC2's free-address count of the node's subnets, asked with one ``DescribeSubnets``
    for all of them, at most every ``interval_s`` (minus up to 10 % jitter, so the nodes
    of a cluster spread out) and only when someone looks (:meth:`current`, from a scrape or
    introspection): a daemon nobody scrapes makes no call. The call runs in a thread of its
    own (``spawn``), never in the caller's; a failure is kept (:attr:`error`) and retried at
    the next interval."""

    def __init__(
        self,
        describe: Callable[[Sequence[str], str], list[Subnet]],
        subnet_ids: Callable[[], list[str]],
        interval_s: float = SUBNET_REFRESH_S,
        clock: Callable[[], float] = time.time,
        spawn: Callable[[Callable[[], None]], None] | None = None,
        jitter: float | None = None,
    ) -> None:
        self.describe = describe
        self.subnet_ids = subnet_ids
        self.interval_s = interval_s * (1 - SUBNET_JITTER * (random.random() if jitter is None
                                                             else jitter))  # fmt: skip
        self.clock = clock
        self.spawn = spawn or _thread
        self.subnets: list[Subnet] = []
        self.described_at: dict[str, float] = {}
        self.asked_at: float | None = None
        self.error = ""
        self.calls = 0
        self._lock = threading.Lock()
        self._busy = False

    def current(self) -> tuple[list[Subnet], dict[str, float]]:
        """The last description (maybe none yet); starts a refresh when it is stale. The
        node's subnet ids are read here, in the caller's thread (the pool's views are the
        event loop's); only the EC2 call runs in the refresh thread."""
        now = self.clock()
        with self._lock:
            stale = self.asked_at is None or now - self.asked_at >= self.interval_s
            start = stale and not self._busy and self.interval_s > 0
            if start:
                self._busy = True
                self.asked_at = now
            subnets, when = list(self.subnets), dict(self.described_at)
        if start:
            try:
                ids = sorted(set(self.subnet_ids()))
            except Exception:
                with self._lock:
                    self._busy = False
                raise
            self.spawn(lambda: self._refresh(ids))
        return subnets, when

    def _refresh(self, ids: list[str]) -> None:
        try:
            if not ids:
                return
            self.calls += 1
            subnets = self.describe(ids, "")
            now = self.clock()
            with self._lock:
                self.subnets = subnets
                self.described_at = {s.subnet_id: now for s in subnets}
                self.error = ""
        except Exception as exc:  # kept for /v1/subnets; retried after the interval
            with self._lock:
                self.error = str(exc)
        finally:
            with self._lock:
                self._busy = False


def _thread(fn: Callable[[], None]) -> None:
    threading.Thread(target=fn, name="describe-subnets", daemon=True).start()


class EconomyCollector(Collector):
    """The labelled address, subnet and prefix families, computed at each scrape from the
    pool's views (one ``eni_views()`` a scrape)."""

    def __init__(self, views: Callable[[], list[EniView]], watch: SubnetWatch | None) -> None:
        self.views = views
        self.watch = watch

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; no fixed descriptions

    def collect(self) -> Iterator[Metric]:
        views = self.views()
        counts = economy.eni_counts(views)
        card_of = {v.eni_id: str(v.network_card) for v in views}
        per_eni = GaugeMetricFamily("awscni_assigned_ip_per_eni",
                                    "The number of allocated ips partitioned by eni",
                                    labels=["eni", "subnet", "network_card"])  # fmt: skip
        states = GaugeMetricFamily("awscni_ip_addresses",
                                   "Pod addresses held, by subnet, ENI and state "
                                   "(assigned, available, cooling, leaving)",
                                   labels=["subnet", "eni", "state", "network_card"])  # fmt: skip
        for c in counts:
            card = card_of.get(c.eni_id, "0")
            per_eni.add_metric([c.eni_id, c.subnet_id, card], c.assigned)
            for state, n in c.by_state().items():
                states.add_metric([c.subnet_id, c.eni_id, state, card], n)
        per_cidr = GaugeMetricFamily("awscni_assigned_ip_per_cidr",
                                     "The total number of IP addresses assigned per cidr",
                                     labels=["cidr"])  # fmt: skip
        for v in views:
            if v.excluded or v.unmanaged:
                continue
            for b in v.blocks:
                cidr = b.block_id if "/" in b.block_id else f"{b.block_id}/32"
                per_cidr.add_metric([cidr], sum(1 for a in b.addresses if a.state == "assigned"))
        yield per_eni
        yield per_cidr
        yield states
        yield GaugeMetricFamily("awscni_available_ip_addresses",
                                "Pod addresses ready for the next pod (cooling excluded)",
                                value=sum(c.available for c in counts))  # fmt: skip
        yield GaugeMetricFamily("awscni_cooling_ip_addresses",
                                "Pod addresses released less than IP_COOLDOWN_PERIOD ago",
                                value=sum(c.cooling for c in counts))  # fmt: skip
        by_use = GaugeMetricFamily("awscni_ipv4_prefixes_by_use",
                                   "IPv4 /28 prefixes by use: empty, sparse (at most 4 of 16 "
                                   "addresses assigned), partial, full", labels=["subnet", "use"])
        freeable = GaugeMetricFamily("awscni_ipv4_prefixes_freeable_by_repacking",
                                     "Prefixes that moving pods off the least used ones would "
                                     "empty (beyond the empty ones)", labels=["subnet"])
        for f in economy.fragmentation(views):
            for use, n in f.by_use.items():
                by_use.add_metric([f.subnet_id, use], n)
            freeable.add_metric([f.subnet_id], f.freeable)
        yield by_use
        yield freeable
        if self.watch is None:
            return
        subnets, when = self.watch.current()
        fams = {
            "available": GaugeMetricFamily(
                "awscni_subnet_available_ip_addresses",
                "Free addresses in the subnet (EC2 DescribeSubnets AvailableIpAddressCount)",
                labels=["subnet", "cidr", "az"]),
            "usable": GaugeMetricFamily(
                "awscni_subnet_usable_ip_addresses",
                "Addresses EC2 can hand out in the subnet (its size minus 5 reserved)",
                labels=["subnet", "cidr", "az"]),
            "prefixes": GaugeMetricFamily(
                "awscni_subnet_free_prefixes_at_most",
                "Free /28 blocks the subnet could still have (an upper bound: EC2 gives a "
                "count, not the layout)", labels=["subnet", "cidr", "az"]),
            "node": GaugeMetricFamily(
                "awscni_subnet_node_ip_addresses",
                "Subnet addresses this node's ENIs take (pod addresses and ENI primaries)",
                labels=["subnet", "cidr", "az"]),
            "when": GaugeMetricFamily(
                "awscni_subnet_described_timestamp_seconds",
                "When EC2 last described the subnet (Unix time)",
                labels=["subnet", "cidr", "az"]),
        }  # fmt: skip
        for u in economy.subnet_uses(subnets, views, when):
            if u.described_at is None:
                continue
            labels = [u.subnet_id, u.cidr, u.availability_zone]
            fams["available"].add_metric(labels, u.available)
            fams["usable"].add_metric(labels, u.usable)
            fams["prefixes"].add_metric(labels, u.free_prefixes_at_most)
            fams["node"].add_metric(labels, u.node_taken)
            fams["when"].add_metric(labels, u.described_at)
        yield from fams.values()


POOL_GAUGES = (  # upstream's names, each with a network_card label added
    ("awscni_eni_max", "Maximum ENIs attachable", "max_enis"),
    ("awscni_ip_max", "Maximum IP addresses assignable", "max_addresses"),
    ("awscni_eni_allocated", "ENIs in the pool", "enis"),
    ("awscni_total_ip_addresses", "IP addresses in the pool", "total"),
    ("awscni_assigned_ip_addresses", "IP addresses assigned to pods", "assigned"),
    ("awscni_total_ipv4_prefixes", "IPv4 /28 prefixes in the pool", "prefixes"),
)


class PoolCollector(Collector):
    """Upstream's pool gauges, one series per network card (``network_card="0"`` is the
    node's pool; cards above 0 appear with ENABLE_MULTI_NIC), read at each scrape."""

    def __init__(
        self,
        stats: Callable[[], PoolStats],
        card_stats: Callable[[], dict[int, PoolStats]] | None = None,
    ) -> None:
        self.stats = stats
        self.card_stats = card_stats

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time

    def collect(self) -> Iterator[Metric]:
        by_card = {0: self.stats(), **(self.card_stats() if self.card_stats else {})}
        for name, text, field in POOL_GAUGES:
            family = GaugeMetricFamily(name, text, labels=["network_card"])
            for card, stats in sorted(by_card.items()):
                family.add_metric([str(card)], getattr(stats, field))
            yield family


class Metrics:
    """The daemon's metrics; call :meth:`bind_pool` once the core exists."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._pool: PoolCollector | None = None  # awscni_eni_max ... awscni_total_ipv4_prefixes
        self.ipv6_prefixes = Gauge(
            "ipamcore_ipv6_prefixes", "IPv6 /80 prefixes delegated to the node's ENIs",
            registry=r,
        )  # fmt: skip
        self.ipv6_assigned = Gauge(
            "ipamcore_ipv6_assigned_addresses", "IPv6 addresses assigned to pods", registry=r
        )
        self.add_req = Gauge("awscni_add_ip_req_count", "ADD requests (counter)", registry=r)
        self.del_req = Gauge(
            "awscni_del_ip_req_count", "DEL requests (counter)", ["reason"], registry=r
        )
        self.api_latency = Summary(
            "awscni_aws_api_latency_ms", "AWS API call latency in ms",
            ["api", "error", "status"], registry=r,
        )  # fmt: skip
        self.ec2_req = Gauge(
            "awscni_ec2api_req_count", "EC2 API requests (counter)", ["fn"], registry=r
        )
        self.ec2_err = Gauge(
            "awscni_ec2api_error_count", "EC2 API errors (counter)", ["fn"], registry=r
        )
        self.no_ip = Gauge(
            "awscni_no_available_ip_addresses",
            "ADDs that found no available address (counter)", registry=r,
        )  # fmt: skip
        self.reconcile = Gauge(
            "awscni_reconcile_count", "Reconciliations (counter)", ["fn"], registry=r
        )
        self.force_removed_enis = Gauge(
            "awscni_force_removed_enis", "ENIs removed behind our back (counter)", registry=r
        )
        self.force_removed_ips = Gauge(
            "awscni_force_removed_ips", "Assigned IPs removed behind our back (counter)",
            registry=r,
        )  # fmt: skip
        self.startup_duration = Gauge(
            "awscni_ipamd_startup_duration_seconds", "Time from start to ready", registry=r
        )
        self.add_latency = Histogram(
            "awscni_ipamd_add_latency_seconds", "ADD latency through the socket",
            ["outcome"], buckets=ADD_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.aws_api_err = Gauge(
            "awscni_aws_api_error_count", "The number of times AWS API returns an error "
            "(counter; throttles: error=RequestLimitExceeded)", ["api", "error"], registry=r,
        )  # fmt: skip
        self.pods_waiting = Gauge(
            "awscni_pods_waiting_for_ip", "ADDs waiting for an address now", registry=r
        )
        self.ip_wait = Histogram(
            "awscni_ip_wait_seconds", "How long ADDs that found no address waited for one "
            "(served or timed out)", buckets=IP_WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.subnets: SubnetWatch | None = None
        self.views: Callable[[], list[EniView]] | None = None
        self._economy: EconomyCollector | None = None

    def bind_pool(
        self,
        stats: Callable[[], PoolStats],
        card_stats: Callable[[], dict[int, PoolStats]] | None = None,
    ) -> None:
        """Upstream's pool gauges read ``stats()`` (card 0) and ``card_stats()`` (each card
        above 0 carrying multi-NIC pods) at each scrape, one series per ``network_card``.
        Binding again (a restart in the same process) replaces the sources."""
        if self._pool is None:
            self._pool = PoolCollector(stats, card_stats)
            self.registry.register(self._pool)
        else:
            self._pool.stats, self._pool.card_stats = stats, card_stats

    def bind_ipv6(self, stats: Callable[[], V6Stats]) -> None:
        """IPv6 gauges (this project's; upstream has none) read ``stats()`` at each scrape."""
        self.ipv6_prefixes.set_function(lambda: stats().prefixes)
        self.ipv6_assigned.set_function(lambda: stats().assigned)

    def bind_node(
        self,
        views: Callable[[], list[EniView]],
        waiting: Callable[[], int],
        cloud: SubnetDescriber | None = None,
        watch: SubnetWatch | None = None,
    ) -> None:
        """Address, subnet and prefix families from ``views()`` at each scrape, pods waiting
        from ``waiting()``; with a ``cloud`` port (its ``describe_subnets``) or a ``watch``,
        the subnets' free addresses (:class:`SubnetWatch`). Binding again (a restart in the
        same process) replaces the sources."""
        self.views = views
        self.pods_waiting.set_function(lambda: float(waiting()))
        if watch is None and cloud is not None:
            watch = SubnetWatch(cloud.describe_subnets,
                                lambda: [v.subnet_id for v in views() if v.subnet_id])
        self.subnets = watch
        if self._economy is None:
            self._economy = EconomyCollector(views, watch)
            self.registry.register(self._economy)
        else:
            self._economy.views, self._economy.watch = views, watch

    def observe_call(self, record: CallRecord) -> None:
        """A CallObserver: one EC2 call's action, latency and outcome."""
        failed = record.outcome != OK
        self.ec2_req.labels(record.action).inc()
        if failed:
            self.ec2_err.labels(record.action).inc()
            self.aws_api_err.labels(record.action, record.code or record.outcome).inc()
        self.api_latency.labels(
            record.action, str(failed).lower(), record.code or record.outcome
        ).observe(record.latency_s * 1000.0)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
