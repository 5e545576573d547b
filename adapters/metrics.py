"""Prometheus metrics of the node agent, with upstream's names, in a registry of its own.

Each daemon gets its own :class:`prometheus_client.CollectorRegistry` (never the global one),
so several daemons run side by side in one test process.

Counters keep upstream's exact sample names (``awscni_add_ip_req_count``, not
``..._total``): prometheus_client appends ``_total`` to everything typed *counter*, which
would break upstream's dashboards and alerts, so they are exposed as monotonic gauges
(``rate()`` works the same). Pool gauges are read from the core at scrape time. EC2 call
figures come from :class:`backends.observe.CallRecord` (``observe_call`` is a CallObserver;
it is called from worker threads, and prometheus_client's metrics are thread-safe).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram, Summary, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from backends.observe import OK, CallRecord
from ipamcore.views import PoolStats

ADD_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

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
)


class Metrics:
    """The daemon's metrics; call :meth:`bind_pool` once the core exists."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.eni_max = Gauge("awscni_eni_max", "Maximum ENIs attachable", registry=r)
        self.ip_max = Gauge("awscni_ip_max", "Maximum IP addresses assignable", registry=r)
        self.eni_allocated = Gauge("awscni_eni_allocated", "ENIs in the pool", registry=r)
        self.total_ips = Gauge(
            "awscni_total_ip_addresses", "IP addresses in the pool", registry=r
        )
        self.assigned_ips = Gauge(
            "awscni_assigned_ip_addresses", "IP addresses assigned to pods", registry=r
        )
        self.total_prefixes = Gauge(
            "awscni_total_ipv4_prefixes", "IPv4 /28 prefixes in the pool", registry=r
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

    def bind_pool(self, stats: Callable[[], PoolStats]) -> None:
        """Pool gauges read ``stats()`` at each scrape."""
        self.eni_max.set_function(lambda: stats().max_enis)
        self.ip_max.set_function(lambda: stats().max_addresses)
        self.eni_allocated.set_function(lambda: stats().enis)
        self.total_ips.set_function(lambda: stats().total)
        self.assigned_ips.set_function(lambda: stats().assigned)
        self.total_prefixes.set_function(lambda: stats().prefixes)

    def observe_call(self, record: CallRecord) -> None:
        """A CallObserver: one EC2 call's action, latency and outcome."""
        failed = record.outcome != OK
        self.ec2_req.labels(record.action).inc()
        if failed:
            self.ec2_err.labels(record.action).inc()
        self.api_latency.labels(
            record.action, str(failed).lower(), record.code or record.outcome
        ).observe(record.latency_s * 1000.0)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
