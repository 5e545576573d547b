"""KeyLocks: one request at a time per allocation key, none between keys, nothing kept
once nobody holds or waits (also after a waiter is cancelled)."""

from __future__ import annotations

import asyncio

import pytest

from adapters.ipamd.agent import KeyLocks
from ipamcore.model import AllocationKey

A = AllocationKey("aws-cni", "a", "eth0")
B = AllocationKey("aws-cni", "b", "eth0")


async def test_same_key_is_exclusive_and_in_arrival_order() -> None:
    locks, order = KeyLocks(), []
    gate = asyncio.Event()

    async def hold(n: int) -> None:
        async with locks.hold(A):
            order.append(f"in {n}")
            await gate.wait()
            order.append(f"out {n}")

    tasks = [asyncio.create_task(hold(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert order == ["in 0"]
    gate.set()
    await asyncio.gather(*tasks)
    assert order == ["in 0", "out 0", "in 1", "out 1", "in 2", "out 2"]
    assert len(locks) == 0


async def test_other_keys_do_not_wait() -> None:
    locks = KeyLocks()
    async with locks.hold(A), locks.hold(B):
        assert len(locks) == 2
    assert len(locks) == 0


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    locks = KeyLocks()
    async with locks.hold(A):
        waiter = asyncio.create_task(locks.hold(A).__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert len(locks) == 0
    async with locks.hold(A):  # and the key can be taken again
        pass


async def test_an_error_inside_releases_the_key() -> None:
    locks = KeyLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold(A):
            raise RuntimeError("boom")
    assert len(locks) == 0
    async with locks.hold(A):
        pass
