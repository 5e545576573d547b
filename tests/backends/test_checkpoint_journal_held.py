"""JournalCheckpointStore: a commit that only releases is held in memory and goes out with
the next record (one write and one fdatasync for a DEL and the ADD after it). What must hold:
the record replays to the state whatever the changes it nets (the same address released and
assigned again, the same key removed and put again); a record cut anywhere loses both
changes or keeps both; a held release reaches the disk at the flush, the orderly stop and
close; a crash while one is held loses only it (the restart check's part:
tests/reliability/test_journal_crash.py)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from backends.checkpoint import JournalCheckpointStore
from backends.checkpoint.journal import RECORD_HEADER, parse_journal
from backends.checkpoint.journal_records import State, apply_change, apply_record, state_of
from ipamcore.checkpoint import Checkpoint, CheckpointChange, decode
from ipamcore.model import Allocation
from tests.backends.test_checkpoint_journal import NOW, Scheduler, cp_with, journal_store
from tests.contract.checkpoint_contract import alloc

K1 = alloc("k1", "10.0.0.1", at=NOW - 10)
K2 = alloc("k2", "10.0.0.1", at=NOW)  # the same address again (cooldown 0)
OTHER = alloc("other", "10.0.0.9", at=NOW - 20)


async def loaded(path: Path) -> Checkpoint | None:
    probe = journal_store(path)
    try:
        return await probe.load()
    finally:
        probe.close()


async def release_then_assign_same_address(
    tmp_path: Path,
) -> tuple[Path, JournalCheckpointStore, int]:
    """K1 holds 10.0.0.1; DEL K1 (held), then ADD K2 on 10.0.0.1. Returns the store and
    the offset of the one record both went out in."""
    path = tmp_path / "ipam.json"
    later = Scheduler()
    store = journal_store(path, call_later=later)
    await store.load()
    await store.commit(None, lambda: cp_with(OTHER, K1))
    syncs, records, start = store.syncs, store.records, store._off
    release = CheckpointChange(removed=(K1.key,), released=(("10.0.0.1", NOW),))
    await store.commit(release, lambda: cp_with(OTHER, released=(("10.0.0.1", NOW),)))
    assert (store.syncs, store.records, store._off) == (syncs, records, start)  # held
    assert [d for d, _ in later.due] == [store.hold_releases_s]
    assign = CheckpointChange(put=((K2, ""),), unreleased=("10.0.0.1",))
    await store.commit(assign, lambda: cp_with(OTHER, K2))
    assert (store.syncs, store.records) == (syncs + 1, records + 1)  # one record, one sync
    assert store.synced_to == store._off
    return path, store, start


async def test_a_release_and_the_assign_of_its_address_are_one_record(tmp_path: Path) -> None:
    path, store, _start = await release_then_assign_same_address(tmp_path)
    records, _end = parse_journal((tmp_path / "ipam.json.journal").read_bytes())
    payload = json.loads(records[-1][1])
    assert payload["del"] == [list(K1.key)]
    assert [e["ipv4"] for e in payload["put"]] == ["10.0.0.1"]
    assert "rel" not in payload  # released and assigned again: only the last value goes out
    assert await loaded(path) == cp_with(OTHER, K2)
    store.close()


async def test_a_coalesced_record_cut_anywhere_keeps_both_changes_or_neither(
    tmp_path: Path,
) -> None:
    """A torn write of the record (a crash before its fdatasync returned; the ADD was not
    acknowledged): the load drops it whole, so the address is K1's (the DEL is lost, which
    the restart check makes good) and never K1's and K2's at once."""
    path, store, start = await release_then_assign_same_address(tmp_path / "live")
    store.close()
    journal = (path.parent / "ipam.json.journal").read_bytes()
    _records, end = parse_journal(journal)
    assert end - start > RECORD_HEADER.size
    for cut in range(start, end + 1):
        crashed = tmp_path / f"cut-{cut}"
        crashed.mkdir()
        shutil.copy(path, crashed / "ipam.json")
        torn = journal[:cut] + bytes(len(journal) - cut)
        (crashed / "ipam.json.journal").write_bytes(torn)
        restored = await loaded(crashed / "ipam.json")
        assert restored == (cp_with(OTHER, K2) if cut == end else cp_with(OTHER, K1)), cut
        shutil.rmtree(crashed)


async def test_a_held_release_is_written_at_its_flush_unsynced(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    later = Scheduler()
    store = journal_store(path, call_later=later)
    await store.load()
    await store.commit(None, lambda: cp_with(OTHER, K1))
    syncs = store.syncs
    release = CheckpointChange(removed=(K1.key,), released=(("10.0.0.1", NOW),))
    await store.commit(release, lambda: cp_with(OTHER, released=(("10.0.0.1", NOW),)))
    await store.commit(release, lambda: cp_with(OTHER, released=(("10.0.0.1", NOW),)))
    assert len(later.due) == 1  # one flush however many releases
    assert await loaded(path) == cp_with(OTHER, K1)  # not on disk yet
    assert later.run() == store.hold_releases_s
    assert store.syncs == syncs and store.synced_to < store._off  # page cache, as any DEL
    assert await loaded(path) == cp_with(OTHER, released=(("10.0.0.1", NOW),))
    store.close()


@pytest.mark.parametrize("how", ["compact", "close"])
async def test_the_orderly_stop_and_close_write_a_held_release(tmp_path: Path, how: str) -> None:
    path = tmp_path / "ipam.json"
    store = journal_store(path, call_later=Scheduler())
    await store.load()
    await store.commit(None, lambda: cp_with(OTHER, K1))
    release = CheckpointChange(removed=(K1.key,), released=(("10.0.0.1", NOW),))
    after = cp_with(OTHER, released=(("10.0.0.1", NOW),))
    await store.commit(release, lambda: after)
    if how == "compact":
        await store.compact()
        assert decode(path.read_bytes()) == after  # ipam.json itself: upstream reads it
    store.close()
    assert await loaded(path) == after


async def test_a_barrier_commit_writes_and_syncs_what_is_held(tmp_path: Path) -> None:
    """A commit that changes nothing (an ADD repeated) makes what is held durable."""
    path = tmp_path / "ipam.json"
    store = journal_store(path, call_later=Scheduler())
    await store.load()
    await store.commit(None, lambda: cp_with(OTHER, K1))
    syncs = store.syncs
    release = CheckpointChange(removed=(K1.key,), released=(("10.0.0.1", NOW),))
    await store.commit(release, lambda: cp_with(OTHER))
    await store.commit(CheckpointChange(put=((OTHER, ""),)), lambda: cp_with(OTHER))
    assert store.syncs == syncs + 1 and store.synced_to == store._off
    assert await loaded(path) == cp_with(OTHER, released=(("10.0.0.1", NOW),))
    store.close()


def test_hold_releases_s_0_writes_a_release_at_once(tmp_path: Path) -> None:
    import asyncio

    async def run() -> None:
        path = tmp_path / "ipam.json"
        store = journal_store(path, hold_releases_s=0)
        await store.load()
        await store.commit(None, lambda: cp_with(OTHER, K1))
        syncs, off = store.syncs, store._off
        release = CheckpointChange(removed=(K1.key,), released=(("10.0.0.1", NOW),))
        await store.commit(release, lambda: cp_with(OTHER))
        assert store.syncs == syncs and store._off > off  # written, not synced
        store.close()

    asyncio.run(run())


# ---------------------------------------------------------------- netting, at random

KEYS = [alloc(f"c{n}", f"10.0.1.{n}").key for n in range(3)]
ADDRESSES = ["10.0.2.1", "10.0.2.2", "10.0.2.3"]


def random_change(rnd: random.Random, step: int) -> CheckpointChange:
    """A change over a small universe, so the same key is removed and put again and the
    same address released and unreleased within one record."""
    put, removed, released, unreleased = [], [], [], []
    for key in rnd.sample(KEYS, rnd.randint(0, 2)):
        if rnd.random() < 0.5:
            a = Allocation(key, alloc("x").pod, rnd.choice(ADDRESSES), None, NOW + step)
            put.append((a, rnd.choice(["", f"/var/run/netns/{step}"])))
        else:
            removed.append(key)
    for address in rnd.sample(ADDRESSES, rnd.randint(0, 2)):
        if rnd.random() < 0.5:
            released.append((address, NOW + step + rnd.random()))
        else:
            unreleased.append(address)
    return CheckpointChange(tuple(put), tuple(removed), tuple(released), tuple(unreleased))


def same(a: State, b: State) -> bool:
    return {k: js for k, (_f, js) in a.allocs.items()} == {
        k: js for k, (_f, js) in b.allocs.items()
    } and {x: js for x, (_t, js) in a.released.items()} == {
        x: js for x, (_t, js) in b.released.items()
    }


@pytest.mark.parametrize("seed", range(40))
def test_records_of_netted_changes_replay_to_the_state(seed: int) -> None:
    """Changes applied to the live state and taken into records at random points: replaying
    the records in order gives the live state at every record, and replaying the last one
    again (a record rewritten after a fold that holds it) changes nothing."""
    rnd = random.Random(seed)
    start = cp_with(alloc("c0", "10.0.1.0"), released=(("10.0.2.3", NOW - 5),))
    live, replayed = state_of(start), state_of(start)
    last: bytes | None = None
    for step in range(60):
        apply_change(live, random_change(rnd, step))
        if rnd.random() < 0.35:
            payload = live.take()
            if payload is not None:
                apply_record(replayed, payload)
                last = payload
                assert same(live, replayed), step
    payload = live.take()
    if payload is not None:
        apply_record(replayed, payload)
        last = payload
    assert same(live, replayed)
    assert last is not None
    apply_record(replayed, last)
    assert same(live, replayed)
    assert not live.holds_changes and live.take() is None


def test_a_key_removed_and_put_again_in_one_record_keeps_the_new_allocation() -> None:
    """A sandbox recreated under the same name: DEL (held), then ADD of the same key with
    another address; the record carries the key's removal and its new entry."""
    old = alloc("same", "10.0.0.5", at=NOW - 30)
    new = old._replace(ipv4="10.0.0.6", allocated_at=NOW)
    live = state_of(cp_with(old))
    replayed = state_of(cp_with(old))
    apply_change(live, CheckpointChange(removed=(old.key,), released=(("10.0.0.5", NOW),)))
    apply_change(live, CheckpointChange(put=((new, ""),)))
    payload = live.take()
    assert payload is not None
    assert set(json.loads(payload)) == {"del", "put", "rel"}
    apply_record(replayed, payload)
    assert same(live, replayed)
    assert [js for _f, js in replayed.allocs.values()] == [live.allocs[new.key][1]]
