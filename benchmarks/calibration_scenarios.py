"""How close the simulator is to the daemon on the built-in scenarios: one node of each
scenario, replayed in real time through the real daemon (a subprocess on the fake cloud with
realistic latencies and a 1.5 s metadata lag, as ``benchmarks/burst.py`` runs it) and
predicted by the simulator with the same latencies and lag, side by side.

    python benchmarks/calibration_scenarios.py [--scenarios burst,steady,...] [--policy P]
                                               [--set KNOB=VALUE ...] [--seed N]

Each scenario's workload for one node (node 0, or for ``autoscale`` the first node that
joins: it boots into a burst) is cut to a window of real time (:data:`WINDOWS`, about two to
three minutes each, 13 minutes for all six) and shifted so its first pod comes 10 s after the
daemon is ready; ``diurnal`` compresses its day into the window. The daemon's ADDs are sent
at their times over its socket (one connection each, like the CNI plugin), its DELs too; its
metrics (``awscni_total_ip_addresses``, ``awscni_assigned_ip_addresses``) are scraped every
second for the idle address-hours, and its EC2 calls come from the fake's call log. The
simulator runs the same events on one node of the same type (its boot at 0, samples every
second). Compared: p50 / p99 / max address wait, pods served, idle address-hours (held but
not assigned, x 1000 to show short windows), EC2 mutating calls.

What it does not calibrate: many nodes sharing EC2's throttling buckets (a daemon a node in
real time), hours of workload, the socket, datapath and checkpoint time in an ADD's wait
(the daemon's waits include them, a few milliseconds; the simulator counts them as zero).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable

import burst  # the sibling script (benchmarks/ is on sys.path when run as a script)

from adapters import protocol as p
from adapters.ipamctl.simulate import KNOB_NAMES, pool_config
from adapters.ipamd.settings import state_env
from adapters.simulator import SCENARIOS, Cluster, Measures, PodEvent, SimConfig
from adapters.simulator.measures import percentile
from adapters.simulator.workload import ADD, DEL, JOIN
from backends.fakecloud.latency import REALISTIC_LATENCIES, REALISTIC_METADATA_LAG_S
from backends.observe import MUTATING_ACTIONS

# scenario -> (real seconds of workload replayed, duration the scenario is generated for)
WINDOWS: dict[str, tuple[float, float]] = {
    "steady": (120.0, 3600.0),
    "burst": (150.0, 1800.0),
    "batch": (120.0, 3600.0),
    "diurnal": (150.0, 160.0),
    "upstream-scaleup": (120.0, 900.0),
    "autoscale": (90.0, 2700.0),
}
LEAD_S = 10.0  # the first pod comes this long after the daemon is ready
SETTLE_S = 3.0


def node_workload(name: str, seed: int) -> tuple[list[PodEvent], str]:
    """One node's events from the scenario, shifted to start at LEAD_S, cut to its window
    (instance type too)."""
    s = SCENARIOS[name]
    window, duration = WINDOWS[name]
    events = s.events(s.nodes, duration, seed)
    node = 0
    joins = [e for e in events if e.event == JOIN]
    if joins:  # a node that joins: it boots at its join, as the daemon does here
        node = joins[0].node
    mine = [e for e in events if e.node == node and e.event in (ADD, DEL)]
    first = min(e.time for e in mine)
    shift = first - LEAD_S
    if joins:
        shift = joins[0].time  # the daemon starts when the node joins
    out = [PodEvent(round(e.time - shift, 6), 0, e.event, e.pod) for e in mine
           if e.time - shift < window]  # fmt: skip
    return out, s.instance_type


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(state: str, instance_type: str, env_extra: dict[str, str],
                 port: int) -> subprocess.Popen[bytes]:  # fmt: skip
    env = {
        **os.environ,
        "IPAMD_CLOUD": "fake", "IPAMD_DATAPATH": "fake", "IPAMD_FAKE_INSTANCE_TYPE": instance_type,
        "IPAMD_FAKE_LATENCY": "realistic",
        "IPAMD_FAKE_CALL_LOG": os.path.join(state, "calls.jsonl"),
        "IPAMD_ADD_WAIT_SECONDS": "60",
        **state_env(state),
        "DISABLE_INTROSPECTION": "true", "METRICS_BIND_ADDRESS": f"127.0.0.1:{port}",
        "AWS_VPC_K8S_CNI_LOGLEVEL": "WARN", "IPAMD_LOG_FORMAT": "json",
    }  # fmt: skip
    for name in ("WARM_ENI_TARGET", "WARM_IP_TARGET", "MINIMUM_IP_TARGET", "MAX_ENI",
                 "WARM_PREFIX_TARGET", "ENABLE_PREFIX_DELEGATION", "IPAMD_POLICY",
                 "ENABLE_IPv6", "ENABLE_IPv4", "ENABLE_MULTI_NIC"):  # fmt: skip
        env.pop(name, None)
    env.update(env_extra)
    log = open(os.path.join(state, "ipamd.log"), "wb")  # noqa: SIM115 (the child holds it)
    return subprocess.Popen([sys.executable, "-m", "adapters.ipamd.main"], env=env,
                            stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip


GAUGE = re.compile(r"^(awscni_total_ip_addresses|awscni_assigned_ip_addresses)(\{[^}]*\})? (\S+)$")


def scrape(port: int) -> tuple[float, float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    got: Counter[str] = Counter()
    for line in text.splitlines():
        m = GAUGE.match(line)
        if m:
            got[m.group(1)] += float(m.group(3))
    return got["awscni_total_ip_addresses"], got["awscni_assigned_ip_addresses"]


async def send(sock: str, req: p.Request) -> tuple[p.Reply, float]:
    began = time.perf_counter()
    reader, writer = await asyncio.open_unix_connection(sock)
    try:
        writer.write(p.encode_request(req))
        await writer.drain()
        reply = p.decode_reply(await reader.readuntil(b"\n"))
    finally:
        writer.close()
    return reply, time.perf_counter() - began


async def replay(sock: str, port: int, events: list[PodEvent], end: float
                 ) -> tuple[list[float], int, list[tuple[float, float]]]:  # fmt: skip
    """Send each event at its time; (ADD waits, failures, metric samples each second)."""
    ids = {e.pod: n for n, e in enumerate(e for e in events if e.event == ADD)}
    waits: list[float] = []
    failures = 0
    samples: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    tasks: list[asyncio.Task[tuple[p.Reply, float]]] = []
    adds: dict[str, asyncio.Task[tuple[p.Reply, float]]] = {}

    async def sampler() -> None:
        k = 0
        while time.perf_counter() - t0 < end:
            got = await asyncio.to_thread(scrape, port)
            if got is not None:
                samples.append(got)
            k += 1
            await asyncio.sleep(max(0.0, t0 + k - time.perf_counter()))

    sampling = asyncio.create_task(sampler())
    for e in events:
        delay = t0 + e.time - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        n = ids[e.pod]
        common = {"network_name": "aws-cni", "container_id": f"c{n:05d}", "if_name": "eth0"}
        if e.event == ADD:
            req = p.Request(p.OP_ADD, netns=f"/var/run/netns/cal-{n}", pod_namespace="cal",
                            pod_name=e.pod, **common)  # fmt: skip
            adds[e.pod] = asyncio.create_task(send(sock, req))
            tasks.append(adds[e.pod])
        else:
            await adds[e.pod]  # a DEL after its ADD's reply, as kubelet does
            tasks.append(asyncio.create_task(send(sock, p.Request(p.OP_DEL, **common))))
    added = set(adds.values())
    for task in tasks:
        reply, took = await task
        if not reply.ok:
            failures += 1
        elif task in added:  # an ADD's reply (a DEL's is not a wait)
            waits.append(took)
    await sampling
    return waits, failures, samples


def daemon_run(events: list[PodEvent], instance_type: str, env: dict[str, str],
               window: float) -> dict[str, object]:  # fmt: skip
    state = tempfile.mkdtemp(prefix=f"ipamd-cal-{os.getpid()}-", dir="/tmp")
    sock = os.path.join(state, "ipam.sock")
    port = free_port()
    proc = start_daemon(state, instance_type, env, port)
    try:
        burst.wait_ready(sock, proc, state)
        waits, failures, samples = asyncio.run(replay(sock, port, events, window + SETTLE_S))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        with open(os.path.join(state, "calls.jsonl"), encoding="utf-8") as f:
            calls = [json.loads(line) for line in f if line.strip()]
        shutil.rmtree(state, ignore_errors=True)
    ordered = sorted(waits)
    idle_s = sum(max(total - assigned, 0.0) for total, assigned in samples)  # 1 s apart
    mutating = Counter(str(c["action"]) for c in calls if c["action"] in MUTATING_ACTIONS)
    return {
        "served": len(waits), "failed": failures,
        "wait_p50_s": round(percentile(ordered, 50), 3),
        "wait_p99_s": round(percentile(ordered, 99), 3),
        "wait_max_s": round(ordered[-1] if ordered else 0.0, 3),
        "idle_address_hours": round(idle_s / 3600.0, 4),
        "mutating": sum(mutating.values()), "by_action": dict(sorted(mutating.items())),
    }


def simulator_run(events: list[PodEvent], instance_type: str, policy: str,
                  knobs: list[str], window: float) -> dict[str, object]:  # fmt: skip
    config = SimConfig(
        nodes=1, duration_s=window + SETTLE_S, instance_type=instance_type,
        pool=pool_config(policy, knobs), throttling=False, sample_interval_s=1.0,
        latencies=tuple(REALISTIC_LATENCIES.items()), metadata_lag_s=REALISTIC_METADATA_LAG_S,
    )  # fmt: skip
    m: Measures = Cluster(config, events).run()
    return {
        "served": m.pods_served, "failed": m.pods_unserved,
        "wait_p50_s": round(m.wait_p50_s, 3), "wait_p99_s": round(m.wait_p99_s, 3),
        "wait_max_s": round(m.wait_max_s, 3), "idle_address_hours": m.idle_address_hours,
        "mutating": m.mutating_total, "by_action": m.mutating_calls,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default=",".join(WINDOWS))
    parser.add_argument("--policy", default="upstream")
    parser.add_argument("--set", action="append", default=[], dest="knobs", metavar="KNOB=V")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv[1:])
    env = {"IPAMD_POLICY": args.policy}
    for item in args.knobs:
        name, _, value = item.partition("=")
        # the daemon reads upstream's names as spelled (ENABLE_IPv6, not ENABLE_IPV6)
        env[KNOB_NAMES.get(name.strip().upper(), name.strip())] = value.strip()
    print("| scenario (one node, window) | pods | wait p50 s: daemon / simulator | p99 | max | "
          "idle address-hours x 1000 | EC2 mutating calls |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    # IPv6 single stack has no idle addresses to compare: the daemon's gauges count the
    # /80's 2**48 addresses as held (as upstream's do), the simulator the empty IPv4 pool.
    v6_only = pool_config(args.policy, args.knobs).ipv6_only

    def idle(pair: Callable[..., str]) -> str:
        return "n/a (IPv6)" if v6_only else pair("idle_address_hours", 1000.0, ".0f")

    for name in [n.strip() for n in args.scenarios.split(",") if n.strip()]:
        window = WINDOWS[name][0]
        events, itype = node_workload(name, args.seed)
        real = daemon_run(events, itype, env, window)
        sim = simulator_run(events, itype, args.policy, args.knobs, window)
        rows.append({"scenario": name, "instance_type": itype, "window_s": window,
                     "pods": sum(1 for e in events if e.event == ADD),
                     "daemon": real, "simulator": sim})  # fmt: skip

        def pair(key: str, scale: float = 1.0, fmt: str = ".2f",
                 real: dict[str, object] = real, sim: dict[str, object] = sim) -> str:  # fmt: skip
            a, b = float(real[key]) * scale, float(sim[key]) * scale  # type: ignore[arg-type]
            return f"{a:{fmt}} / {b:{fmt}}"

        print(f"| {name} ({itype}, {window:g} s) | {rows[-1]['pods']} | {pair('wait_p50_s')} | "
              f"{pair('wait_p99_s')} | {pair('wait_max_s')} | "
              f"{idle(pair)} | {pair('mutating', 1, '.0f')} |",
              flush=True)  # fmt: skip
    print(json.dumps({"benchmark": "calibration_scenarios", "policy": args.policy,
                      "knobs": args.knobs, "seed": args.seed, "rows": rows}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
