"""Helper process for the kill test: save checkpoints N, N+1, ... until killed.

Protocol (line based): the parent starts this script with the checkpoint path as argument;
the script imports everything, then reads one line from stdin holding the first sequence
number N (so the parent can start it ahead of time and hide the interpreter's start-up),
prints ``go``, and loops: save :func:`crash_checkpoint` (N), print ``saved N``, N += 1.
"""

from __future__ import annotations

import asyncio
import sys

from backends.checkpoint.jsonfile import JsonFileCheckpointStore
from ipamcore.checkpoint import Checkpoint
from ipamcore.model import Allocation, AllocationKey, PodRef

SEQ_ADDRESS = "198.18.255.255"  # the release entry whose time carries the sequence number


def crash_checkpoint(n: int) -> Checkpoint:
    """Checkpoint number ``n``: distinct content and size (1..80 allocations) for every n."""
    count = 1 + (n * 37) % 80
    allocs = tuple(
        Allocation(
            key=AllocationKey("aws-cni", f"{n:06d}-{i:03d}-" + "f" * 40, "eth0"),
            pod=PodRef("ns", f"pod-{n}-{i}"),
            ipv4=f"10.{n % 200}.{i // 250}.{i % 250 + 1}",
            ipv6=None,
            allocated_at=1_700_000_000 + n + i * 0.5,  # exact through ns
        )
        for i in range(count)
    )
    return Checkpoint(allocations=allocs, released_at=((SEQ_ADDRESS, float(n)),))


def sequence_of(cp: Checkpoint) -> int:
    """The ``n`` of a checkpoint made by :func:`crash_checkpoint`."""
    for address, at in cp.released_at:
        if address == SEQ_ADDRESS:
            return int(at)
    raise ValueError("not a crash-test checkpoint")


async def _run(path: str, start: int) -> None:
    store = JsonFileCheckpointStore(path)
    out = sys.stdout
    out.write("go\n")
    out.flush()
    n = start
    while True:
        await store.save(crash_checkpoint(n))
        out.write(f"saved {n}\n")
        out.flush()
        n += 1


def main() -> None:
    path = sys.argv[1]
    line = sys.stdin.readline()
    if not line.strip():
        return  # the parent did not need this spare writer
    asyncio.run(_run(path, int(line)))


if __name__ == "__main__":
    main()
