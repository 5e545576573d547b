"""The simulator's speed: 1,000 nodes, one simulated hour of steady churn (target < 60 s).

Every node runs the real core (plan every 5 s and when kicked, effects on the shared fake
cloud, reconciliation every 60 s). Prints a human summary, then ONE JSON object on the last
line: wall seconds, simulated pod events per second of wall time, events run by the queue,
and the headline measures. ``python benchmarks/simulate.py [NODES] [SECONDS] [FAMILY]``;
FAMILY ``ipv4`` (the default), ``ipv6`` (single stack: one /80 a node, no warm pool) or
``dual`` (both families a pod).
"""

from __future__ import annotations

import json
import sys
import time

from adapters.simulator import SCENARIOS, Cluster, SimConfig
from ipamcore.config import PoolConfig

TARGET_S = 60.0
FAMILIES = {
    "ipv4": PoolConfig(),
    "ipv6": PoolConfig(ipv6=True, ipv4=False, prefix_delegation=True),
    "dual": PoolConfig(ipv6=True, ipv4=True),
}


def main(argv: list[str]) -> int:
    nodes = int(argv[1]) if len(argv) > 1 else 1000
    duration = float(argv[2]) if len(argv) > 2 else 3600.0
    family = argv[3] if len(argv) > 3 else "ipv4"
    if family not in FAMILIES:
        print(f"FAMILY must be one of {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    scenario = SCENARIOS["steady"]
    began = time.perf_counter()
    events = scenario.events(nodes, duration, 0)
    config = SimConfig(
        nodes=nodes, duration_s=duration, instance_type=scenario.instance_type,
        boot_spread_s=scenario.boot_spread_s(nodes), pool=FAMILIES[family],
    )  # fmt: skip
    cluster = Cluster(config, events)
    setup = time.perf_counter() - began
    measures = cluster.run()
    wall = time.perf_counter() - began
    for key, value in measures.rows():
        print(f"{key}: {value}")
    result = {
        "benchmark": "simulate steady churn",
        "nodes": nodes,
        "family": family,
        "simulated_s": duration,
        "wall_s": round(wall, 2),
        "setup_s": round(setup, 2),
        "pod_events": measures.pod_events,
        "pod_events_per_s": round(measures.pod_events / wall),
        "queue_events": cluster.clock.events_run,
        "wait_p99_s": measures.wait_p99_s,
        "throttled_calls": measures.throttled_total,
        "target_wall_s": TARGET_S,
    }
    print(json.dumps(result))
    return 0 if wall < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
