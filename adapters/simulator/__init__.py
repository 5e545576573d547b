"""A discrete-event simulator of a cluster of VPC CNI node agents on the fake cloud.

Each node runs the real core (:class:`ipamcore.ipam.Ipam`: plan / apply / reconcile) against
a shared :class:`backends.fakecloud.FakeCloud` in virtual time. Modules: :mod:`.clock` (event
queue), :mod:`.workload` (traces and scenarios), :mod:`.node` (one agent), :mod:`.cluster`
(many nodes, one account), :mod:`.measures` (what a run reports).
"""

from adapters.simulator.cluster import DEFAULT_LATENCIES, Cluster, SimConfig, simulate
from adapters.simulator.measures import Measures, Sample
from adapters.simulator.workload import (
    SCENARIOS,
    PodEvent,
    Scenario,
    TraceError,
    load_trace,
    parse_trace,
)

__all__ = [
    "DEFAULT_LATENCIES",
    "SCENARIOS",
    "Cluster",
    "Measures",
    "PodEvent",
    "Sample",
    "Scenario",
    "SimConfig",
    "TraceError",
    "load_trace",
    "parse_trace",
    "simulate",
]
