"""Assign+release pairs per second through Ipam at pool sizes 16, 1,024 and 65,536 addresses.

The pool is kept half assigned; every pair releases the oldest pod's address and assigns a new
pod, and the virtual clock advances so that about a quarter of the pool is always cooling: both
heaps (ready and cooling) are exercised. Median of several runs per size, by the wall clock
(the issue's figures) and by this process's CPU time (``cpu_*``: steadier on a shared machine,
where other processes take the CPU away mid-run).
Target on this machine: >= 200,000 pairs/s at 16 addresses, ratio 65,536 vs 16 >= 0.8.
Last line: one JSON object.
"""

from __future__ import annotations

import collections
import gc
import json
import statistics
import sys
import time

from ipamcore.config import PoolConfig
from ipamcore.ipam import Ipam
from ipamcore.limits import InstanceLimits
from ipamcore.model import AllocationKey, ObservedEni, PodRef

COOLDOWN = 30.0


def build(size: int) -> Ipam:
    prefixes = size // 16
    enis = max(1, prefixes // 256)
    per_eni = prefixes // enis
    limits = InstanceLimits("bench.node", max_enis=enis, ipv4_per_eni=per_eni + 1)
    ipam = Ipam(PoolConfig(prefix_delegation=True, cooldown_s=COOLDOWN), limits)
    observed = []
    for e in range(enis):
        observed.append(
            ObservedEni(
                eni_id=f"eni-{e}", mac=f"02:00:00:00:{e // 256:02x}:{e % 256:02x}",
                device_index=e, subnet_id="subnet-bench", subnet_cidr="10.0.0.0/8",
                primary_ip=f"10.255.{e // 256}.{e % 256}", is_primary=e == 0,
                ipv4_prefixes=tuple(
                    f"10.{(e * per_eni + p) // 4096}.{((e * per_eni + p) // 16) % 256}."
                    f"{((e * per_eni + p) % 16) * 16}/28"
                    for p in range(per_eni)
                ),
            )
        )
    ipam.load(observed, 0.0)
    assert ipam.stats(0.0).total == size, ipam.stats(0.0)
    return ipam


def run(size: int, pairs: int) -> tuple[float, float]:
    """(pairs per wall second, pairs per CPU second)."""
    ipam = build(size)
    live: collections.deque[AllocationKey] = collections.deque()
    now = 0.0
    for n in range(size // 2):
        key = AllocationKey("aws-cni", f"w{n}", "eth0")
        ipam.assign(key, PodRef("bench", f"w{n}"), now)
        live.append(key)
    dt = COOLDOWN / max(size // 4, 1)
    work = [
        (AllocationKey("aws-cni", f"c{i}", "eth0"), PodRef("bench", f"c{i}"))
        for i in range(pairs)
    ]
    assign, release = ipam.assign, ipam.release
    # Collect the setup's garbage now: otherwise the first collections inside the timed loop
    # traverse the hundreds of thousands of objects just made for it (the work list, the pool),
    # a one-off cost of setup, not of the pairs. Collections the pairs cause are still timed.
    gc.collect()
    start, cpu_start = time.perf_counter(), time.process_time()
    for key, pod in work:
        now += dt
        release(live.popleft(), now)
        assign(key, pod, now)
        live.append(key)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return pairs / elapsed, pairs / cpu


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    repeats = 5
    result: dict[str, float] = {}
    for size in (16, 1024, 65536):
        runs = [run(size, pairs) for _ in range(repeats)]
        rates, cpu_rates = [r[0] for r in runs], [r[1] for r in runs]
        rate, cpu_rate = statistics.median(rates), statistics.median(cpu_rates)
        result[f"pairs_per_s_{size}"] = round(rate)
        result[f"cpu_pairs_per_s_{size}"] = round(cpu_rate)
        print(f"size {size:>6}: median {rate:,.0f} pairs/s over {repeats} runs "
              f"(min {min(rates):,.0f}, max {max(rates):,.0f}); "
              f"by CPU time {cpu_rate:,.0f}", file=sys.stderr)
    result["ratio_65536_vs_16"] = round(result["pairs_per_s_65536"] / result["pairs_per_s_16"], 3)
    result["cpu_ratio_65536_vs_16"] = round(
        result["cpu_pairs_per_s_65536"] / result["cpu_pairs_per_s_16"], 3
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
