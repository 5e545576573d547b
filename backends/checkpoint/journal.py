"""The checkpoint store as ``ipam.json`` plus a write-ahead journal: one ``fdatasync`` per commit.

Why: :class:`~backends.checkpoint.jsonfile.JsonFileCheckpointStore` rewrites the whole
document for every commit (temp file, fsync, rename, directory fsync: two fsyncs of two
inodes, and encode work that grows with the pool). Here a commit appends one record, the
*change* since the previous commit, to ``ipam.json.journal`` and ``fdatasync``-s it: no
rename, no directory fsync, and the journal file is preallocated (written with zeros and
fsynced once when it is created, then overwritten in place) so the ``fdatasync`` has no
metadata (size, extents) to write. ``ipam.json`` stays upstream's document, rewritten
atomically (temp + fsync + rename + directory fsync) only by a *compaction*: after a commit
when the journal has grown past a bound (in the store's single writer thread, after the
commit was acknowledged: the next commit waits for it), ``fresh_after_s`` (1 s) after the
first record it does not yet hold (so ``cat ipam.json`` on a running node is at most about a
second behind, as operators read it), when a record would not fit, and at every orderly
stop (:meth:`JournalCheckpointStore.compact`, called by the daemon's stop), so a rollback
to upstream after an orderly stop finds every allocation in ``ipam.json``.

What a commit costs: the daemon's node sends the *change* since its previous commit
(:class:`ipamcore.checkpoint.CheckpointChange`: the entries it touched, with their current
values), and :meth:`JournalCheckpointStore.commit` applies it to the stored state in place
and encodes only those entries: work proportional to the change, not to the pool (the node
keeps no snapshot, the store compares nothing). A whole checkpoint (``save``, or a commit
without a change: the first one, and after restore, reconciliation, the pool policy or a
failed write) is compared entry by entry with the state, as before. After any failure the
state is forgotten and the next commit is whole.

Threads: a commit that adds is appended and ``fdatasync``-ed on the caller's thread (the
event loop) while the disk's syncs average under :data:`INLINE_SYNC_S` (a hand-off to a
thread and back costs more than such a sync, and what waits for it, the pod's ADD, waits
anyway); slower, it moves to the store's one writer thread, where compactions always run. A
commit that only releases is appended without a sync (below). With nothing in flight, a
commit of a change runs to its end without yielding: no task, no lock, no thread hop (a
commit that finds another in flight, or a compaction running, waits its turn in a task, so
changes are applied in the order they were made). The document a compaction writes is made
on the caller's thread (the state changes in place there) and written by the writer thread.

Files (all in the checkpoint's directory, mode 0600):

* ``ipam.json``: upstream's document with one extra top-level field, ``"journalSeq": S``, the
  sequence number of the last journal record it contains (upstream ignores unknown fields).
* ``ipam.json.journal``: a 32-byte header (``IPAMJNL\\n``, format version) then records, each
  ``magic u32 | seq u64 | length u32 | crc32 u32 | payload`` (little endian; the CRC covers
  seq, length and payload). The payload is JSON: ``put`` (allocations in upstream's entry
  form, added or changed), ``del`` (keys removed), ``rel`` (release times set) and
  ``unrel`` (release times dropped).

Load: read ``ipam.json`` (safely: a regular file, no link, bounded), then replay the
journal's records with ``seq > S`` in order. The chain ends at the first record that is
absent (zeros), malformed, fails its CRC, or does not carry the previous ``seq + 1`` (left
over from before the last compaction, whose bytes are reused). A record cut short or
failing its CRC *at the end* of the chain is an append that a crash interrupted before its
``fdatasync``: its commit was never acknowledged, so it is dropped, exactly as today a crash
before the rename drops an unacknowledged save. A bad record *followed by* the next record
of the chain is damage to acknowledged data: the journal and ``ipam.json`` are moved aside
(``*.corrupt-<time>``) and :class:`CorruptCheckpoint` is raised, so the node starts with
every address quarantined, as for a corrupt checkpoint. A journal header that is not ours is
corrupt the same way; one of a newer format version raises :class:`UnsupportedCheckpoint`.
A journal beside an ``ipam.json`` without ``journalSeq`` (written by upstream after a
rollback, or by an older version of this project) belongs to another history and is
discarded, never replayed.

Crash safety of the steps (crash points :data:`backends.steps.JOURNAL_STEPS`; a commit
of a change and a whole one write through the same steps): an
append killed before its ``fdatasync`` is dropped or kept whole (the CRC decides); after
it, it is durable. A compaction killed before the rename leaves the old ``ipam.json`` and the
whole journal; after the rename, the new ``ipam.json`` says ``S`` and every journal record
``<= S`` is skipped; the reset (zeroing the first record, ``fdatasync``) only makes the next
load faster.

**Is a DEL durable before it is acknowledged?** Not on disk: a commit that only removes
allocations and records release times (DEL, GC, an ADD undone) is appended to the journal at
once but not synced (a record in the page cache: a process kill cannot lose it, a power cut
can), and acknowledged. The next ``fdatasync`` (the next commit that adds) makes it durable
with that ADD's record, so a DEL+ADD pair costs one ``fdatasync``. The store can also hold
such a commit in memory (:attr:`JournalCheckpointStore.hold_releases_s` > 0; 0, the default,
writes it at once) and write it with the next record: the next commit that adds (one
``pwrite`` for both), or, with no ADD coming, the flush ``hold_releases_s`` later, the fold,
the orderly stop and :meth:`JournalCheckpointStore.close`. The daemon does not hold: a DEL
held in memory is lost to a process kill, and a restart check that cannot tell the pod is
gone (the fake datapath of the SIGKILL campaign) keeps its allocation. A record holds each
entry it changed at its value *now* (:class:`~backends.checkpoint.journal_records.State`):
an address released and assigned again in between goes out as its new owner's entry and the
old key's removal, in one record, one checksum: a torn write keeps both or neither. So the
file can lose a DEL only together with every later ADD (none of which was acknowledged, or
it would have synced the DEL): after a crash the allocation of a pod that is gone comes
back, and the restart check (netns or host veth gone) releases it, or GC does. The address
cannot go to a second pod in between: memory still cooled it while the DEL was unsynced, and
any ADD that took it after the DEL wrote the DEL before or in its own record, so the file
never holds the address twice, even with a cooldown of 0
(``tests/reliability/test_journal_crash.py`` restarts a daemon from the disk as a crash
leaves it right after an acknowledged DEL;
``tests/backends/test_checkpoint_journal_held.py`` replays netted records, and cuts the
coalesced record of a DEL and an ADD of the same address at every byte).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from backends.checkpoint.journal_load import open_journal, read_stored, remove_stale_temps
from backends.checkpoint.journal_records import (
    FILE_HEADER,
    FILE_MAGIC,
    JOURNAL_VERSION,
    RECORD_HEADER,
    RECORD_MAGIC,
    State,
    apply_change,
    checkpoint_of,
    diff_state,
    make_record,
    parse_journal,
    read_checkpoint_file,
    state_of,
)
from backends.checkpoint.jsonfile import (
    DEFAULT_PATH,
    DIR_MODE,
    FILE_MODE,
    _fsync_dir,
    _write_all,
)
from backends.steps import Step, no_step
from ipamcore.checkpoint import Checkpoint, CheckpointChange, Preserved
from ipamcore.model import AllocationKey

__all__ = [
    "FILE_HEADER",
    "FILE_MAGIC",
    "JOURNAL_VERSION",
    "RECORD_HEADER",
    "RECORD_MAGIC",
    "JournalCheckpointStore",
    "parse_journal",
    "read_checkpoint_file",
]

DEFAULT_CAPACITY = 4 * 1024 * 1024
MIN_COMPACT_BYTES = 256 * 1024
# A commit's fdatasync runs on the caller's thread (the event loop) while the disk answers
# faster than this on average: a thread hop costs more than such a sync. A slower disk moves
# it to the store's writer thread, so the loop never waits long for the disk.
INLINE_SYNC_S = 0.001
# ``ipam.json`` trails the journal by at most about this long while the daemon runs, so the
# brief's ``cat /var/run/aws-node/ipam.json`` shows what runs on the node (upstream rewrites
# the file per change; here the journal does, and a fold follows within this time).
DEFAULT_FRESH_AFTER_S = 1.0
# A change that only releases (DEL, GC) may be held in memory at most this long, unless a
# commit that adds takes it into its record first (one write and one sync for both). Off by
# default: a held DEL is lost by a SIGKILL, and the restart check releases it only where
# the datapath can tell the pod is gone (the crash campaign's fake datapath cannot: CI
# found acknowledged DELs lost in a 50 ms hold). Off, a release is written at once, unsynced.
DEFAULT_HOLD_RELEASES_S = 0.0


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # read again (and handled) by the next save's _settle


class JournalCheckpointStore:
    """:class:`ipamcore.ports.CheckpointStore`: ``ipam.json`` + write-ahead journal.

    ``capacity``: bytes preallocated for the journal (grown when one document is larger);
    compaction runs once the journal holds more than ``max(MIN_COMPACT_BYTES, 2 x the
    document)`` and at most half of it. ``sync_releases``: also ``fdatasync`` commits that
    only release (off by default: see the module's argument). ``hold_releases_s``: how
    long such a commit may be held in memory before it is written (0, the default: written at once,
    unsynced). ``syncs`` counts every
    ``fsync``/``fdatasync`` the store made (journal and compaction), ``records`` the records
    appended, ``compactions`` the compactions; benchmarks read them. ``fresh_after_s``: the
    first record after a compaction schedules one that long later (``call_later``, the
    event loop's by default; 0 turns it off), so ``ipam.json`` never trails the journal
    by much longer, even under continuous churn.
    """

    def __init__(
        self,
        path: str = DEFAULT_PATH,
        *,
        clock: Callable[[], float] = time.time,
        step: Step = no_step,
        capacity: int = DEFAULT_CAPACITY,
        sync_releases: bool = False,
        fresh_after_s: float = DEFAULT_FRESH_AFTER_S,
        call_later: Callable[[float, Callable[[], None]], Any] | None = None,
        hold_releases_s: float = DEFAULT_HOLD_RELEASES_S,
    ) -> None:
        self.path = os.path.abspath(path)
        self.directory = os.path.dirname(self.path)
        self.journal_path = self.path + ".journal"
        self._tmp_prefix = f".{os.path.basename(self.path)}.tmp-"
        self._tmp = os.path.join(
            self.directory, f"{self._tmp_prefix}{os.getpid()}-{secrets.token_hex(4)}"
        )
        self._clock = clock
        self._step = step
        self._capacity = max(capacity, 64 * 1024)
        self._sync_releases = sync_releases
        self._lock = asyncio.Lock()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "checkpoint-journal")
        self._state: State | None = None  # None: nothing known durable; next save compacts
        self._seq = 0
        self._fd = -1
        self._off = FILE_HEADER.size
        self._compaction: asyncio.Future[None] | None = None
        self._resetting = False
        # What the decoded checkpoint keeps (unknown fields, exact timestamps): carried into
        # the first full save when the document loaded was upstream's.
        self._loaded_preserved: dict[AllocationKey, Preserved] = {}
        self._sync_s = 0.0  # moving average of the journal's fdatasync, seconds
        self._unsynced = False
        self._background: set[asyncio.Future[None]] = set()
        self._fresh_after_s = fresh_after_s
        self._call_later = call_later
        self._fresh_due = False  # a fold of the journal into ipam.json is scheduled
        self._fresh_timer: Any = None  # its handle (to cancel it at close)
        self.hold_releases_s = hold_releases_s
        self._flush_due = False  # the held releases' flush is scheduled
        self._flush_timer: Any = None
        self._compact_limit = 0  # (see _compact_at)
        self.syncs = 0
        self.records = 0
        self.bytes_appended = 0
        self.compactions = 0
        # The journal's bytes known durable: [0, synced_to) (what a power cut keeps; tests).
        self.synced_to = FILE_HEADER.size

    def corrupt_path(self, path: str, timestamp: float) -> str:
        return f"{path}.corrupt-{int(timestamp)}"

    # ------------------------------------------------------------------ load
    async def load(self) -> Checkpoint | None:
        async with self._lock:
            await self._settle()
            loaded: Checkpoint | None = await self._run(self._load_blocking)
            return loaded

    def _load_blocking(self) -> Checkpoint | None:
        self._close_fd()
        self._state, self._seq = None, 0
        remove_stale_temps(self.directory, self._tmp_prefix)
        stored = read_stored(self.path, self.journal_path, self._aside)
        checkpoint, base, replayed = stored.checkpoint, stored.base, stored.replayed
        if checkpoint is not None:
            self._loaded_preserved = dict(checkpoint.preserved)
        if replayed is None:
            # Nothing to replay: the state is ipam.json; a journal of another history (or
            # one whose records are all compacted) is reset before anything is appended.
            if checkpoint is None:
                return None
            self._seq = base or 0
            if not self._try_open_journal():
                return checkpoint
            # A document without journalSeq (upstream's) is rewritten by the next save, so
            # no record is ever appended to a journal that ipam.json does not point to.
            self._state = state_of(checkpoint) if base is not None else None
            return checkpoint
        self._seq = stored.last_seq
        if self._try_open_journal(stored.end):
            self._state = replayed
        return checkpoint_of(replayed)

    def _aside(self, path: str) -> str:
        return self.corrupt_path(path, self._clock())

    def _try_open_journal(self, end: int | None = None) -> bool:
        """:meth:`_open_journal`; if that fails (a full disk cannot preallocate the
        journal), the start goes on and the first save rewrites ``ipam.json`` instead."""
        try:
            self._open_journal(end)
        except OSError:
            return False
        return True

    def _open_journal(self, end: int | None = None) -> None:
        """Open the journal for appends (:func:`open_journal`). With ``end`` (records were
        replayed), the next record goes there; else the journal is reset."""
        self._close_fd()
        fd, syncs = open_journal(self.journal_path, self._capacity, reset=end is None)
        self._fd, self.syncs = fd, self.syncs + syncs
        self._off = FILE_HEADER.size if end is None else end
        self.synced_to = self._off  # (read back from the disk, or reset and synced)

    # ------------------------------------------------------------------ save
    async def save(self, checkpoint: Checkpoint) -> None:
        await self.commit(None, lambda: checkpoint)

    async def commit(
        self,
        change: CheckpointChange | None,
        snapshot: Callable[[], Checkpoint],
        *,
        others_waiting: bool = False,
    ) -> None:
        """Make ``change`` durable (None, or a store that has nothing known durable: the
        whole ``snapshot()``, compared with what is stored). The change is encoded in work
        proportional to it. With nothing in flight and a fast disk (or nothing to sync) it
        runs to its end on the caller's thread without yielding: no task, no thread hop.
        Otherwise in a task that the caller's cancellation does not stop halfway.
        A change that only releases is held in memory (:attr:`hold_releases_s`) and written
        with the next record. ``others_waiting`` (the host has other requests waiting): an
        adding change is synced in the writer thread even on a fast disk, so the caller's
        loop goes on serving them and their changes share the next sync (group commit)
        instead of each paying its own while the loop is blocked."""
        fast = self._sync_s < INLINE_SYNC_S and not others_waiting
        if change is not None and self._ready_now():
            adds = self._sync_releases or bool(change.put)
            if fast or not adds:
                state = self._state
                assert state is not None
                try:
                    changed = apply_change(state, change)
                except BaseException:
                    self._state = None  # (a time it cannot encode): the next is whole
                    raise
                if changed and not adds and self.hold_releases_s > 0:
                    if not self._flush_due:
                        self._schedule_flush(self.hold_releases_s)
                    return  # held (the module's argument)
                if not (changed or adds) or not (changed or state.holds_changes or self._unsynced):
                    return  # (an adding commit that changes nothing still syncs the rest)
                payload = state.take()  # (here fast, or nothing to sync)
                if payload is None:
                    self._guarded(self._sync)  # (unsynced records)
                else:
                    self._commit_inline(state, payload, adds)
                return
        task = asyncio.ensure_future(self._locked_commit(change, snapshot, fast))
        self._background.add(task)
        task.add_done_callback(self._forget)
        await asyncio.shield(task)

    def _forget(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()

    def _ready_now(self) -> bool:
        """Nothing in flight (no commit holds the lock, no compaction runs, the state is
        known): a change can be written without waiting, and after every earlier one
        (a change holds its entries' values when it was made: applied out of order, an older
        value could overwrite a newer one)."""
        if self._background or self._lock.locked() or self._state is None or self._fd < 0:
            return False
        pending = self._compaction
        if pending is not None:
            if not pending.done():
                return False
            self._compaction = None
            self._settled(pending)
        return self._state is not None

    def _change_record(self, state: State, change: CheckpointChange) -> bool:
        """:func:`apply_change`; if it fails halfway (a time it cannot encode), the state
        is unknown and the next commit writes everything."""
        try:
            return apply_change(state, change)
        except BaseException:
            self._state = None
            raise

    def _hold(self) -> bool:
        """Hold a change that only releases in memory (True), to go out with the next record
        (the next commit that adds, a barrier, or the flush :attr:`hold_releases_s` later).
        Why no crash can make that hand out an address twice: the module's argument."""
        if self.hold_releases_s <= 0:
            return False
        if not self._flush_due:
            self._schedule_flush(self.hold_releases_s)
        return True

    def _schedule_flush(self, delay: float) -> None:
        later = self._call_later or asyncio.get_running_loop().call_later
        self._flush_due = True
        self._flush_timer = later(delay, self._flush_held)

    def _flush_held(self) -> None:
        """The held releases' deadline: written (to the page cache, as any release record),
        unless a commit that adds took them meanwhile; with a commit or compaction in
        flight, tried again shortly. A failure leaves the state unknown (the next commit
        writes everything) and is not raised into the event loop."""
        self._flush_due, self._flush_timer = False, None
        state = self._state
        if self._fd < 0 or state is None or not state.holds_changes:
            return
        if not self._ready_now():
            self._schedule_flush(min(0.01, self.hold_releases_s))
            return
        payload = state.take()
        assert payload is not None
        with contextlib.suppress(Exception):  # (the state is None: the next commit is whole)
            self._commit_inline(state, payload, self._sync_releases)

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException:
            self._state = None  # what reached the disk is unknown: rewrite everything
            raise

    async def _locked_commit(
        self, change: CheckpointChange | None, snapshot: Callable[[], Checkpoint], fast: bool
    ) -> None:
        async with self._lock:
            await self._settle()
            state = self._state
            if state is None or self._fd < 0:
                await self._full(state_of(snapshot(), self._loaded_preserved))
                return
            if change is not None:
                changed = self._change_record(state, change)
                adds = self._sync_releases or bool(change.put)
            else:
                try:
                    state, changed, adds = diff_state(state, snapshot())
                except BaseException:
                    self._state = None
                    raise
                self._state = state
                adds = adds or self._sync_releases
            if changed and not adds and self._hold():
                return
            sync = adds
            if not (changed or sync):
                return
            payload = state.take()
            if payload is None:
                if sync and self._unsynced:
                    await self._run(self._guarded, self._sync)
                return
            if sync and fast:
                self._commit_inline(state, payload, True)
                return
            seq = self._seq + 1
            record = make_record(seq, payload)
            try:
                if self._off + len(record) > self._capacity:
                    self._seq = seq
                    await self._full(state)
                    return
                if sync:
                    await self._run(self._append, record, True)  # a slow disk: its thread
                else:
                    self._append(record, False)  # page cache only: no thread hop, no sync
            except BaseException:
                # What reached the disk is unknown (a failed fdatasync may drop dirty
                # pages, or the record may be there): the next save rewrites everything,
                # with a journalSeq past this record's, so it is never replayed.
                self._state, self._seq = None, seq
                raise
            self._appended(state, seq, record)

    def _commit_inline(self, state: State, payload: bytes, sync: bool) -> None:
        """Append the record of ``state``'s changes on this thread (``fdatasync``-ed
        when ``sync``). A record that does not fit the journal (rare: compaction runs at
        half its size) makes a compaction the commit, on this thread too."""
        seq = self._seq + 1
        record = make_record(seq, payload)
        try:
            if self._off + len(record) > self._capacity:
                self._seq = seq
                self._compact_blocking(state.document(seq))
                state.forget_changes()
                self._state = state
                return
            self._append(record, sync)
        except BaseException:
            self._state, self._seq = None, seq
            raise
        self._appended(state, seq, record)

    def _appended(self, state: State, seq: int, record: bytes, *, closing: bool = False) -> None:
        self._state, self._seq = state, seq
        self._off += len(record)
        self.records += 1
        self.bytes_appended += len(record)
        if closing:
            return
        if self._off > self._compact_limit and self._off > self._compact_at():
            self._compact_in_background(state, seq)
        elif not self._fresh_due and self._fresh_after_s > 0:
            self._schedule_fold(self._fresh_after_s)

    def _schedule_fold(self, delay: float) -> None:
        later = self._call_later or asyncio.get_running_loop().call_later
        self._fresh_due = True
        self._fresh_timer = later(delay, self._freshen)

    def _freshen(self) -> None:
        """The scheduled fold: ``ipam.json`` gets what the journal holds, in the background
        (the next commit waits for it, as for a size-triggered compaction). With a commit
        or compaction in flight, it tries again shortly; a journal already folded (a size
        compaction ran meanwhile) needs nothing."""
        self._fresh_due, self._fresh_timer = False, None
        if self._fd < 0 or self._state is None or self._off <= FILE_HEADER.size:
            return  # closed, or the next commit rewrites everything, or nothing to fold
        if not self._ready_now():
            self._schedule_fold(min(0.05, self._fresh_after_s))
            return
        state = self._state
        assert state is not None
        self._compact_in_background(state, self._seq)

    def _compact_in_background(self, state: State, seq: int) -> None:
        """Fold ``state`` (as of record ``seq``) into ``ipam.json`` in the writer thread; the
        next commit waits for it (:meth:`_settle`)."""
        self._compaction = self._run(self._compact_blocking, state.document(seq))
        self._compaction.add_done_callback(_retrieve)

    def _compact_at(self) -> int:
        """The journal's size that starts a compaction (kept in ``_compact_limit``: the
        state's size is looked at again only when the journal reaches the last one)."""
        assert self._state is not None
        guess = 300 * len(self._state.allocs) + 80 * len(self._state.released)
        self._compact_limit = min(self._capacity // 2, max(MIN_COMPACT_BYTES, 2 * guess))
        return self._compact_limit

    def _append(self, record: bytes, sync: bool) -> None:
        fd, step = self._fd, self._step
        os.pwrite(fd, record, self._off)
        step("journal.appended")
        if sync:
            clock = time.perf_counter
            began = clock()
            os.fdatasync(fd)
            self._sync_s += (clock() - began - self._sync_s) * 0.2
            self.syncs += 1
            self._unsynced = False
            self.synced_to = self._off + len(record)
            step("journal.synced")
        else:
            self._unsynced = True

    def _sync(self) -> None:
        os.fdatasync(self._fd)
        self.syncs += 1
        self._unsynced = False
        self.synced_to = self._off

    async def _full(self, state: State) -> None:
        """Write ``state`` as ``ipam.json`` and reset the journal (a durable commit)."""
        await self._run(self._compact_blocking, state.document(self._seq))
        state.forget_changes()
        self._state = state

    def _compact_blocking(self, data: bytes) -> None:
        """Write ``data`` (the document, made on the loop's thread: the state it is made
        from changes in place there) as ``ipam.json``, then reset the journal."""
        step = self._step
        try:
            fd = os.open(
                self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE
            )
        except FileNotFoundError:
            os.makedirs(self.directory, mode=DIR_MODE, exist_ok=True)
            fd = os.open(
                self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE
            )
        try:
            try:
                _write_all(fd, data, self._tmp)
                step("compact.temp-written")
                os.fsync(fd)
                self.syncs += 1
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
        except BaseException:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            raise
        step("compact.renamed")
        _fsync_dir(self.directory)
        self.syncs += 1
        step("compact.dir-fsynced")
        self._resetting = True  # a failure from here leaves the journal's start unknown
        if self._fd < 0:
            self._open_journal()
        else:
            os.pwrite(self._fd, bytes(RECORD_HEADER.size), FILE_HEADER.size)
            os.fdatasync(self._fd)
            self.syncs += 1
            self._off = FILE_HEADER.size
        self._resetting = False
        self._unsynced = False
        self.synced_to = self._off
        self.compactions += 1
        step("journal.reset")

    async def _settle(self) -> None:
        """Wait for a background compaction. One that failed before the journal reset
        (disk full for the temporary file, say) changed nothing the journal relies on:
        ``ipam.json`` is the old one, or the new one whose ``journalSeq`` the journal's
        records continue; commits go on appending (the journal is preallocated, so a full
        disk does not stop them). A failure in the reset leaves the journal's first record
        unknown: the next save then rewrites everything."""
        pending, self._compaction = self._compaction, None
        if pending is not None:
            await asyncio.wait([pending])
            self._settled(pending)

    def _settled(self, pending: asyncio.Future[None]) -> None:
        """What a finished background compaction leaves (see :meth:`_settle`)."""
        exc = None if pending.cancelled() else pending.exception()
        if exc is None:
            return
        if not isinstance(exc, OSError):
            raise exc
        if self._resetting:
            self._state = None
            self._resetting = False

    async def compact(self) -> None:
        """Fold the journal into ``ipam.json`` (orderly stop; rollback reads ipam.json)."""
        async with self._lock:
            await self._settle()
            state = self._state
            if state is not None:
                await self._run(self._compact_blocking, state.document(self._seq))
                state.forget_changes()

    def close(self) -> None:
        """Close the journal: held releases are written first (not synced), unless a
        commit or compaction is still in flight (then they are lost as in a crash, which
        the module's argument covers)."""
        for timer in (self._fresh_timer, self._flush_timer):
            if hasattr(timer, "cancel"):
                timer.cancel()
        self._fresh_due, self._fresh_timer = False, None
        self._flush_due, self._flush_timer = False, None
        state = self._state
        if self._fd >= 0 and state is not None and state.holds_changes:
            with contextlib.suppress(Exception):
                if self._ready_now():
                    payload = state.take()
                    assert payload is not None
                    seq = self._seq + 1
                    record = make_record(seq, payload)
                    if self._off + len(record) <= self._capacity:
                        self._append(record, self._sync_releases)
                        self._appended(state, seq, record, closing=True)
        self._close_fd()
        self._writer.shutdown(wait=True)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.wrap_future(self._writer.submit(fn, *args))
