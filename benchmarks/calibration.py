"""How close the simulator is to the daemon: the same burst of pods on an empty node, run by
the real daemon against the fake cloud with realistic latencies (``benchmarks/burst.py``'s
run: a subprocess, real time, every EC2 call taking its time, instance metadata lagging
1.5 s) and predicted by the simulator with the same latencies and metadata lag, side by side.

    python benchmarks/calibration.py [--pods 30,100] [--runs 3]

Compared: seconds from the first ADD to the last address (the simulator: the longest wait,
every pod arriving at once the moment the node is ready, as the daemon's burst is sent when
it reports ready), the median ADD, and the EC2
mutating calls by action. What this does NOT calibrate: the built-in scenarios as a whole
(hours of workload; the daemon runs in real time), throttling across many nodes, socket,
datapath and checkpoint time (the simulator counts them as zero). The last line of output
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter

import burst  # the sibling script (benchmarks/ is on sys.path when run as a script)

from adapters.simulator import Cluster, PodEvent, SimConfig
from backends.fakecloud.latency import REALISTIC_LATENCIES, REALISTIC_METADATA_LAG_S
from backends.observe import MUTATING_ACTIONS, CallRecord

POLICIES = ("upstream", "upstream-faithful")


def ready_at(config: SimConfig) -> float:
    """Seconds from the simulated node's boot to its Ready (its start-up reads done): the
    daemon's burst is sent when it reports ready, so the simulated one is too."""
    from ipamcore.node import commands as c

    cluster = Cluster(config, [])
    seen: list[float] = []
    node = cluster.nodes[0]
    node.observe = lambda _inp, cmds: seen.extend(
        cluster.clock.now - config.start for cmd in cmds if isinstance(cmd, c.Ready)
    )
    cluster.run()
    return seen[0] if seen else 0.0


def simulated(pods: int, policy: str) -> dict[str, object]:
    from ipamcore.config import PolicyName, PoolConfig

    config = SimConfig(
        nodes=1, duration_s=60.0, instance_type=burst.INSTANCE_TYPE,
        pool=PoolConfig(policy=PolicyName(policy)), throttling=False,
        latencies=tuple(REALISTIC_LATENCIES.items()), metadata_lag_s=REALISTIC_METADATA_LAG_S,
    )  # fmt: skip
    ready = ready_at(config)
    events = [PodEvent(ready + 0.001 + i * 1e-6, 0, "add", f"pod-{i}") for i in range(pods)]
    cluster = Cluster(config, events)
    records: list[CallRecord] = []
    cluster.cloud.observers.append(records.append)
    m = cluster.run()
    by_action = Counter(r.action for r in records if r.action in MUTATING_ACTIONS)
    return {
        "seconds": round(m.wait_max_s, 3), "add_p50_s": round(m.wait_p50_s, 3),
        "mutating": sum(by_action.values()), "by_action": dict(sorted(by_action.items())),
        "unserved": m.pods_unserved,
    }


def measured(pods: int, policy: str, runs: int) -> dict[str, object]:
    done = [burst.one_run(pods, policy, keep=False, delete_on_termination=True)
            for _ in range(runs)]  # fmt: skip
    by_action: Counter[str] = Counter()
    for run in done:
        calls = run["calls"]
        assert isinstance(calls, dict)
        by_action.update(calls["by_action"])
    return {
        "seconds": round(statistics.median(float(r["seconds"]) for r in done), 3),  # type: ignore[arg-type]
        "add_p50_s": round(statistics.median(float(r["add_p50_s"]) for r in done), 3),  # type: ignore[arg-type]
        "mutating": round(sum(by_action.values()) / runs, 1),
        "by_action": {k: round(v / runs, 1) for k, v in sorted(by_action.items())},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", default="30,100")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv[1:])
    rows = []
    print(f"| pods on an empty {burst.INSTANCE_TYPE} | policy | daemon: all served (s) | "
          "simulator | daemon: ADD p50 (s) | simulator | daemon: mutating calls | simulator "
          "| same calls by action |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for pods in (int(x) for x in args.pods.split(",")):
        for policy in POLICIES:
            real = measured(pods, policy, args.runs)
            sim = simulated(pods, policy)
            rows.append({"pods": pods, "policy": policy, "daemon": real, "simulator": sim})
            same = real["by_action"] == {k: float(v) for k, v in sim["by_action"].items()}  # type: ignore[union-attr]
            print(f"| {pods} | {policy} | {real['seconds']} | {sim['seconds']} | "
                  f"{real['add_p50_s']} | {sim['add_p50_s']} | {real['mutating']:g} | "
                  f"{sim['mutating']} | {'yes' if same else 'no'} |", flush=True)
    print(json.dumps({"benchmark": "calibration", "runs": args.runs, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
