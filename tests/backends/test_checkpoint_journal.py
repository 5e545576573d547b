"""JournalCheckpointStore: the checkpoint contract, and what the journal adds (replay, torn
tails, damage, newer versions, another history, one fdatasync per commit, DELs unsynced)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from backends.checkpoint import JournalCheckpointStore, JsonFileCheckpointStore
from backends.checkpoint.errors import CorruptCheckpoint, UnsupportedCheckpoint
from backends.checkpoint.journal import FILE_HEADER, RECORD_HEADER, parse_journal
from ipamcore.checkpoint import Checkpoint, CheckpointChange, decode
from ipamcore.errors import CheckpointError
from ipamcore.ports import CheckpointStore
from tests.contract.checkpoint_contract import (
    UPSTREAM_IPAM_JSON,
    CheckpointStoreContract,
    alloc,
    sample_checkpoint,
)

NOW = 1_700_000_000.75


def fixed_clock() -> float:
    return NOW


def journal_store(path: Path, **kw: object) -> JournalCheckpointStore:
    kw.setdefault("fresh_after_s", 0)  # no timed fold unless a test schedules it itself
    kw.setdefault("hold_releases_s", 0.05)  # these tests cover holding (off by default)
    return JournalCheckpointStore(str(path), clock=fixed_clock, capacity=64 * 1024, **kw)  # type: ignore[arg-type]


class Scheduler:
    """``call_later`` for the store: what it scheduled, run when the test says."""

    def __init__(self) -> None:
        self.due: list[tuple[float, object]] = []

    def __call__(self, delay: float, fn: object) -> object:
        self.due.append((delay, fn))
        return None

    def run(self) -> float:
        delay, fn = self.due.pop(0)
        fn()  # type: ignore[operator]
        return delay


class JournalHarness:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.store: CheckpointStore = journal_store(path)

    def put_raw(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(data)

    def read_moved(self, moved_to: str) -> bytes:
        moved = Path(moved_to)
        assert moved.parent == self.path.parent
        assert moved.name.startswith("ipam.json.corrupt-")
        return moved.read_bytes()

    def reopen(self) -> CheckpointStore:
        return journal_store(self.path)


class TestJournalStoreContract(CheckpointStoreContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> JournalHarness:
        return JournalHarness(tmp_path / "state" / "ipam.json")


def cp_with(*allocs: object, released: tuple[tuple[str, float], ...] = ()) -> Checkpoint:
    return Checkpoint(allocations=tuple(allocs), released_at=released)  # type: ignore[arg-type]


A = alloc("a", "10.0.0.1")
B = alloc("b", "10.0.0.2")
C = alloc("c", "10.0.0.3")


async def test_a_commit_is_one_record_and_one_fdatasync(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    store = journal_store(path)
    assert await store.load() is None
    await store.save(cp_with(A))  # the first save writes ipam.json (no journal to point to)
    before = store.syncs
    await store.save(cp_with(A, B))
    assert store.syncs == before + 1
    assert store.records == 1
    # ipam.json was not rewritten; the journal holds B
    assert decode(path.read_bytes()).allocations == (A,)
    assert await journal_store(path).load() == cp_with(A, B)


async def test_release_only_commit_is_not_synced_and_the_next_add_syncs_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ipam.json"
    store = journal_store(path)
    await store.load()
    await store.save(cp_with(A, B))
    before = store.syncs
    await store.save(cp_with(A, released=(("10.0.0.2", NOW),)))  # DEL of B
    assert store.syncs == before  # acknowledged without an fdatasync
    await store.save(cp_with(A, C, released=(("10.0.0.2", NOW),)))  # ADD of C
    assert store.syncs == before + 1
    assert await journal_store(path).load() == cp_with(A, C, released=(("10.0.0.2", NOW),))


async def test_sync_releases_option_syncs_a_del(tmp_path: Path) -> None:
    store = journal_store(tmp_path / "ipam.json", sync_releases=True)
    await store.load()
    await store.save(cp_with(A, B))
    before = store.syncs
    await store.save(cp_with(A))
    assert store.syncs == before + 1


async def test_unchanged_commit_writes_nothing(tmp_path: Path) -> None:
    store = journal_store(tmp_path / "ipam.json")
    await store.load()
    await store.save(cp_with(A))
    syncs, records = store.syncs, store.records
    await store.save(cp_with(A))
    assert (store.syncs, store.records) == (syncs, records)


async def test_compaction_folds_the_journal_and_resets_it(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    store = journal_store(path)
    await store.load()
    cp = Checkpoint()
    for n in range(400):  # 64 KiB journal: compacts several times
        cp = sample_checkpoint(1 + n % 7, base=n)
        await store.save(cp)
    await store.compact()
    assert store.compactions >= 2
    doc = json.loads(path.read_bytes())
    assert doc["journalSeq"] == store._seq  # every record folded
    assert decode(path.read_bytes()) == cp
    assert parse_journal((tmp_path / "ipam.json.journal").read_bytes())[0] == []
    assert await journal_store(path).load() == cp
    # The journal file keeps its size: appends never change metadata.
    assert os.path.getsize(tmp_path / "ipam.json.journal") == 64 * 1024


async def test_stale_records_before_a_reset_are_skipped(tmp_path: Path) -> None:
    """A crash after the compaction's rename but before the journal reset: every record in
    the journal is already in ipam.json and must not be applied again."""
    path = tmp_path / "ipam.json"
    store = journal_store(path)
    await store.load()
    await store.save(cp_with(A))
    await store.save(cp_with(A, B))
    await store.save(cp_with(A, released=(("10.0.0.2", NOW),)))
    journal = (tmp_path / "ipam.json.journal").read_bytes()
    await store.compact()
    (tmp_path / "ipam.json.journal").write_bytes(journal)  # as if the reset never happened
    loaded = await journal_store(path).load()
    assert loaded == cp_with(A, released=(("10.0.0.2", NOW),))
    # and new records after it chain on
    store2 = journal_store(path)
    await store2.load()
    await store2.save(cp_with(A, C, released=(("10.0.0.2", NOW),)))
    assert await journal_store(path).load() == cp_with(A, C, released=(("10.0.0.2", NOW),))


async def _two_records(path: Path) -> tuple[JournalCheckpointStore, bytes]:
    store = journal_store(path)
    await store.load()
    await store.save(cp_with(A))
    await store.save(cp_with(A, B))
    await store.save(cp_with(A, B, C))
    return store, (path.parent / "ipam.json.journal").read_bytes()


async def test_a_torn_last_record_is_an_unacknowledged_append_and_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ipam.json"
    _store, journal = await _two_records(path)
    records, end = parse_journal(journal)
    last = len(records[-1][1]) + RECORD_HEADER.size
    torn = bytearray(journal)
    torn[end - 5 : end] = bytes(5)  # the tail of the last record never reached the disk
    (tmp_path / "ipam.json.journal").write_bytes(bytes(torn))
    assert await journal_store(path).load() == cp_with(A, B)
    # truncated mid-record (a file cut short) is the same
    (tmp_path / "ipam.json.journal").write_bytes(journal[: end - last // 2])
    assert await journal_store(path).load() == cp_with(A, B)


async def test_damage_before_later_records_is_corrupt_and_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    _store, journal = await _two_records(path)
    bad = bytearray(journal)
    bad[FILE_HEADER.size + RECORD_HEADER.size + 3] ^= 0xFF  # inside the first record
    (tmp_path / "ipam.json.journal").write_bytes(bytes(bad))
    with pytest.raises(CorruptCheckpoint) as info:
        await journal_store(path).load()
    assert Path(info.value.moved_to).read_bytes() == bytes(bad)
    assert not path.exists() and not (tmp_path / "ipam.json.journal").exists()
    # the node starts quarantined from nothing; the next load finds nothing
    assert await journal_store(path).load() is None


@pytest.mark.parametrize("header", [b"NOTAJRNL" + bytes(24), b"short"])
async def test_a_journal_that_is_not_one_is_corrupt(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "ipam.json"
    await _two_records(path)
    (tmp_path / "ipam.json.journal").write_bytes(header)
    with pytest.raises(CorruptCheckpoint):
        await journal_store(path).load()


async def test_a_journal_of_a_newer_version_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    _store, journal = await _two_records(path)
    newer = FILE_HEADER.pack(b"IPAMJNL\n", 2) + journal[FILE_HEADER.size :]
    (tmp_path / "ipam.json.journal").write_bytes(newer)
    with pytest.raises(UnsupportedCheckpoint) as info:
        await journal_store(path).load()
    assert info.value.version == "ipam-journal/2"
    assert Path(info.value.moved_to).read_bytes() == newer


async def test_upstream_rewrote_ipam_json_after_a_rollback_the_journal_is_not_replayed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ipam.json"
    await _two_records(path)
    path.write_bytes(UPSTREAM_IPAM_JSON)  # upstream ran and wrote its own document
    loaded = await journal_store(path).load()
    assert loaded is not None and len(loaded.allocations) == 3
    assert {a.key.container_id for a in loaded.allocations} == {"3f1c0a9b2e", "77aa01", "deadbeef"}
    # and what we append next is bound to a document we wrote
    store = journal_store(path)
    cp = await store.load()
    assert cp is not None
    await store.save(cp_with(*cp.allocations, A))
    assert "journalSeq" in json.loads(path.read_bytes())
    assert await journal_store(path).load() == cp_with(*cp.allocations, A)


async def test_ipam_json_stays_readable_by_the_plain_reader(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    store, _ = await _two_records(path)
    await store.compact()
    assert await JsonFileCheckpointStore(str(path)).load() == cp_with(A, B, C)


@contextlib.contextmanager
def disk_full(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every fdatasync fails (ENOSPC) inside the block."""

    def failing(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fdatasync", failing)
        yield


@pytest.mark.parametrize("changes", [False, True])
async def test_a_failed_sync_makes_the_next_save_a_full_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: bool
) -> None:
    """With ``changes``, as the daemon commits: the node sends the next change (C only);
    the store, not knowing what reached the disk, writes the whole snapshot instead."""
    path = tmp_path / "ipam.json"
    store = journal_store(path)
    await store.load()
    await store.save(cp_with(A))
    with pytest.raises(OSError), disk_full(monkeypatch):
        if changes:
            await store.commit(CheckpointChange(put=((B, ""),)), lambda: cp_with(A, B))
        else:
            await store.save(cp_with(A, B))
    compactions = store.compactions
    if changes:
        await store.commit(CheckpointChange(put=((C, ""),)), lambda: cp_with(A, B, C))
        assert await journal_store(path).load() == cp_with(A, B, C)
    else:
        await store.save(cp_with(A, C))
        assert await journal_store(path).load() == cp_with(A, C)
    assert store.compactions == compactions + 1


@pytest.mark.parametrize("which", ["ipam.json", "ipam.json.journal"])
async def test_files_read_at_start_must_be_regular_files(tmp_path: Path, which: str) -> None:
    """A link (even to a valid file) or a FIFO is never followed or waited on: moved aside
    and reported as corrupt (the node then quarantines every address)."""
    for kind in ("symlink", "fifo"):
        path = tmp_path / kind / "state" / "ipam.json"
        await _two_records(path)
        target = path.parent / which
        if kind == "symlink":
            outside = tmp_path / kind / "elsewhere"
            outside.write_bytes(target.read_bytes())
            target.unlink()
            target.symlink_to(outside)
        else:
            target.unlink()
            os.mkfifo(target)
        with pytest.raises(CorruptCheckpoint):
            await journal_store(path).load()
        assert not target.exists() and not target.is_symlink()
        assert await journal_store(path).load() is None


async def test_unknown_fields_and_exact_timestamps_survive_the_journal(tmp_path: Path) -> None:
    """Issue 16 item 5 (as the full-rewrite store does): an upstream entry's unknown fields
    and nanosecond timestamp are written back by the journal and by its compaction."""
    path = tmp_path / "ipam.json"
    doc = json.loads(UPSTREAM_IPAM_JSON)
    doc["allocations"][0]["interfacesCount"] = 2
    path.write_bytes(json.dumps(doc).encode())
    store = journal_store(path)
    cp = await store.load()
    assert cp is not None
    await store.save(cp_with(*cp.allocations, A))  # the first save rewrites upstream's file
    await store.save(cp_with(*cp.allocations, A, B))  # an append
    again = await journal_store(path).load()
    assert again is not None and len(again.allocations) == 5
    await store.compact()
    entry = json.loads(path.read_bytes())["allocations"][0]
    assert entry["interfacesCount"] == 2
    assert entry["allocationTimestamp"] == 1700000000123456789


@pytest.mark.parametrize(("value", "journal"), [(None, True), ("true", True), ("false", False)])
def test_the_setting_selects_the_store(tmp_path: Path, value: str | None, journal: bool) -> None:
    from adapters.ipamd.settings import load_settings, state_env
    from adapters.ipamd.wiring import build_ports
    from backends.observe import CallCounter

    env = {**state_env(str(tmp_path)), "IPAMD_CLOUD": "fake", "IPAMD_DATAPATH": "fake"}
    if value is not None:
        env["IPAMD_CHECKPOINT_JOURNAL"] = value
    settings = load_settings(env)
    assert settings.checkpoint_journal is journal
    store = build_ports(settings, CallCounter(), fixed_clock).store
    assert isinstance(store, JournalCheckpointStore if journal else JsonFileCheckpointStore)


async def test_a_failed_background_compaction_leaves_commits_appending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk fails the compaction's temporary file; the preallocated journal still
    takes commits, and what it holds is what was acknowledged."""
    path = tmp_path / "ipam.json"
    store = journal_store(path)
    await store.load()
    await store.save(Checkpoint())  # the first save writes ipam.json
    real = os.replace
    failures = []

    def full(src: str, dst: str) -> None:
        failures.append(dst)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    cp = Checkpoint()
    n = 0
    while not failures:
        n += 1
        cp = sample_checkpoint(1 + n % 5, base=n)
        await store.save(cp)
        assert n < 1000
    monkeypatch.setattr(os, "replace", real)
    records = store.records
    cp = sample_checkpoint(3, base=5000)
    await store.save(cp)
    assert store.records == records + 1  # appended, not rewritten
    assert await journal_store(path).load() == cp


async def test_tools_read_the_checkpoint_with_its_journal(tmp_path: Path) -> None:
    from backends.checkpoint import read_checkpoint_file

    path = tmp_path / "ipam.json"
    store, _ = await _two_records(path)
    assert decode(path.read_bytes()) == cp_with(A)  # the journal holds B and C
    assert read_checkpoint_file(str(path)) == cp_with(A, B, C)
    await store.compact()
    assert read_checkpoint_file(str(path)) == cp_with(A, B, C)
    assert read_checkpoint_file(str(tmp_path / "none.json")) is None


# ------------------------------------------------------------------ commits of changes


async def started(tmp_path: Path, first: Checkpoint) -> tuple[Path, JournalCheckpointStore]:
    """A loaded store whose first (whole) commit was ``first``."""
    path = tmp_path / "ipam.json"
    store = journal_store(path)
    await store.load()
    await store.commit(None, lambda: first)
    return path, store


def change_of(before: Checkpoint, after: Checkpoint) -> CheckpointChange:
    """What a node's ChangeTracker would send between two checkpoints (test helper)."""
    old = {a.key: a for a in before.allocations}
    new = {a.key: a for a in after.allocations}
    old_rel, new_rel = dict(before.released_at), dict(after.released_at)
    return CheckpointChange(
        put=tuple((a, "") for k, a in new.items() if old.get(k) != a),
        removed=tuple(k for k in old if k not in new),
        released=tuple((x, t) for x, t in new_rel.items() if old_rel.get(x) != t),
        unreleased=tuple(x for x in old_rel if x not in new_rel),
    )


async def test_a_commit_of_a_change_replays_to_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    store = journal_store(path)
    await store.load()
    before = Checkpoint()
    await store.commit(None, lambda: before)  # the first commit writes ipam.json whole
    snapshot_calls: list[int] = []

    def snapshot() -> Checkpoint:
        snapshot_calls.append(1)
        return before

    for n in range(300):  # past the 64 KiB journal: compactions in between
        after = sample_checkpoint(1 + n % 7, base=n)
        await store.commit(change_of(before, after), snapshot)
        before = after
    assert not snapshot_calls  # a change never reads the whole checkpoint
    assert store.compactions >= 2
    assert await journal_store(path).load() == before
    await store.compact()
    assert decode(path.read_bytes()) == before  # upstream's reader sees every allocation


async def test_a_change_that_adds_is_synced_once_one_that_releases_is_not(tmp_path: Path) -> None:
    path, store = await started(tmp_path, cp_with(A, B))
    syncs = store.syncs
    records = store.records
    del_b = CheckpointChange(removed=(B.key,), released=(("10.0.0.2", NOW),))
    await store.commit(del_b, lambda: cp_with(A))
    # acknowledged, held in memory: nothing written, nothing synced
    assert (store.syncs, store.records, store.synced_to) == (syncs, records, store._off)
    add_c = CheckpointChange(put=((C, "/var/run/netns/c"),), unreleased=("10.0.0.3",))
    await store.commit(add_c, lambda: cp_with(A, C))
    # one record holds both changes, one fdatasync
    assert (store.syncs, store.records) == (syncs + 1, records + 1)
    assert store.synced_to == store._off
    expected = cp_with(A, C, released=(("10.0.0.2", NOW),))
    expected = attrs.evolve(expected, netns=((C.key, "/var/run/netns/c"),))
    assert await journal_store(path).load() == expected
    records = store.records
    await store.commit(add_c, lambda: cp_with(A, C))  # the same values again: nothing
    assert store.records == records


async def test_a_change_whose_time_cannot_be_encoded_fails_and_the_next_commit_is_whole(
    tmp_path: Path,
) -> None:
    path, store = await started(tmp_path, cp_with(A))
    bad = alloc("b", "10.0.0.2", at=-5.0)
    with pytest.raises(CheckpointError):
        await store.commit(CheckpointChange(put=((C, ""), (bad, ""))), lambda: cp_with(A))
    await store.commit(CheckpointChange(put=((B, ""),)), lambda: cp_with(A, B))
    assert await journal_store(path).load() == cp_with(A, B)


async def test_changes_wait_for_a_running_compaction_and_stay_in_order(tmp_path: Path) -> None:
    """A commit made while a compaction runs in the writer thread takes the locked path;
    the changes are applied in the order they were made (an older value never overwrites a
    newer one)."""
    path = tmp_path / "ipam.json"
    store = journal_store(path)
    await store.load()
    current = [Checkpoint()]

    def snapshot() -> Checkpoint:
        return current[0]

    await store.commit(None, snapshot)
    n = 0
    while store._compaction is None:  # commits until one starts a background compaction
        n += 1
        after = sample_checkpoint(1 + n % 7, base=n)
        previous, current[0] = current[0], after
        await store.commit(change_of(previous, after), snapshot)
    before = current[0]
    put_b = CheckpointChange(put=((B, ""),))
    drop_b = CheckpointChange(removed=(B.key,))
    await asyncio.gather(
        store.commit(put_b, lambda: before), store.commit(drop_b, lambda: before)
    )
    store.close()  # writes the held release (drop_b)
    assert await journal_store(path).load() == before


async def test_ipam_json_follows_the_journal_within_fresh_after_s(tmp_path: Path) -> None:
    """`cat ipam.json` on a running node (the brief's debugging command) shows what runs:
    the first record after a fold schedules the next fold fresh_after_s later, once, however
    many commits follow; with nothing new, nothing is scheduled."""
    path = tmp_path / "ipam.json"
    later = Scheduler()
    store = journal_store(path, fresh_after_s=1.0, call_later=later)
    await store.load()
    await store.save(cp_with(A))  # the first save writes ipam.json itself
    assert later.due == []
    await store.save(cp_with(A, B))
    await store.save(cp_with(A, B, C))  # a second commit does not schedule a second fold
    assert [d for d, _ in later.due] == [1.0]
    assert decode(path.read_bytes()).allocations == (A,)  # the journal holds B and C
    later.run()
    await store.compact()  # waits for the background fold, then folds nothing new
    assert decode(path.read_bytes()) == cp_with(A, B, C)
    assert parse_journal((tmp_path / "ipam.json.journal").read_bytes())[0] == []
    await store.save(cp_with(A, C, released=(("10.0.0.2", NOW),)))  # a DEL: held,
    assert [d for d, _ in later.due] == [store.hold_releases_s]  # written shortly,
    later.run()
    assert [d for d, _ in later.due] == [1.0]  # and its record schedules the next fold
    store.close()


async def test_a_fold_due_while_a_commit_is_in_flight_waits_its_turn(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    later = Scheduler()
    store = journal_store(path, fresh_after_s=1.0, call_later=later)
    await store.load()
    await store.save(cp_with(A))
    await store.save(cp_with(A, B))
    async with store._lock:  # a commit holds the store
        later.run()
        retry, _ = later.due[0]
        assert retry < 1.0  # tried again shortly, not dropped
        assert decode(path.read_bytes()).allocations == (A,)
    later.run()
    await store.compact()
    assert decode(path.read_bytes()) == cp_with(A, B)
    store.close()


@pytest.mark.parametrize("others_waiting", [False, True])
async def test_with_others_waiting_an_adding_commit_syncs_off_the_callers_thread(
    tmp_path: Path, others_waiting: bool
) -> None:
    """Group commit: while other requests wait, the sync runs in the writer thread so the
    loop goes on serving them (their changes then share the next sync); alone, on a fast
    disk, it runs on the caller's thread (no hop). A release is never synced either way."""
    import threading

    synced_on: list[str] = []

    def step(name: str) -> None:
        if name == "journal.synced":
            synced_on.append(threading.current_thread().name)

    path = tmp_path / "ipam.json"
    store = journal_store(path, step=step)
    await store.load()
    await store.commit(None, lambda: cp_with(A))
    synced_on.clear()
    add_b = CheckpointChange(put=((B, ""),))
    await store.commit(add_b, lambda: cp_with(A, B), others_waiting=others_waiting)
    here = threading.current_thread().name
    assert synced_on == ([s for s in synced_on if s != here] if others_waiting else [here])
    assert len(synced_on) == 1
    assert await journal_store(path).load() == cp_with(A, B)
    store.close()
