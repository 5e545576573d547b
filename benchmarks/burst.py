"""100 pods arriving at once on an empty c5.4xlarge node, against the fake cloud with realistic
latencies (issue 4).

What runs: the real daemon, ``python -m adapters.ipamd.main``, as a subprocess with
``IPAMD_CLOUD=fake`` (one c5.4xlarge: 8 ENIs x 30 IPv4), ``IPAMD_FAKE_LATENCY=realistic``
(every EC2 call takes its time, metadata lags; the figures and their sources are in
:mod:`backends.fakecloud.latency`), the fake datapath, a real fsync'd checkpoint file and
upstream's default pool settings (``WARM_ENI_TARGET=1``, no WARM_IP/MINIMUM_IP). The clients
speak the socket protocol like the CNI plugin does, one connection per ADD.

"Empty node", as chosen here: the daemon has started and answers STATUS ready; the instance
has only its primary ENI, with no secondary address (the fake launches it so). The 100 ADDs
are sent the moment the daemon is ready, so its own start-up warm-pool call (fill the primary
ENI, WARM_ENI_TARGET=1) races the burst, as it would on a node that receives pods at once.

Measured per run: seconds from the first ADD sent to the last reply (every reply must be an
address, all distinct), and the EC2 calls the fake cloud recorded (``IPAMD_FAKE_CALL_LOG``):
mutating calls per ENI added in aggregate (all of them, the primary's fill included, divided
by the ENIs created), and the calls about the added ENIs only (its CreateNetworkInterface
plus every mutating call naming it): the mean over the added ENIs and the most on any one.
Several runs (``--runs``, each with a fresh daemon); medians are reported.

``--eni-delete-on-termination true|false`` sets the daemon's ``ENI_DELETE_ON_TERMINATION``
(default true, upstream's behaviour: one ModifyNetworkInterfaceAttribute per new ENI; false
skips it, see the README's trade-off).

The least time the cloud's latencies allow (:func:`backends.fakecloud.latency.least_burst_time`):
the new ENIs created in parallel, each with its addresses in the CreateNetworkInterface call,
so one ENI's path: create + attach + max(metadata lag, ModifyNetworkInterfaceAttribute), or
create + attach + metadata lag without the Modify call; the primary ENI's fill (one
AssignPrivateIpAddresses) runs meanwhile. Socket, datapath and checkpoint time count as zero
in it. Targets: time within 1.2x of that; at most two mutating calls per ENI.

    python benchmarks/burst.py [--runs 5] [--pods 100] [--policy upstream|upstream-faithful]
                               [--eni-delete-on-termination true|false]

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

from adapters import protocol as p
from adapters.ipamd.settings import state_env
from backends.fakecloud.latency import (
    REALISTIC_LATENCIES,
    REALISTIC_METADATA_LAG_S,
    least_burst_time,
)
from backends.observe import MUTATING_ACTIONS

INSTANCE_TYPE = "c5.4xlarge"
TIME_TARGET_RATIO = 1.2
CALLS_TARGET = 2.0
SETTLE_S = 3.0  # after the burst: let follow-up calls (warm-pool top-up) land in the log


V6_ENV = {"ENABLE_IPv6": "true", "ENABLE_IPv4": "false", "ENABLE_PREFIX_DELEGATION": "true"}


def start_daemon(
    state: str, policy: str, delete_on_termination: bool, ipv6: bool = False
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "IPAMD_CLOUD": "fake", "IPAMD_DATAPATH": "fake", "IPAMD_FAKE_INSTANCE_TYPE": INSTANCE_TYPE,
        "IPAMD_FAKE_LATENCY": "realistic",
        "IPAMD_FAKE_CALL_LOG": os.path.join(state, "calls.jsonl"),
        "IPAMD_POLICY": policy,
        "ENI_DELETE_ON_TERMINATION": "true" if delete_on_termination else "false",
        "IPAMD_ADD_WAIT_SECONDS": "30",  # measure a slow burst rather than fail it
        **state_env(state),
        "DISABLE_INTROSPECTION": "true", "DISABLE_METRICS": "true",
        "AWS_VPC_K8S_CNI_LOGLEVEL": "WARN", "IPAMD_LOG_FORMAT": "json",
        **(V6_ENV if ipv6 else {}),
    }  # fmt: skip
    for name in ("WARM_ENI_TARGET", "WARM_IP_TARGET", "MINIMUM_IP_TARGET", "MAX_ENI"):
        env.pop(name, None)
    log = open(os.path.join(state, "ipamd.log"), "wb")  # noqa: SIM115 (the child holds it)
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.ipamd.main"], env=env,
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip


def wait_ready(sock: str, proc: subprocess.Popen[bytes], state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(os.path.join(state, "ipamd.log"), "rb") as f:
                raise SystemExit(f"daemon exited: {f.read()[-2000:]!r}")
        try:
            reply = p.request(sock, p.Request(p.OP_STATUS, network_name="aws-cni"), 2)
            if reply.ok and (reply.result or {}).get("ready"):
                return
        except p.ProtocolError:
            pass
        time.sleep(0.005)
    raise SystemExit("daemon not ready in time")


async def add(sock: str, n: int) -> tuple[p.Reply, float]:
    data = p.encode_request(
        p.Request(p.OP_ADD, network_name="aws-cni", container_id=f"burst{n:04d}",
                  if_name="eth0", netns=f"/var/run/netns/burst-{n}",
                  pod_namespace="burst", pod_name=f"pod-{n}")
    )  # fmt: skip
    began = time.perf_counter()
    reader, writer = await asyncio.open_unix_connection(sock)
    try:
        writer.write(data)
        await writer.drain()
        reply = p.decode_reply(await reader.readuntil(b"\n"))
    finally:
        writer.close()
    return reply, time.perf_counter() - began


async def burst(sock: str, pods: int) -> tuple[float, list[float], list[p.Reply]]:
    began = time.perf_counter()
    results = await asyncio.gather(*(add(sock, n) for n in range(pods)))
    elapsed = time.perf_counter() - began
    return elapsed, [t for _, t in results], [r for r, _ in results]


def read_calls(path: str) -> list[dict[str, object]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def count_calls(calls: list[dict[str, object]]) -> dict[str, object]:
    """Mutating calls in total, per ENI added (aggregate), and about each added ENI (its
    create plus the calls naming it): mean and most."""
    ok = [c for c in calls if c["outcome"] == "ok"]
    mutating = [c for c in calls if c["action"] in MUTATING_ACTIONS]
    new_enis = {str(c["target"]) for c in ok if c["action"] == "AttachNetworkInterface"}
    created = sum(1 for c in ok if c["action"] == "CreateNetworkInterface")
    per_eni: Counter[str] = Counter({e: 1 for e in new_enis})  # its CreateNetworkInterface
    for c in mutating:
        if c["action"] != "CreateNetworkInterface" and c["target"] in new_enis:
            per_eni[str(c["target"])] += 1
    first_v6 = next((i for i, c in enumerate(calls) if c["action"] == "AssignIpv6Addresses"), None)
    return {
        "total": len(calls),
        "after_first_ipv6_prefix": None if first_v6 is None else len(calls) - first_v6 - 1,
        "enis_added": created,
        "mutating": len(mutating),
        "by_action": dict(sorted(Counter(str(c["action"]) for c in mutating).items())),
        "failed": sum(1 for c in calls if c["outcome"] != "ok"),
        "per_eni_added": round(len(mutating) / created, 3) if created else None,
        "max_on_one_new_eni": max(per_eni.values(), default=0),
        "mean_on_new_enis": round(statistics.mean(per_eni.values()), 3) if per_eni else None,
    }


def one_run(
    pods: int, policy: str, keep: bool, delete_on_termination: bool, ipv6: bool = False
) -> dict[str, object]:
    state = tempfile.mkdtemp(prefix=f"ipamd-burst-{os.getpid()}-", dir="/tmp")
    sock = os.path.join(state, "ipam.sock")
    proc = start_daemon(state, policy, delete_on_termination, ipv6)
    try:
        wait_ready(sock, proc, state)
        elapsed, latencies, replies = asyncio.run(burst(sock, pods))
        time.sleep(SETTLE_S)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        calls = read_calls(os.path.join(state, "calls.jsonl"))
        if not keep:
            shutil.rmtree(state, ignore_errors=True)
    failures = [f"{r.error_code}: {r.error_message}" for r in replies if not r.ok]
    family = "ipv6" if ipv6 else "ipv4"
    addresses = {(r.result or {}).get(family) for r in replies if r.ok} - {None}
    if failures or len(addresses) != pods:
        raise SystemExit(f"burst failed: {len(failures)} errors {failures[:3]}, "
                         f"{len(addresses)} distinct addresses")  # fmt: skip
    ordered = sorted(latencies)
    return {
        "seconds": round(elapsed, 4),
        "add_p50_s": round(statistics.median(ordered), 4),
        "add_max_s": round(ordered[-1], 4),
        "daemon_exit": code,
        "calls": count_calls(calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--policy", default="upstream", choices=("upstream", "upstream-faithful"))
    parser.add_argument("--keep", action="store_true", help="keep each run's state directory")
    parser.add_argument(
        "--ipv6", action="store_true",
        help="IPv6 single stack (ENABLE_IPv6=true ENABLE_IPv4=false ENABLE_PREFIX_DELEGATION="
        "true): the start's one AssignIpv6Addresses, then no EC2 call at all",
    )  # fmt: skip
    parser.add_argument(
        "--eni-delete-on-termination", default="true", choices=("true", "false"),
        help="the daemon's ENI_DELETE_ON_TERMINATION (false: no ModifyNetworkInterfaceAttribute)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.ipv6:
        main_ipv6(args.runs, args.pods, args.keep)
        return
    delete_on_termination = args.eni_delete_on_termination == "true"
    least = least_burst_time(delete_on_termination=delete_on_termination)
    modify = REALISTIC_LATENCIES["ModifyNetworkInterfaceAttribute"]
    lag_note = f" (Modify {modify} within it)" if delete_on_termination else " (no Modify)"
    fill = REALISTIC_LATENCIES["AssignPrivateIpAddresses"]
    print(f"least time the latencies allow: {least:.3f} s (create "
          f"{REALISTIC_LATENCIES['CreateNetworkInterface']} + attach "
          f"{REALISTIC_LATENCIES['AttachNetworkInterface']} + metadata lag "
          f"{REALISTIC_METADATA_LAG_S}{lag_note}; fill primary {fill} in parallel)")  # fmt: skip
    runs = []
    for i in range(args.runs):
        run = one_run(args.pods, args.policy, args.keep, delete_on_termination)
        runs.append(run)
        calls = run["calls"]
        assert isinstance(calls, dict)
        print(f"run {i + 1}: {args.pods} pods in {run['seconds']:.3f} s "
              f"(ratio {float(run['seconds']) / least:.3f}; ADD p50 {run['add_p50_s']:.3f} s), "
              f"{calls['enis_added']} ENIs added, {calls['mutating']} mutating calls "
              f"{calls['by_action']}, {calls['per_eni_added']} per ENI added, "
              f"about each new ENI: mean {calls['mean_on_new_enis']}, "
              f"max {calls['max_on_one_new_eni']}")  # fmt: skip
    median = statistics.median(float(r["seconds"]) for r in runs)
    per_eni = [r["calls"]["per_eni_added"] for r in runs]  # type: ignore[index]
    per_eni_median = statistics.median(x for x in per_eni if x is not None) if any(
        x is not None for x in per_eni) else None  # fmt: skip
    max_one = max(int(r["calls"]["max_on_one_new_eni"]) for r in runs)  # type: ignore[index]
    means = [r["calls"]["mean_on_new_enis"] for r in runs]  # type: ignore[index]
    mean_on_new = statistics.median(x for x in means if x is not None) if any(
        x is not None for x in means) else None  # fmt: skip
    ratio = median / least
    print(f"median {median:.3f} s vs least {least:.3f} s: ratio {ratio:.3f} "
          f"(target <= {TIME_TARGET_RATIO}); mutating calls per ENI added (median, aggregate "
          f"with the primary's fill) {per_eni_median}; about each added ENI: mean "
          f"{mean_on_new} (median of runs), at most {max_one} (target <= {CALLS_TARGET:g})")
    print(json.dumps({
        "benchmark": "burst", "pods": args.pods, "instance_type": INSTANCE_TYPE,
        "policy": args.policy, "eni_delete_on_termination": delete_on_termination,
        "runs": args.runs, "least_time_s": round(least, 4),
        "median_time_s": round(median, 4), "ratio": round(ratio, 3),
        "time_target_ratio": TIME_TARGET_RATIO, "meets_time_target": ratio <= TIME_TARGET_RATIO,
        "median_mutating_calls_per_eni_added": per_eni_median,
        "max_mutating_calls_on_one_new_eni": max_one,
        "median_mean_mutating_calls_on_new_enis": mean_on_new, "calls_target": CALLS_TARGET,
        "meets_calls_target": per_eni_median is not None and per_eni_median <= CALLS_TARGET,
        "meets_calls_target_on_added_enis": 0 < max_one <= CALLS_TARGET,
        "per_run": runs,
    }))  # fmt: skip


def main_ipv6(runs_wanted: int, pods: int, keep: bool) -> None:
    """The IPv6 run: every pod's address comes from the primary ENI's /80, which the daemon
    got at start with one AssignIpv6Addresses; the burst itself makes no EC2 call."""
    runs = []
    for i in range(runs_wanted):
        run = one_run(pods, "upstream", keep, True, ipv6=True)
        runs.append(run)
        calls = run["calls"]
        assert isinstance(calls, dict)
        print(f"run {i + 1} (IPv6): {pods} pods in {run['seconds']:.3f} s "
              f"(ADD p50 {run['add_p50_s']:.4f} s), EC2 calls in all {calls['total']} "
              f"(mutating {calls['mutating']} {calls['by_action']}), after the first "
              f"prefix {calls['after_first_ipv6_prefix']}")  # fmt: skip
    median = statistics.median(float(r["seconds"]) for r in runs)
    mutating = [int(r["calls"]["mutating"]) for r in runs]  # type: ignore[index]
    only_prefix = all(
        r["calls"]["by_action"] == {"AssignIpv6Addresses": 1}  # type: ignore[index]
        and r["calls"]["after_first_ipv6_prefix"] == 0  # type: ignore[index]
        for r in runs
    )
    total = [int(r["calls"]["total"]) for r in runs]  # type: ignore[index]
    print(f"median {median:.3f} s for {pods} IPv6 pods; EC2 calls per run {total}, "
          f"mutating {mutating} (one AssignIpv6Addresses at start, no call after it: "
          f"{only_prefix})")  # fmt: skip
    print(json.dumps({
        "benchmark": "burst", "mode": "ipv6", "pods": pods, "instance_type": INSTANCE_TYPE,
        "runs": runs_wanted, "median_time_s": round(median, 4),
        "ec2_calls_per_run": total, "ec2_mutating_calls_per_run": mutating,
        "no_ec2_call_after_first_prefix": only_prefix, "per_run": runs,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
