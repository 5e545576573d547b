"""Pod ADD/DEL latency: LinuxDatapath (pyroute2) beside the same steps done with `ip`.

Runs as root in namespaces it creates (one "host" netns plus one per pod, named
``ipcbench<pid>-*``) and deletes them all on exit. Prints a table and, on the last line,
one JSON object with p50/p99 in milliseconds.

    python benchmarks/datapath.py [--pods 50]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable

from backends.datapath.linux import LinuxDatapath
from ipamcore.netspec import POD_GATEWAY, PodNetwork, host_veth_name

ROUTE_TABLE = 3  # pods on a secondary ENI: the full set of pieces (both rules)


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ip_add(host: str, pod: PodNetwork) -> None:
    """The pyroute2 backend's setup_pod, one `ip` command per step (as a shell script)."""
    ns = os.path.basename(pod.netns_path)
    h, p = ("ip", "-n", host), ("ip", "-n", ns)
    veth, dev, mtu = pod.host_veth, pod.if_name, str(pod.mtu)
    run(*h, "link", "add", veth, "mtu", mtu, "type", "veth",
        "peer", "name", dev, "mtu", mtu, "netns", ns)  # fmt: skip
    mac = run(*h, "-br", "link", "show", veth).split()[2]
    run(*p, "link", "set", "lo", "up")
    run(*p, "link", "set", dev, "up")
    run(*p, "addr", "add", f"{pod.ipv4}/32", "dev", dev)
    run(*p, "route", "replace", f"{POD_GATEWAY}/32", "dev", dev, "scope", "link")
    run(*p, "route", "replace", "default", "via", POD_GATEWAY, "dev", dev)
    run(*p, "neigh", "replace", POD_GATEWAY, "lladdr", mac, "dev", dev, "nud", "permanent")
    run(*h, "link", "set", veth, "up")
    run(*h, "route", "replace", f"{pod.ipv4}/32", "dev", veth, "scope", "link")
    run(*h, "rule", "add", "priority", "512", "to", f"{pod.ipv4}/32", "lookup", "main")
    run(*h, "rule", "add", "priority", "1536", "from", f"{pod.ipv4}/32",
        "lookup", str(pod.route_table))  # fmt: skip


def ip_del(host: str, pod: PodNetwork) -> None:
    h = ("ip", "-n", host)
    run(*h, "rule", "del", "priority", "512", "to", f"{pod.ipv4}/32")
    run(*h, "rule", "del", "priority", "1536", "from", f"{pod.ipv4}/32")
    run(*h, "route", "del", f"{pod.ipv4}/32", "dev", pod.host_veth)
    run(*h, "link", "del", pod.host_veth)


def timed(action: Callable[[PodNetwork], None], pods: list[PodNetwork]) -> list[float]:
    samples = []
    for pod in pods:
        start = time.perf_counter()
        action(pod)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2

    prefix = f"ipcbench{os.getpid()}"
    created: list[str] = []

    def netns(name: str) -> str:
        run("ip", "netns", "add", name)
        created.append(name)
        return name

    try:
        host = netns(f"{prefix}-host")
        run("ip", "-n", host, "link", "set", "lo", "up")
        pods = [
            PodNetwork(
                netns_path=f"/var/run/netns/{netns(f'{prefix}-pod{i}')}",
                if_name="eth0",
                host_veth=host_veth_name("bench", f"pod-{i}", "eth0"),
                ipv4=f"10.1.{i // 250}.{i % 250 + 1}",
                route_table=ROUTE_TABLE,
            )
            for i in range(args.pods)
        ]
        datapath = LinuxDatapath(host_netns=f"/var/run/netns/{host}")
        datapath.setup_pod(pods[0])  # warm-up (imports, first netlink sockets)
        datapath.teardown_pod(pods[0])
        results = {
            "pyroute2_add": timed(datapath.setup_pod, pods),
            "pyroute2_del": timed(datapath.teardown_pod, pods),
            "ip_add": timed(lambda p: ip_add(host, p), pods),
            "ip_del": timed(lambda p: ip_del(host, p), pods),
        }
        summary: dict[str, float | int] = {"pods": args.pods}
        for name, samples in results.items():
            p50, p99 = percentile(samples, 50), percentile(samples, 99)
            summary[f"{name}_p50_ms"] = round(p50, 3)
            summary[f"{name}_p99_ms"] = round(p99, 3)
            print(f"{name:14} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms")
        print(json.dumps(summary))
        return 0
    finally:
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
