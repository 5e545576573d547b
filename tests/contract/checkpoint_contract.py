"""The contract of :class:`ipamcore.ports.CheckpointStore`, for every backend.

A backend's test module subclasses :class:`CheckpointStoreContract` (as ``Test...``) and
provides the ``harness`` fixture: a :class:`StoreHarness` giving the store under test, a way
to put raw bytes where the store reads them, to read bytes moved aside, and to "restart"
(a new store over the same storage).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import pytest

from backends.checkpoint.errors import (
    CheckpointMovedAside,
    CorruptCheckpoint,
    UnsupportedCheckpoint,
)
from ipamcore.checkpoint import Checkpoint, encode
from ipamcore.errors import CheckpointError, UnsupportedCheckpointVersion
from ipamcore.model import Allocation, AllocationKey, PodRef
from ipamcore.ports import CheckpointStore


class StoreHarness(Protocol):
    store: CheckpointStore

    def put_raw(self, data: bytes) -> None:
        """Place ``data`` where the store reads its checkpoint."""
        ...

    def read_moved(self, moved_to: str) -> bytes:
        """The bytes of a checkpoint moved aside to ``moved_to``."""
        ...

    def reopen(self) -> CheckpointStore:
        """A store over the same storage, as after a restart of the daemon."""
        ...


def alloc(
    container: str,
    ipv4: str | None = None,
    ipv6: str | None = None,
    at: float = 1_700_000_000.5,  # exact in ns: see the report on ns rounding
    pod: tuple[str, str] = ("default", "web-0"),
    if_name: str = "eth0",
) -> Allocation:
    return Allocation(
        key=AllocationKey(network_name="aws-cni", container_id=container, if_name=if_name),
        pod=PodRef(namespace=pod[0], name=pod[1]),
        ipv4=ipv4,
        ipv6=ipv6,
        allocated_at=at,
    )


def sample_checkpoint(n: int = 3, base: int = 0) -> Checkpoint:
    """A checkpoint with ``n`` allocations (v4, v6 and dual stack) and two release times."""
    allocs = []
    for i in range(n):
        j = base + i
        kind = j % 3
        v4 = f"10.{(j >> 16) & 255}.{(j >> 8) & 255}.{j & 255}" if kind != 1 else None
        v6 = f"2001:db8::{j:x}" if kind != 0 else None
        allocs.append(
            alloc(f"c{j:08x}", v4, v6, at=1_700_000_000 + j * 0.5, pod=("ns", f"pod-{j}"))
        )
    return Checkpoint(
        allocations=tuple(allocs),
        released_at=(("10.9.0.1", 1_700_000_100.0), ("10.9.0.2", 1_700_000_123.5)),
    )


# Written by hand the way upstream's Go daemon (v1.23) marshals CheckpointData: compact,
# ipv6/ipv4 and metadata fields omitted when empty (omitempty), no releasedAddresses,
# timestamps in nanoseconds that are not representable exactly as float seconds.
UPSTREAM_IPAM_JSON = (
    b'{"version":"vpc-cni-ipam/1","allocations":['
    b'{"networkName":"aws-cni","containerID":"3f1c0a9b2e","ifName":"eth0",'
    b'"ipv4":"10.0.1.5","allocationTimestamp":1700000000123456789,'
    b'"metadata":{"k8sPodNamespace":"default","k8sPodName":"web-0"}},'
    b'{"networkName":"aws-cni","containerID":"77aa01","ifName":"eth0",'
    b'"ipv6":"2600:1f14::5","allocationTimestamp":1700000001000000000,'
    b'"metadata":{"k8sPodNamespace":"kube-system","k8sPodName":"coredns-1"}},'
    b'{"networkName":"aws-cni","containerID":"deadbeef","ifName":"eth0",'
    b'"ipv4":"10.0.1.6","allocationTimestamp":1700000002000000000,"metadata":{}}'
    b"]}\n"
)

CORRUPT_DOCUMENTS = {
    "empty": b"",
    "whitespace": b"  \n",
    "garbage": b"\x00\xff not json",
    "truncated": encode(sample_checkpoint(5))[:-7],
    "json-null": b"null",
    "not-an-object": b"[1, 2]",
    "allocations-not-a-list": b'{"version":"vpc-cni-ipam/1","allocations":{}}',
    "duplicate-key": (
        b'{"version":"vpc-cni-ipam/1","allocations":['
        b'{"containerID":"a","ifName":"eth0","ipv4":"10.0.0.1"},'
        b'{"containerID":"a","ifName":"eth0","ipv4":"10.0.0.2"}]}'
    ),
    "no-address": (
        b'{"version":"vpc-cni-ipam/1","allocations":[{"containerID":"a","ifName":"eth0"}]}'
    ),
}


class CheckpointStoreContract:
    """Behaviour every :class:`~ipamcore.ports.CheckpointStore` backend must have."""

    @pytest.fixture
    def harness(self) -> StoreHarness:
        raise NotImplementedError("subclasses provide the harness fixture")

    async def test_missing_checkpoint_loads_as_none(self, harness: StoreHarness) -> None:
        assert await harness.store.load() is None

    async def test_round_trip_allocations_and_release_times(self, harness: StoreHarness) -> None:
        cp = sample_checkpoint(7)
        await harness.store.save(cp)
        assert await harness.store.load() == cp
        assert await harness.reopen().load() == cp

    async def test_round_trip_empty_checkpoint(self, harness: StoreHarness) -> None:
        await harness.store.save(Checkpoint())
        assert await harness.store.load() == Checkpoint()

    async def test_round_trip_unusual_strings(self, harness: StoreHarness) -> None:
        cp = Checkpoint(
            allocations=(
                alloc('c-ü-"quoted"\\', "10.0.0.1", pod=("ns-ä", "pod\n1"), if_name="eth1"),
            ),
            released_at=(),
        )
        await harness.store.save(cp)
        assert await harness.reopen().load() == cp

    async def test_save_replaces(self, harness: StoreHarness) -> None:
        first, second = sample_checkpoint(10), sample_checkpoint(2, base=100)
        await harness.store.save(first)
        await harness.store.save(second)
        assert await harness.store.load() == second
        assert await harness.reopen().load() == second

    async def test_concurrent_saves_latest_wins(self, harness: StoreHarness) -> None:
        cps = [sample_checkpoint(1 + (i * 37) % 50, base=i * 1000) for i in range(12)]
        await asyncio.gather(*(harness.store.save(cp) for cp in cps))
        assert await harness.reopen().load() == cps[-1]

    @pytest.mark.parametrize("name", sorted(CORRUPT_DOCUMENTS))
    async def test_corrupt_content_is_a_typed_error_and_moved_aside(
        self, harness: StoreHarness, name: str
    ) -> None:
        bad = CORRUPT_DOCUMENTS[name]
        harness.put_raw(bad)
        with pytest.raises(CorruptCheckpoint) as info:
            await harness.store.load()
        err = info.value
        assert isinstance(err, CheckpointError)
        assert err.moved_to in str(err)
        assert harness.read_moved(err.moved_to) == bad
        # Not treated as empty and not silently reused: the bad bytes are out of the way.
        assert await harness.store.load() is None

    async def test_save_after_corrupt_checkpoint(self, harness: StoreHarness) -> None:
        harness.put_raw(b"{broken")
        with pytest.raises(CheckpointMovedAside) as info:
            await harness.store.load()
        cp = sample_checkpoint(2)
        await harness.store.save(cp)
        assert await harness.store.load() == cp
        assert harness.read_moved(info.value.moved_to) == b"{broken"

    async def test_future_version_is_unsupported_and_moved_aside(
        self, harness: StoreHarness
    ) -> None:
        future = b'{"version":"vpc-cni-ipam/2","allocations":[],"shards":[1]}'
        harness.put_raw(future)
        with pytest.raises(UnsupportedCheckpoint) as info:
            await harness.store.load()
        err = info.value
        assert isinstance(err, UnsupportedCheckpointVersion)
        assert err.version == "vpc-cni-ipam/2"
        assert harness.read_moved(err.moved_to) == future
        assert await harness.store.load() is None

    async def test_upstream_written_checkpoint_loads(self, harness: StoreHarness) -> None:
        harness.put_raw(UPSTREAM_IPAM_JSON)
        cp = await harness.store.load()
        assert cp is not None
        assert cp.released_at == ()
        by_id = {a.key.container_id: a for a in cp.allocations}
        assert list(by_id) == ["3f1c0a9b2e", "77aa01", "deadbeef"]
        web = by_id["3f1c0a9b2e"]
        assert web.key == AllocationKey("aws-cni", "3f1c0a9b2e", "eth0")
        assert web.pod == PodRef("default", "web-0")
        assert (web.ipv4, web.ipv6) == ("10.0.1.5", None)
        assert web.allocated_at == pytest.approx(1_700_000_000.123456789, abs=1e-6)
        dns = by_id["77aa01"]
        assert (dns.ipv4, dns.ipv6) == (None, "2600:1f14::5")
        assert dns.pod == PodRef("kube-system", "coredns-1")
        assert by_id["deadbeef"].pod == PodRef("", "")
        # What we save back is still readable (and a superset of upstream's document).
        await harness.store.save(cp)
        assert await harness.reopen().load() == cp

    async def test_upstream_null_allocations_loads_as_empty(self, harness: StoreHarness) -> None:
        harness.put_raw(b'{"version":"vpc-cni-ipam/1","allocations":null}')
        assert await harness.store.load() == Checkpoint()
