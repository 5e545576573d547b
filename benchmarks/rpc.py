"""ADD+DEL pairs through vpc-ipamd's socket, with 1, 8 and 64 concurrent clients.

The daemon runs as a subprocess (``python -m adapters.ipamd.main``) with the fake cloud
(``IPAMD_CLOUD=fake``, c5.4xlarge), the fake datapath and a real, durable checkpoint file
(fsync'd JSON in a fresh directory under /tmp, ``--dir`` to change). Clients are coroutines
in this process speaking the protocol (``encode_request`` / ``decode_reply``) over plain
non-blocking sockets (no streams: the figures should be the daemon's), one connection per
request like the plugin; each client repeats ADD then DEL of its own pod. They share the
machine's cores with the daemon. ``IP_COOLDOWN_PERIOD=0`` so a released address can be
reused at once (with upstream's 30 s the pool, not the RPC path, would be measured).

Beside latency, each level reports the daemon's CPU time per pair (all its threads, from
/proc) and this process's, and the disk's price of one durable write sampled meanwhile
(``FsyncFloor``): on a shared machine those say what the wall-clock figures are made of.

Per concurrency level (``--repeats`` runs of ``--seconds`` after a short warm-up): pairs/s
(the median of the runs), and p50/p99 in milliseconds of one pair (ADD then DEL) and of each
request alone (ADD, DEL), over all the runs' samples. The targets (2,000 pairs/s at 64
clients; p50 under 2 ms for one client, read per pair and per request) are checked in the
JSON. The last line of output is one JSON object.

``--flight-recorder off`` runs the daemon without its flight recorder
(``IPAMD_FLIGHT_RECORDER_BYTES=0``; on by default, as in production): run both to read the
recorder's overhead.

    python benchmarks/rpc.py [--seconds 2] [--repeats 3] [--dir DIR] [--flight-recorder off]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from adapters import protocol as p
from adapters.ipamd.settings import state_env

LEVELS = (1, 8, 64)


def start_daemon(state: str, recorder: bool = True) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "IPAMD_CLOUD": "fake", "IPAMD_DATAPATH": "fake", "IPAMD_FAKE_INSTANCE_TYPE": "c5.4xlarge",
        "WARM_IP_TARGET": "100", "IP_COOLDOWN_PERIOD": "0",
        **state_env(state),
        "INTROSPECTION_BIND_ADDRESS": "127.0.0.1:0", "METRICS_BIND_ADDRESS": "127.0.0.1:0",
        "AWS_VPC_K8S_CNI_LOGLEVEL": "WARN", "IPAMD_LOG_FORMAT": "json",
        **({} if recorder else {"IPAMD_FLIGHT_RECORDER_BYTES": "0"}),
    }  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, *os.environ.get("BENCH_DAEMON", "-m adapters.ipamd.main").split()],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FsyncFloor:
    """The disk's price of one durable write, sampled while a level runs: every 20 ms a
    thread writes ``size`` bytes to a temp file in the state directory, fsyncs it, renames it
    and fsyncs the directory, as the checkpoint store does. The disk is shared, so the
    figures of a level are read beside this floor."""

    def __init__(self, directory: str, size: int) -> None:
        self.directory = directory
        self.data = b"x" * max(size, 1)
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FsyncFloor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        tmp, target = (os.path.join(self.directory, n) for n in (".floor.tmp", "floor"))
        while not self._stop.wait(0.02):
            began = time.perf_counter()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, self.data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self.samples.append(time.perf_counter() - began)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)


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


def _connect(sock_path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


async def rpc(loop: asyncio.AbstractEventLoop, sock_path: str, data: bytes) -> p.Reply:
    """One request on a connection of its own (as the plugin does): connect, send, read to
    the newline, close."""
    sock = _connect(sock_path)
    try:
        await loop.sock_connect(sock, sock_path)
        await loop.sock_sendall(sock, data)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            reply += chunk
        return p.decode_reply(reply)
    finally:
        sock.close()


class Samples:
    """Latencies (seconds) of one concurrency level: per pair and per request."""

    def __init__(self) -> None:
        self.pair: list[float] = []
        self.add: list[float] = []
        self.delete: list[float] = []


async def client(sock: str, n: int, until: float, samples: Samples) -> None:
    loop = asyncio.get_running_loop()
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
        reply = await rpc(loop, sock, add)
        if not reply.ok:
            raise SystemExit(f"ADD failed: {reply.error_code} {reply.error_message}")
        added = time.perf_counter()
        reply = await rpc(loop, sock, delete)
        if not reply.ok:
            raise SystemExit(f"DEL failed: {reply.error_code} {reply.error_message}")
        done = time.perf_counter()
        samples.pair.append(done - began)
        samples.add.append(added - began)
        samples.delete.append(done - added)


def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 3)


async def run_level(sock: str, clients: int, seconds: float) -> tuple[float, Samples]:
    """(pairs per second, latencies) of one run of ``seconds``."""
    samples = Samples()
    began = time.perf_counter()
    until = began + seconds
    await asyncio.gather(*(client(sock, n, until, samples) for n in range(clients)))
    return len(samples.pair) / (time.perf_counter() - began), samples


def level(state: str, pid: int, clients: int, seconds: float, repeats: int) -> dict[str, float]:
    """``repeats`` runs: the median of their pairs/s; p50/p99 over all their samples; the
    daemon's (and this client process's) CPU time per pair; the disk's durable-write floor
    meanwhile."""
    sock = os.path.join(state, "ipam.sock")
    asyncio.run(run_level(sock, clients, min(0.5, seconds)))  # warm-up
    size = os.path.getsize(os.path.join(state, "ipam.json"))
    rates: list[float] = []
    merged = Samples()
    cpu_before, client_before = cpu_seconds(pid), time.process_time()
    with FsyncFloor(state, size) as floor:
        for _ in range(repeats):
            rate, samples = asyncio.run(run_level(sock, clients, seconds))
            rates.append(rate)
            merged.pair += samples.pair
            merged.add += samples.add
            merged.delete += samples.delete
    cpu, client_cpu = cpu_seconds(pid) - cpu_before, time.process_time() - client_before
    result: dict[str, float] = {
        "clients": clients,
        "pairs": len(merged.pair),
        "pairs_per_s": round(statistics.median(rates), 1),
        "pairs_per_s_runs": [round(r, 1) for r in rates],  # type: ignore[dict-item]
    }
    for name, values in (("pair", merged.pair), ("add", merged.add), ("del", merged.delete)):
        result[f"{name}_p50_ms"] = percentile_ms(values, 0.5)
        result[f"{name}_p99_ms"] = percentile_ms(values, 0.99)
    result["daemon_cpu_ms_per_pair"] = round(cpu * 1000 / max(1, len(merged.pair)), 3)
    result["client_cpu_ms_per_pair"] = round(client_cpu * 1000 / max(1, len(merged.pair)), 3)
    result["fsync_floor_p50_ms"] = percentile_ms(floor.samples or [0.0], 0.5)
    result["pair_p50_over_two_floors"] = round(
        result["pair_p50_ms"] / max(2 * result["fsync_floor_p50_ms"], 1e-6), 2
    )
    return result


TARGET_PAIRS_PER_S_AT_64 = 2000
TARGET_P50_MS_ONE_CLIENT = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per concurrency level")
    parser.add_argument("--dir", default="", help="state directory (default: a fresh one)")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)),
                        help="concurrent clients per level, comma-separated")  # fmt: skip
    parser.add_argument("--flight-recorder", choices=("on", "off"), default="on",
                        help="the daemon's flight recorder (default %(default)s)")  # fmt: skip
    args = parser.parse_args()
    state = args.dir or tempfile.mkdtemp(prefix="ipamd-bench-", dir="/tmp")
    levels = [int(n) for n in args.levels.split(",")]
    sock = os.path.join(state, "ipam.sock")
    proc = start_daemon(state, recorder=args.flight_recorder == "on")
    results = []
    try:
        wait_ready(sock, proc, need=max(levels))
        for clients in levels:
            result = level(state, proc.pid, clients, args.seconds, args.repeats)
            results.append(result)
            print(f"{clients:3d} clients: {result['pairs_per_s']:8.1f} pairs/s (median of "
                  f"{args.repeats})  p50/p99 ms: pair {result['pair_p50_ms']:.3f}/"
                  f"{result['pair_p99_ms']:.3f}  ADD {result['add_p50_ms']:.3f}/"
                  f"{result['add_p99_ms']:.3f}  DEL {result['del_p50_ms']:.3f}/"
                  f"{result['del_p99_ms']:.3f}  CPU ms/pair daemon "
                  f"{result['daemon_cpu_ms_per_pair']:.3f} client "
                  f"{result['client_cpu_ms_per_pair']:.3f}"
                  f"  fsync floor p50 {result['fsync_floor_p50_ms']:.3f} ms")  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        if not args.dir:
            shutil.rmtree(state, ignore_errors=True)
    by_clients = {r["clients"]: r for r in results}
    one, many = by_clients.get(1), by_clients.get(64)
    targets = {
        "pairs_per_s_at_64": TARGET_PAIRS_PER_S_AT_64,
        "p50_ms_one_client": TARGET_P50_MS_ONE_CLIENT,
        "met_pairs_per_s_at_64": None if many is None
        else many["pairs_per_s"] >= TARGET_PAIRS_PER_S_AT_64,
        "met_p50_per_pair_one_client": None if one is None
        else one["pair_p50_ms"] < TARGET_P50_MS_ONE_CLIENT,
        "met_p50_per_request_one_client": None if one is None
        else max(one["add_p50_ms"], one["del_p50_ms"]) < TARGET_P50_MS_ONE_CLIENT,
    }  # fmt: skip
    print(json.dumps({"benchmark": "rpc", "durable_checkpoint": True, "daemon_exit": code,
                      "flight_recorder": args.flight_recorder,
                      "targets": targets, "levels": results}))  # fmt: skip


if __name__ == "__main__":
    main()
