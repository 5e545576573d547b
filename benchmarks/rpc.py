"""ADD+DEL pairs through vpc-ipamd's socket, with 1, 8 and 64 concurrent clients.

The daemon runs as a subprocess (``python -m adapters.ipamd.main``) with the fake cloud
(``IPAMD_CLOUD=fake``, c5.4xlarge), the fake datapath and a real, durable checkpoint file
(fsync'd JSON in a fresh directory under /tmp, ``--dir`` to change). Clients are asyncio
streams in this process speaking the protocol (``encode_request`` / ``decode_reply``); each
client repeats ADD then DEL of its own pod. ``IP_COOLDOWN_PERIOD=0`` so a released address
can be reused at once (with upstream's 30 s the pool, not the RPC path, would be measured).

Per concurrency level: pairs/s, and p50/p99 of one pair (ADD + DEL) in milliseconds. The last
line of output is one JSON object.

    python benchmarks/rpc.py [--seconds 3] [--dir DIR]
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

LEVELS = (1, 8, 64)


def start_daemon(state: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "IPAMD_CLOUD": "fake", "IPAMD_DATAPATH": "fake", "IPAMD_FAKE_INSTANCE_TYPE": "c5.4xlarge",
        "WARM_IP_TARGET": "100", "IP_COOLDOWN_PERIOD": "0",
        "AWS_VPC_K8S_CNI_BACKING_STORE": os.path.join(state, "ipam.json"),
        "IPAMD_SOCKET": os.path.join(state, "ipam.sock"),
        "IPAMD_PENDING_DEL_DIR": os.path.join(state, "pending"),
        "INTROSPECTION_BIND_ADDRESS": "127.0.0.1:0", "METRICS_BIND_ADDRESS": "127.0.0.1:0",
        "AWS_VPC_K8S_CNI_LOGLEVEL": "WARN", "IPAMD_LOG_FORMAT": "json",
    }  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, *os.environ.get("BENCH_DAEMON", "-m adapters.ipamd.main").split()],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    return proc


def wait_ready(sock: str, proc: subprocess.Popen[bytes], need: int, timeout: float = 30) -> None:
    """Until STATUS answers with at least ``need`` available addresses."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise SystemExit(f"daemon exited: {proc.stderr.read()[-2000:]!r}")
        try:
            reply = p.request(sock, p.Request(p.OP_STATUS, network_name="aws-cni"), 2)
            if reply.ok and (reply.result or {}).get("available", 0) >= need:
                return
        except p.ProtocolError:
            pass
        assert proc.stderr is not None
        if select.select([proc.stderr], [], [], 0.05)[0]:
            os.read(proc.stderr.fileno(), 65536)  # keep the pipe drained
    raise SystemExit("daemon not ready in time")


async def rpc(sock: str, data: bytes) -> p.Reply:
    reader, writer = await asyncio.open_unix_connection(sock)
    try:
        writer.write(data)
        await writer.drain()
        return p.decode_reply(await reader.readuntil(b"\n"))
    finally:
        writer.close()


async def client(sock: str, n: int, until: float, latencies: list[float]) -> None:
    add = p.encode_request(
        p.Request(p.OP_ADD, network_name="aws-cni", container_id=f"bench{n:04d}",
                  if_name="eth0", netns=f"/var/run/netns/bench-{n}",
                  pod_namespace="bench", pod_name=f"pod-{n}")
    )  # fmt: skip
    delete = p.encode_request(
        p.Request(p.OP_DEL, network_name="aws-cni", container_id=f"bench{n:04d}",
                  if_name="eth0", netns=f"/var/run/netns/bench-{n}")
    )  # fmt: skip
    while time.perf_counter() < until:
        began = time.perf_counter()
        reply = await rpc(sock, add)
        if not reply.ok:
            raise SystemExit(f"ADD failed: {reply.error_code} {reply.error_message}")
        reply = await rpc(sock, delete)
        if not reply.ok:
            raise SystemExit(f"DEL failed: {reply.error_code} {reply.error_message}")
        latencies.append(time.perf_counter() - began)


async def level(sock: str, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    began = time.perf_counter()
    until = began + seconds
    await asyncio.gather(*(client(sock, n, until, latencies) for n in range(clients)))
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "pairs": len(ordered),
        "pairs_per_s": round(len(ordered) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per concurrency level")
    parser.add_argument("--dir", default="", help="state directory (default: a fresh one)")
    args = parser.parse_args()
    state = args.dir or tempfile.mkdtemp(prefix="ipamd-bench-", dir="/tmp")
    sock = os.path.join(state, "ipam.sock")
    proc = start_daemon(state)
    results = []
    try:
        wait_ready(sock, proc, need=max(LEVELS))
        for clients in LEVELS:
            asyncio.run(level(sock, clients, min(0.5, args.seconds)))  # warm-up
            result = asyncio.run(level(sock, clients, args.seconds))
            results.append(result)
            print(f"{clients:3d} clients: {result['pairs_per_s']:8.1f} pairs/s  "
                  f"p50 {result['p50_ms']:.3f} ms  p99 {result['p99_ms']:.3f} ms")  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        if not args.dir:
            shutil.rmtree(state, ignore_errors=True)
    print(json.dumps({"benchmark": "rpc", "durable_checkpoint": True, "daemon_exit": code,
                      "levels": results}))  # fmt: skip


if __name__ == "__main__":
    main()
