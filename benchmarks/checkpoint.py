"""Durable write latency of the JSON checkpoint store against the disk's fsync floor.

For checkpoints of 1, 100 and 1,000 allocations it measures the p50 of
``JsonFileCheckpointStore.save`` (encode + temp file + fsync + rename + directory fsync,
through aiofiles' thread hops) and, interleaved write by write in the same run and the same
directory, the floor: the same bytes written with plain ``os`` calls (open, write, fsync,
close, rename, fsync of the directory). The ratio says what the store costs over the disk.

The directory defaults to a fresh temporary directory under /tmp (``--dir`` to change it);
put it on the filesystem that holds /var/run/aws-node for numbers that mean something.
The last line of output is one JSON object.

    python benchmarks/checkpoint.py [--writes 200] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time

from backends.checkpoint.jsonfile import JsonFileCheckpointStore
from ipamcore.checkpoint import Checkpoint, encode
from ipamcore.model import Allocation, AllocationKey, PodRef

SIZES = (1, 100, 1000)


def make_checkpoint(n: int) -> Checkpoint:
    allocs = tuple(
        Allocation(
            key=AllocationKey("aws-cni", f"{i:064x}", "eth0"),
            pod=PodRef("default", f"deployment-{i}-5d8f7c9b4-x2k7q"),
            ipv4=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
            ipv6=None,
            allocated_at=1_700_000_000 + i,
        )
        for i in range(n)
    )
    released = tuple((f"10.200.{i >> 8 & 255}.{i & 255}", 1_700_000_000.0 + i) for i in range(16))
    return Checkpoint(allocations=allocs, released_at=released)


def floor_write(directory: str, target: str, data: bytes) -> None:
    tmp = os.path.join(directory, ".floor.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 4)


async def run(directory: str, writes: int, warmup: int) -> dict[str, float | int | str]:
    result: dict[str, float | int | str] = {"writes": writes, "dir": directory}
    floor_target = os.path.join(directory, "floor.json")
    for n in SIZES:
        cp = make_checkpoint(n)
        data = encode(cp)
        store = JsonFileCheckpointStore(os.path.join(directory, "ipam.json"))
        store_times: list[float] = []
        floor_times: list[float] = []
        for i in range(warmup + writes):
            t0 = time.perf_counter()
            await store.save(cp)
            t1 = time.perf_counter()
            floor_write(directory, floor_target, data)
            t2 = time.perf_counter()
            if i >= warmup:
                store_times.append(t1 - t0)
                floor_times.append(t2 - t1)
        encode_times = []
        for _ in range(50):
            t0 = time.perf_counter()
            encode(cp)
            encode_times.append(time.perf_counter() - t0)
        result[f"bytes_{n}"] = len(data)
        result[f"p50_ms_{n}"] = ms(store_times)
        result[f"floor_p50_ms_{n}"] = ms(floor_times)
        result[f"encode_p50_ms_{n}"] = ms(encode_times)
        result[f"ratio_{n}_vs_floor"] = round(ms(store_times) / ms(floor_times), 3)
        print(
            f"{n:>5} allocations ({len(data):>7} bytes): store p50 {ms(store_times):8.3f} ms, "
            f"floor p50 {ms(floor_times):8.3f} ms, ratio {result[f'ratio_{n}_vs_floor']:.2f}x "
            f"(encode alone {ms(encode_times):.3f} ms)"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200, help="measured writes per size")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--dir", default=None, help="parent directory (default: /tmp)")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="ckpt-bench-", dir=args.dir)
    try:
        result = asyncio.run(run(directory, args.writes, args.warmup))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
