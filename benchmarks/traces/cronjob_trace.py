"""A trace like the one issue 13 was tried with: 20 x m5.xlarge nodes, a CronJob of 200 pods
every 5 minutes for an hour, each pod living 1-2 minutes; Unix-epoch times and node names,
as an export of a real cluster would have them.

    python benchmarks/traces/cronjob_trace.py [--pods 200] [--waves 12] [--seed 1] > cron.csv
    ipamctl recommend --trace cron.csv --plot rec.png

Deterministic for a seed. ``--pods 400`` on ``--instance-type t2.medium`` gives nodes that
are full (20 pods at once where a t2.medium holds 15 addresses).
"""

from __future__ import annotations

import argparse
import random
import sys

START = 1_796_630_400  # 2026-12-07T08:00:00Z


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--pods", type=int, default=200, help="pods a wave (default 200)")
    parser.add_argument("--waves", type=int, default=12, help="one every 5 minutes")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv[1:])
    rng = random.Random(args.seed)
    events = []
    for wave in range(args.waves):
        base = START + 300 * wave
        for i in range(args.pods):
            node = f"ip-10-0-{i % args.nodes}-17.us-west-2.compute.internal"
            t = base + rng.uniform(0, 3)
            name = f"batch/report-{wave}-{i}"
            events.append((t, node, "add", name))
            events.append((t + rng.uniform(60, 120), node, "del", name))
    events.sort()
    out = ["time,node,event,pod"] + [f"{t:.3f},{n},{e},{p}" for t, n, e, p in events]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
