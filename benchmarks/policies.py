"""The policy comparison in the README: every built-in scenario under four warm-pool settings.

    python benchmarks/policies.py [--scenarios steady,burst,...] [--seed N]

Prints a markdown table (one row per scenario and policy), then ONE JSON object on the last
line: every figure, and per scenario the adaptive policy's ratios to upstream's default
(idle address-hours, EC2 mutating calls) and whether it meets the issue's three aims:
idle address-hours no more than WARM_IP_TARGET=5, p99 wait no worse than WARM_ENI_TARGET=1,
no pod waiting longer than 5 s (what a CNI ADD would time out on).
Each scenario runs at its built-in size (upstream-scaleup: 500 nodes); the simulator is
deterministic, so one run each is the figure (no medians needed: a rerun prints the same).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from adapters.simulator import SCENARIOS, Cluster, Measures, SimConfig
from ipamcore.config import PolicyName, PoolConfig

POLICIES: dict[str, PoolConfig] = {
    "upstream default (WARM_ENI_TARGET=1)": PoolConfig(),
    "WARM_IP_TARGET=5": PoolConfig(warm_ip_target=5),
    "upstream-faithful (WARM_ENI_TARGET=1)": PoolConfig(policy=PolicyName.UPSTREAM_FAITHFUL),
    "adaptive": PoolConfig(policy=PolicyName.ADAPTIVE),
}
DEFAULT, TUNED, OURS = "upstream default (WARM_ENI_TARGET=1)", "WARM_IP_TARGET=5", "adaptive"


def run(scenario: str, pool: PoolConfig, seed: int) -> Measures:
    s = SCENARIOS[scenario]
    events = s.events(s.nodes, s.duration_s, seed)
    config = SimConfig(
        nodes=s.nodes, duration_s=s.duration_s, instance_type=s.instance_type, pool=pool,
        seed=seed, boot_spread_s=s.boot_spread_s(s.nodes),
    )  # fmt: skip
    return Cluster(config, events).run()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv[1:])
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    began = time.perf_counter()
    results: dict[str, dict[str, dict[str, float]]] = {}
    print("| scenario | policy | idle address-hours | p99 wait (s) | max wait (s) "
          "| pods waiting > 5 s | EC2 mutating calls | throttled calls |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        s = SCENARIOS[name]
        results[name] = {}
        for label, pool in POLICIES.items():
            m = run(name, pool, args.seed)
            results[name][label] = {
                "idle_address_hours": m.idle_address_hours, "wait_p99_s": m.wait_p99_s,
                "wait_max_s": m.wait_max_s, "pods_over_5s": m.pods_over_threshold,
                "mutating_calls": m.mutating_total, "throttled_calls": m.throttled_total,
            }  # fmt: skip
            print(f"| {name} ({s.nodes} x {s.instance_type}) | {label} "
                  f"| {m.idle_address_hours:,.1f} | {m.wait_p99_s:.2f} | {m.wait_max_s:.2f} "
                  f"| {m.pods_over_threshold:,} | {m.mutating_total:,} "
                  f"| {m.throttled_total:,} |", flush=True)  # fmt: skip
    verdicts = {}
    for name, by_policy in results.items():
        ours, default, tuned = by_policy[OURS], by_policy[DEFAULT], by_policy[TUNED]
        verdicts[name] = {
            "idle_vs_default": round(ours["idle_address_hours"]
                                     / max(default["idle_address_hours"], 1e-9), 3),
            "calls_vs_default": round(ours["mutating_calls"]
                                      / max(default["mutating_calls"], 1), 3),
            "idle_at_most_warm_ip_5": ours["idle_address_hours"] <= tuned["idle_address_hours"],
            "p99_at_most_warm_eni_1": ours["wait_p99_s"] <= default["wait_p99_s"],
            "no_pod_over_5s": ours["pods_over_5s"] == 0,
        }  # fmt: skip
    print(json.dumps({
        "benchmark": "policies on the built-in scenarios", "seed": args.seed,
        "wall_s": round(time.perf_counter() - began, 1), "results": results,
        "adaptive": verdicts,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
