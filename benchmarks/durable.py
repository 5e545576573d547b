"""What an acknowledged change costs on disk: release+assign pairs, each change durable.

Four measurements, in one run, on one disk (a fresh directory under /tmp, ``--dir`` to change):

* **single client** (in process, as issue 14 measured upstream): an :class:`~ipamcore.ipam.Ipam`
  with 100 pods live on an 8 x 29 address pool, cooldown 0, and the checkpoint store
  (``--store journal``, the default, or ``json``: the full-rewrite store). A pair releases the
  oldest pod, saves, assigns a new pod, saves; each ``save`` completes before the next
  change. As in the daemon, each save hands the journal only the change (the keys and
  addresses touched, tracked by :class:`ipamcore.checkpoint.ChangeTracker`, read back from
  the ``Ipam``); the json store rewrites the whole checkpoint. Blocks of pairs alternate
  with blocks of the **floor**: one ``fdatasync``'d append of the journal's mean record
  size to a preallocated file (what one durable change must cost at least), and with
  blocks of the same pairs on a second ``Ipam`` whose commits append a fixed record of
  that size and encode nothing (:class:`NullStore`: the ceiling no store can pass with
  this core, ``null_store_vs_floor``). pairs/s and the floor are the medians over the
  blocks.
* **through the socket**, 1, 8 and 64 concurrent clients: a real daemon
  (``adapters.ipamd.main``, fake cloud and datapath, ``IP_COOLDOWN_PERIOD=0``) with 100 pods
  live; each client repeats DEL of its oldest pod then ADD of a new one, one connection per
  request as the plugin does.

fsyncs are counted, not assumed: ``os.fsync`` and ``os.fdatasync`` are wrapped with a counter
in this process and, for the daemon, in a wrapper that starts it (the count lives in a
shared file both read). CPU per pair is this process's CPU time (all threads) for the
single client, the daemon's (from /proc) through the socket.

The last line of output is one JSON object (``single_client_pairs_per_s``,
``single_client_fsyncs_per_pair``, ``floor_one_fsync_pairs_per_s``, ``clients_64_pairs_per_s``,
``clients_64_pairs_per_fsync``, and the rest). Goals (issue 14): single client >= 80% of the
floor, 64 clients >= 10 pairs per fsync.

    python benchmarks/durable.py [--seconds 2] [--repeats 3] [--store journal|json] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import mmap
import os
import runpy
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

COUNTER = struct.Struct("<QQ")  # fsync, fdatasync


class Counted:
    """Wraps os.fsync and os.fdatasync with counters kept in ``path`` (mmap'd)."""

    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(bytes(COUNTER.size))
        self._file = open(path, "r+b")  # noqa: SIM115
        self.mm = mmap.mmap(self._file.fileno(), COUNTER.size)

    def install(self) -> None:
        real_fsync, real_fdatasync, mm = os.fsync, os.fdatasync, self.mm

        def fsync(fd: Any) -> None:
            real_fsync(fd)
            a, b = COUNTER.unpack_from(mm)
            COUNTER.pack_into(mm, 0, a + 1, b)

        def fdatasync(fd: Any) -> None:
            real_fdatasync(fd)
            a, b = COUNTER.unpack_from(mm)
            COUNTER.pack_into(mm, 0, a, b + 1)

        os.fsync, os.fdatasync = fsync, fdatasync  # type: ignore[assignment]

    def total(self) -> int:
        a, b = COUNTER.unpack_from(self.mm)
        return int(a + b)


# ----------------------------------------------------------------- single client (in process)


def build_ipam() -> Any:
    from ipamcore.config import PoolConfig
    from ipamcore.ipam import Ipam
    from ipamcore.limits import InstanceLimits
    from ipamcore.model import ObservedEni

    limits = InstanceLimits("bench.node", max_enis=8, ipv4_per_eni=30)
    observed = [
        ObservedEni(
            eni_id=f"eni-{e}",
            mac=f"02:00:00:00:00:{e:02x}",
            device_index=e,
            subnet_id="subnet-bench",
            subnet_cidr="10.0.0.0/16",
            primary_ip=f"10.0.{e}.1",
            is_primary=e == 0,
            ipv4_addresses=tuple(f"10.0.{e}.{a}" for a in range(2, 31)),
        )
        for e in range(8)
    ]
    ipam = Ipam(PoolConfig(cooldown_s=0.0), limits)
    ipam.load(observed, 0.0)
    return ipam


def make_store(kind: str, path: str) -> Any:
    from backends.checkpoint import JournalCheckpointStore, JsonFileCheckpointStore

    if kind == "json":
        return JsonFileCheckpointStore(path)
    return JournalCheckpointStore(path)


def floor_block(path: str, size: int, n: int) -> float:
    """Seconds per fdatasync'd append of ``size`` bytes (preallocated file, as the journal)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < 4 << 20:
            os.pwrite(fd, bytes(4 << 20), 0)
            os.fsync(fd)
        record = b"r" * size
        began = time.perf_counter()
        off = 0
        for _ in range(n):
            os.pwrite(fd, record, off)
            os.fdatasync(fd)
            off = (off + size) % ((4 << 20) - size)
        return (time.perf_counter() - began) / n
    finally:
        os.close(fd)


class NullStore:
    """What no store can beat with this core: each change costs one append of a fixed
    record of ``size`` bytes (nothing encoded), ``fdatasync``-ed when it adds, as the
    journal's commits are. Its pairs per second against the floor is the ceiling of the
    single-client ratio on this machine: the rest of the gap is the core's release, assign
    and change tracking, and the loop (issue 14)."""

    def __init__(self, path: str, size: int) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(self.fd, bytes(4 << 20), 0)
        os.fsync(self.fd)
        self.record, self.off = b"r" * size, 0

    async def commit(self, change: Any, snapshot: Any) -> None:
        size = len(self.record)
        os.pwrite(self.fd, self.record, self.off)
        self.off = (self.off + size) % ((4 << 20) - size)
        if change is not None and change.put:
            os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class Pairs:
    """Release+assign pairs on an :class:`~ipamcore.ipam.Ipam` with 100 pods live, each
    change committed (as the daemon's node does: the change the keys and addresses it
    touched make, :class:`ipamcore.checkpoint.ChangeTracker`) before the next."""

    def __init__(self, commit: Any) -> None:
        from ipamcore.checkpoint import ChangeTracker

        self.ipam = build_ipam()
        self.live: collections.deque[Any] = collections.deque()
        self.serial = 0
        for _ in range(100):
            key, pod = self.new_key()
            self.ipam.assign(key, pod, 0.0)
            self.live.append(key)
        self.tracker, self.netns, self.commit = ChangeTracker(), {}, commit

    def new_key(self) -> tuple[Any, Any]:
        from ipamcore.model import AllocationKey, PodRef

        self.serial += 1
        n = self.serial
        return AllocationKey("aws-cni", f"{n:064x}", "eth0"), PodRef("bench", f"p-{n}")

    async def save(self) -> None:
        await self.commit(self.tracker.cut(self.ipam, self.netns), self.ipam.checkpoint)

    async def run(self, n: int) -> None:
        ipam, tracker, live = self.ipam, self.tracker, self.live
        for _ in range(n):
            key = live.popleft()
            tracker.touch(key, ipam.release(key, 1.0))
            await self.save()
            key, pod = self.new_key()
            tracker.touch(key, ipam.assign(key, pod, 1.0))
            live.append(key)
            await self.save()


async def single_client(
    directory: str, kind: str, counted: Counted, seconds: float, repeats: int
) -> dict[str, Any]:
    store = make_store(kind, os.path.join(directory, "ipam.json"))
    await store.load()
    commit = getattr(store, "commit", None)

    async def save_whole(_change: Any, snapshot: Any) -> None:
        await store.save(snapshot())  # (a store without changes rewrites the whole checkpoint)

    pairs = Pairs(commit or save_whole)
    await store.save(pairs.ipam.checkpoint())
    pairs.tracker.cut(pairs.ipam, pairs.netns)  # (the next cut is a change)
    await pairs.run(200)  # warm-up (also tells the record size)
    record = 400
    if kind == "journal" and store.records:
        record = max(64, store.bytes_appended // store.records)
    floor_path = os.path.join(directory, "floor.journal")
    floor_block(floor_path, record, 50)
    null = NullStore(os.path.join(directory, "null.journal"), record)
    null_pairs = Pairs(null.commit)
    null_pairs.tracker.cut(null_pairs.ipam, null_pairs.netns)
    await null_pairs.run(200)
    rates, floors, nulls, cpu, fsyncs, done = [], [], [], 0.0, 0, 0
    block = 300
    deadline = time.perf_counter() + seconds * repeats
    gc.collect()
    while time.perf_counter() < deadline or len(rates) < 3:
        f0, c0, t0 = counted.total(), time.process_time(), time.perf_counter()
        await pairs.run(block)
        t1, c1, f1 = time.perf_counter(), time.process_time(), counted.total()
        rates.append(block / (t1 - t0))
        cpu += c1 - c0
        fsyncs += f1 - f0
        done += block
        floors.append(1.0 / floor_block(floor_path, record, block))
        t0 = time.perf_counter()
        await null_pairs.run(block)
        nulls.append(block / (time.perf_counter() - t0))
    null.close()
    if hasattr(store, "close"):
        store.close()
    floor = statistics.median(floors)
    return {
        "store": kind,
        "single_client_pairs_per_s": round(statistics.median(rates), 1),
        "single_client_pairs_per_s_blocks": [round(r) for r in rates],
        "single_client_fsyncs_per_pair": round(fsyncs / done, 3),
        "single_client_cpu_ms_per_pair": round(cpu * 1000 / done, 3),
        "floor_record_bytes": record,
        "floor_one_fsync_pairs_per_s": round(floor, 1),
        "single_client_vs_floor": round(statistics.median(rates) / floor, 3),
        "null_store_pairs_per_s": round(statistics.median(nulls), 1),
        "null_store_vs_floor": round(statistics.median(nulls) / floor, 3),
    }


# ----------------------------------------------------------------- through the socket


def start_daemon(state: str, kind: str, counter: str) -> subprocess.Popen[bytes]:
    from adapters.ipamd.settings import state_env

    env = {
        **os.environ,
        "IPAMD_CLOUD": "fake", "IPAMD_DATAPATH": "fake", "IPAMD_FAKE_INSTANCE_TYPE": "c5.4xlarge",
        "WARM_IP_TARGET": "100", "IP_COOLDOWN_PERIOD": "0",
        **state_env(state),
        "INTROSPECTION_BIND_ADDRESS": "127.0.0.1:0", "METRICS_BIND_ADDRESS": "127.0.0.1:0",
        "AWS_VPC_K8S_CNI_LOGLEVEL": "WARN", "IPAMD_LOG_FORMAT": "json",
        "IPAMD_CHECKPOINT_JOURNAL": "true" if kind == "journal" else "false",
    }  # fmt: skip
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--counting-daemon", counter],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def socket_levels(
    state: str, kind: str, seconds: float, repeats: int, levels: tuple[int, ...]
) -> dict[str, Any]:
    from adapters import protocol as p

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from rpc import cpu_seconds, rpc, wait_ready  # benchmarks/rpc.py

    counter = os.path.join(state, "fsync.count")
    counted = Counted(counter)
    proc = start_daemon(state, kind, counter)
    sock = os.path.join(state, "ipam.sock")
    result: dict[str, Any] = {}
    serial = 0

    def request(op: str, n: int) -> bytes:
        req = p.Request(
            op, network_name="aws-cni", container_id=f"bench{n:08d}", if_name="eth0",
            netns=f"/var/run/netns/bench-{n}", pod_namespace="bench", pod_name=f"pod-{n}",
        )  # fmt: skip
        return p.encode_request(req)

    async def client(owned: collections.deque[int], until: float, count: list[int]) -> None:
        nonlocal serial
        loop = asyncio.get_running_loop()
        while time.perf_counter() < until:
            reply = await rpc(loop, sock, request(p.OP_DEL, owned.popleft()))
            if not reply.ok:
                raise SystemExit(f"DEL failed: {reply.error_code} {reply.error_message}")
            serial += 1
            n = serial
            reply = await rpc(loop, sock, request(p.OP_ADD, n))
            if not reply.ok:
                raise SystemExit(f"ADD failed: {reply.error_code} {reply.error_message}")
            owned.append(n)
            count[0] += 1

    try:
        wait_ready(sock, proc, 100)

        async def fill() -> list[int]:
            nonlocal serial
            loop = asyncio.get_running_loop()
            keys = []
            for _ in range(100):
                serial += 1
                reply = await rpc(loop, sock, request(p.OP_ADD, serial))
                if not reply.ok:
                    raise SystemExit(f"ADD failed: {reply.error_message}")
                keys.append(serial)
            return keys

        live = asyncio.run(fill())
        for clients in levels:
            owned = [collections.deque(live[c::clients]) for c in range(clients)]

            async def run(secs: float) -> int:
                count = [0]
                until = time.perf_counter() + secs
                await asyncio.gather(*(client(o, until, count) for o in owned))  # noqa: B023
                return count[0]

            asyncio.run(run(min(0.5, seconds)))  # warm-up
            rates, pairs, fsyncs, cpu = [], 0, 0, 0.0
            for _ in range(repeats):
                f0, c0, t0 = counted.total(), cpu_seconds(proc.pid), time.perf_counter()
                n = asyncio.run(run(seconds))
                t1, c1, f1 = time.perf_counter(), cpu_seconds(proc.pid), counted.total()
                rates.append(n / (t1 - t0))
                pairs += n
                fsyncs += f1 - f0
                cpu += c1 - c0
            live = [k for o in owned for k in o]
            name = f"clients_{clients}"
            result[f"{name}_pairs_per_s"] = round(statistics.median(rates), 1)
            result[f"{name}_pairs_per_s_runs"] = [round(r) for r in rates]
            result[f"{name}_fsyncs_per_pair"] = round(fsyncs / max(1, pairs), 3)
            result[f"{name}_pairs_per_fsync"] = round(pairs / max(1, fsyncs), 2)
            result[f"{name}_daemon_cpu_ms_per_pair"] = round(cpu * 1000 / max(1, pairs), 3)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return result


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--counting-daemon":
        Counted(sys.argv[2]).install()
        sys.argv = [sys.argv[0]]
        runpy.run_module("adapters.ipamd.main", run_name="__main__")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", choices=("journal", "json"), default="journal")
    parser.add_argument("--levels", default="1,8,64")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="durable-bench-", dir=args.dir)
    try:
        counted = Counted(os.path.join(directory, "self.count"))
        counted.install()
        single_dir = os.path.join(directory, "single")
        os.mkdir(single_dir)
        result = asyncio.run(
            single_client(single_dir, args.store, counted, args.seconds, args.repeats)
        )
        print(
            f"single client ({args.store}): {result['single_client_pairs_per_s']} pairs/s, "
            f"{result['single_client_fsyncs_per_pair']} fsyncs/pair, "
            f"{result['single_client_cpu_ms_per_pair']} ms CPU/pair; floor (one fdatasync'd "
            f"{result['floor_record_bytes']}-byte append) "
            f"{result['floor_one_fsync_pairs_per_s']}/s; ratio {result['single_client_vs_floor']} "
            f"(a store that encodes nothing: {result['null_store_vs_floor']})"
        )
        state = os.path.join(directory, "daemon")
        os.mkdir(state)
        levels = tuple(int(x) for x in args.levels.split(","))
        sock = socket_levels(state, args.store, args.seconds, args.repeats, levels)
        for clients in levels:
            name = f"clients_{clients}"
            print(
                f"{clients:>2} clients through the socket: {sock[name + '_pairs_per_s']} pairs/s, "
                f"{sock[name + '_fsyncs_per_pair']} fsyncs/pair "
                f"({sock[name + '_pairs_per_fsync']} pairs/fsync), daemon CPU "
                f"{sock[name + '_daemon_cpu_ms_per_pair']} ms/pair"
            )
        result.update(sock)
        result["load_avg_1m"] = round(os.getloadavg()[0], 2)
        result["goal_single_client_80pct_floor"] = result["single_client_vs_floor"] >= 0.8
        if "clients_64_pairs_per_fsync" in result:
            per_fsync = result["clients_64_pairs_per_fsync"]
            result["goal_64_clients_10_pairs_per_fsync"] = per_fsync >= 10
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
