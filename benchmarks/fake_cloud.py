"""How many CloudPort calls per second the fake cloud serves (target: 20,000).

The workload is the hot path of a simulated cluster: assign one secondary address and
unassign it again, on a node whose port has an observer (a CallCounter), with throttling on
and the virtual clock advanced enough between cycles that the buckets never run dry. Each
run times ``CYCLES`` cycles (2 calls each); the figure is the median of ``RUNS`` runs.
A second figure covers /28 prefix cycles. The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from backends.fakecloud import FakeCloud
from backends.observe import CallCounter
from ipamcore.effects import CreateEni
from ipamcore.limits import InstanceLimits

TARGET = 20_000
CYCLES = 20_000
RUNS = 5


def one_run(prefixes: bool, cycles: int) -> float:
    """Calls per second of ``cycles`` assign+unassign cycles on a fresh cloud."""
    cloud = FakeCloud()
    cloud.add_instance_type(InstanceLimits("bench.large", max_enis=4, ipv4_per_eni=50))
    subnet = cloud.add_subnet("10.0.0.0/16", "us-west-2a")
    iid = cloud.launch_instance("bench.large", subnet)
    port = cloud.port(iid, observer=CallCounter())
    eni = port.create_eni(iid, CreateEni(0, subnet, (), ipv4_count=10)).eni_id
    assign = port.assign_prefixes if prefixes else port.assign_ipv4
    unassign = port.unassign_prefixes if prefixes else port.unassign_ipv4
    advance = cloud.advance
    start = time.perf_counter()
    for _ in range(cycles):
        got = assign(eni, 1)
        unassign(eni, got)
        advance(0.25)  # 5 tokens/s refill: one call per bucket per 0.2 s stays under it
    elapsed = time.perf_counter() - start
    return 2 * cycles / elapsed


def main(argv: list[str]) -> int:
    cycles = int(argv[1]) if len(argv) > 1 else CYCLES
    ips = [one_run(False, cycles) for _ in range(RUNS)]
    pfx = [one_run(True, cycles) for _ in range(RUNS)]
    for name, runs in (("ipv4", ips), ("prefix", pfx)):
        print(f"{name}: " + ", ".join(f"{r:,.0f}" for r in runs) + " calls/s")
    result = {
        "calls_per_s": round(statistics.median(ips)),
        "prefix_calls_per_s": round(statistics.median(pfx)),
        "target": TARGET,
        "runs": RUNS,
        "cycles_per_run": cycles,
    }
    print(json.dumps(result))
    return 0 if result["calls_per_s"] >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
