"""Soak: many ADD/DEL pairs through vpc-ipamd's socket from many concurrent clients.

The daemon runs as a subprocess (``python -m adapters.ipamd.main``) with the fake cloud, the
fake datapath and a real, durable checkpoint file, and with the pool policy and the
reconciliation running at short intervals (``IPAMD_POLICY_INTERVAL_SECONDS``,
``IPAMD_RECONCILE_INTERVAL_SECONDS``) so they interleave with the requests. Each client
repeats ADD then DEL of its own pod.

Measured at the start (after a short warm-up) and at the end: the daemon's RSS
(``/proc/PID/status`` VmRSS) and open file descriptors (``/proc/PID/fd``), and the pool
(STATUS: assigned must come back to 0). Errors are counted, not fatal. Invariants checked all
along: no address handed to two live pods at once, every DEL of a live pod releases its
address; at the end nothing assigned, the checkpoint holds no allocation, the fd count is back
to where it started. Latency: p50/p99 of one pair for the first and the last 10 % of pairs,
and their ratio (drift).

Progress goes to stderr; the last line of stdout is one JSON object.

    python benchmarks/soak.py [--pairs 100000] [--clients 32] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from adapters import protocol as p
from adapters.ipamd.settings import state_env

FD_SLACK = 2  # an fd or two may be open for a moment (a log write, a checkpoint rename)


def start_daemon(state: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "IPAMD_CLOUD": "fake", "IPAMD_DATAPATH": "fake", "IPAMD_FAKE_INSTANCE_TYPE": "c5.4xlarge",
        "WARM_IP_TARGET": str(args.warm_ip_target), "IP_COOLDOWN_PERIOD": str(args.cooldown),
        "IPAMD_POLICY_INTERVAL_SECONDS": str(args.policy_interval),
        "IPAMD_RECONCILE_INTERVAL_SECONDS": str(args.reconcile_interval),
        **state_env(state),
        "INTROSPECTION_BIND_ADDRESS": "127.0.0.1:0", "METRICS_BIND_ADDRESS": "127.0.0.1:0",
        "AWS_VPC_K8S_CNI_LOGLEVEL": "WARN", "IPAMD_LOG_FORMAT": "json",
    }  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.ipamd.main"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def drain(proc: subprocess.Popen[bytes], keep: list[bytes]) -> None:
    """Read what the daemon logged (WARN and above), so its pipe never fills."""
    assert proc.stderr is not None
    while select.select([proc.stderr], [], [], 0)[0]:
        chunk = os.read(proc.stderr.fileno(), 65536)
        if not chunk:
            return
        keep.append(chunk)


def status(sock: str) -> dict[str, int]:
    reply = p.request(sock, p.Request(p.OP_STATUS, network_name="aws-cni"), 5)
    if not reply.ok:
        raise RuntimeError(f"STATUS failed: {reply.error_code} {reply.error_message}")
    return dict(reply.result or {})


def wait_ready(sock: str, proc: subprocess.Popen[bytes], need: int, log: list[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            drain(proc, log)
            raise SystemExit(f"daemon exited: {b''.join(log)[-2000:]!r}")
        try:
            if status(sock).get("available", 0) >= need:
                return
        except (p.ProtocolError, RuntimeError):
            pass
        drain(proc, log)
        time.sleep(0.05)
    raise SystemExit("daemon not ready in time")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    """The clients' shared bookkeeping."""

    def __init__(self, sock: str, pairs: int, clients: int) -> None:
        self.sock = sock
        self.pairs = pairs
        self.clients = clients
        self.done = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.violations = 0
        self.violation_samples: list[str] = []
        self.latencies: list[float] = []  # seconds per pair, in completion order
        self.live: dict[str, int] = {}  # address -> client holding it

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    def violation(self, what: str) -> None:
        self.violations += 1
        if len(self.violation_samples) < 5:
            self.violation_samples.append(what)

    async def rpc(self, data: bytes) -> p.Reply:
        reader, writer = await asyncio.open_unix_connection(self.sock)
        try:
            writer.write(data)
            await writer.drain()
            return p.decode_reply(await reader.readuntil(b"\n"))
        finally:
            writer.close()
            await writer.wait_closed()

    async def client(self, n: int, count: int) -> None:
        fields = {"network_name": "aws-cni", "container_id": f"soak{n:04d}", "if_name": "eth0",
                  "netns": f"/var/run/netns/soak-{n}"}  # fmt: skip
        add = p.encode_request(
            p.Request(p.OP_ADD, pod_namespace="soak", pod_name=f"pod-{n}", **fields)
        )
        delete = p.encode_request(p.Request(p.OP_DEL, **fields))
        for _ in range(count):
            began = time.perf_counter()
            try:
                reply = await self.rpc(add)
            except (OSError, p.ProtocolError, asyncio.IncompleteReadError) as exc:
                self.error(f"ADD: {type(exc).__name__}: {exc}")
                continue
            ip = ""
            if not reply.ok:
                self.error(f"ADD: {reply.error_code} {reply.error_message}")
            else:
                ip = reply.result["ipv4"]
                holder = self.live.get(ip)
                if holder is not None and holder != n:
                    self.violation(f"{ip} given to client {n} while client {holder} holds it")
                self.live[ip] = n
            try:
                reply = await self.rpc(delete)
            except (OSError, p.ProtocolError, asyncio.IncompleteReadError) as exc:
                self.error(f"DEL: {type(exc).__name__}: {exc}")
                continue
            if not reply.ok:
                self.error(f"DEL: {reply.error_code} {reply.error_message}")
            elif ip:
                if self.live.get(ip) == n:
                    del self.live[ip]
                if reply.result.get("released") is not True or reply.result.get("ipv4") != ip:
                    self.violation(f"DEL of client {n} did not release {ip}: {reply.result}")
            self.latencies.append(time.perf_counter() - began)
            self.done += 1

    async def run(self) -> None:
        share, extra = divmod(self.pairs, self.clients)
        await asyncio.gather(
            *(self.client(n, share + (1 if n < extra else 0)) for n in range(self.clients))
        )


async def progress(soak: Soak, began: float) -> None:
    while True:
        await asyncio.sleep(5)
        rate = soak.done / max(1e-9, time.perf_counter() - began)
        print(f"soak: {soak.done}/{soak.pairs} pairs, {rate:.0f}/s, errors {soak.errors}",
              file=sys.stderr, flush=True)  # fmt: skip


async def run_soak(soak: Soak) -> float:
    began = time.perf_counter()
    reporter = asyncio.create_task(progress(soak, began))
    try:
        await soak.run()
    finally:
        reporter.cancel()
    return time.perf_counter() - began


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def tenth(latencies: list[float], last: bool) -> dict[str, float]:
    k = max(1, len(latencies) // 10)
    part = sorted(latencies[-k:] if last else latencies[:k])
    return {"p50": statistics.median(part) * 1000, "p99": percentile(part, 0.99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=0, help="pairs before the start figures")
    parser.add_argument("--warm-ip-target", type=int, default=48)
    parser.add_argument("--cooldown", type=float, default=0)
    parser.add_argument("--policy-interval", type=float, default=0.5)
    parser.add_argument("--reconcile-interval", type=float, default=2.0)
    parser.add_argument("--dir", default="", help="state directory (default: a fresh one)")
    args = parser.parse_args()
    warmup = args.warmup or max(args.clients, args.pairs // 100)
    state = args.dir or tempfile.mkdtemp(prefix="ipamd-soak-", dir="/tmp")
    sock = os.path.join(state, "ipam.sock")
    proc = start_daemon(state, args)
    log: list[bytes] = []
    try:
        wait_ready(sock, proc, args.clients, log)
        asyncio.run(Soak(sock, warmup, args.clients).run())
        time.sleep(0.5)
        start = {"rss": rss_kb(proc.pid), "fds": fd_count(proc.pid), "pool": status(sock)}
        print(f"soak: start {start}", file=sys.stderr, flush=True)
        soak = Soak(sock, args.pairs, args.clients)
        elapsed = asyncio.run(run_soak(soak))
        drain(proc, log)
        time.sleep(max(1.0, 2 * args.policy_interval))  # let the policy pass settle
        end = {"rss": rss_kb(proc.pid), "fds": fd_count(proc.pid), "pool": status(sock)}
        print(f"soak: end {end}", file=sys.stderr, flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        drain(proc, log)
    with open(os.path.join(state, "ipam.json")) as f:
        checkpoint = json.load(f)
    if not args.dir:
        shutil.rmtree(state, ignore_errors=True)

    if end["pool"].get("assigned") != 0:
        soak.violation(f"{end['pool'].get('assigned')} addresses still assigned at the end")
    if checkpoint.get("allocations"):
        soak.violation(f"{len(checkpoint['allocations'])} allocations left in the checkpoint")
    if end["fds"] > start["fds"] + FD_SLACK:
        soak.violation(f"file descriptors grew from {start['fds']} to {end['fds']}")
    if soak.live:
        soak.violation(f"{len(soak.live)} addresses never released")
    if code != 0:
        soak.violation(f"daemon exit code {code}")
    first, last = tenth(soak.latencies, False), tenth(soak.latencies, True)
    result = {
        "benchmark": "soak",
        "soak_pairs": soak.done,
        "clients": args.clients,
        "invariant_violations": soak.violations,
        "errors": soak.errors,
        "pairs_per_s": round(soak.done / elapsed, 1),
        "seconds": round(elapsed, 1),
        "rss_start_kb": start["rss"],
        "rss_end_kb": end["rss"],
        "rss_growth_ratio": round(end["rss"] / start["rss"], 3),
        "fds_start": start["fds"],
        "fds_end": end["fds"],
        "assigned_start": start["pool"].get("assigned"),
        "assigned_end": end["pool"].get("assigned"),
        "pool_total_end": end["pool"].get("total"),
        "p50_first_ms": round(first["p50"], 3),
        "p50_last_ms": round(last["p50"], 3),
        "p99_first_ms": round(first["p99"], 3),
        "p99_last_ms": round(last["p99"], 3),
        "p50_drift_ratio": round(last["p50"] / first["p50"], 3),
        "p99_drift_ratio": round(last["p99"] / first["p99"], 3),
        "daemon_exit": code,
        "daemon_warnings": sum(c.count(b"\n") for c in log),
        "error_samples": soak.error_samples,
        "violation_samples": soak.violation_samples,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
