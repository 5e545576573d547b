"""The journal's format (:mod:`backends.checkpoint.journal`): its header and records, and
the stored state the records are changes to (per-key JSON entries), with the three ways a
record is made or used: from a change (:func:`apply_change`, work proportional to it), from
a whole checkpoint compared with the state (:func:`diff_state`), and in a replay
(:func:`apply_record`). No I/O but :func:`read_file` and :func:`read_checkpoint_file`
(the checkpoint as a restart would see it, for tools)."""

from __future__ import annotations

import json
import json.encoder
import re
import struct
import zlib
from typing import Any

from backends.checkpoint.jsonfile import DEFAULT_PATH, MAX_CHECKPOINT_BYTES, decode_file_bytes
from backends.statefile import UnsafeStateFile, read_state_file
from ipamcore.checkpoint import (
    Checkpoint,
    CheckpointChange,
    Preserved,
    _allocation_json,
    _document,
    _kept,
    _released_json,
)
from ipamcore.errors import CheckpointError, UnsupportedCheckpointVersion
from ipamcore.model import AllocationKey

JOURNAL_VERSION = 1
MAX_JOURNAL_BYTES = 256 * 1024 * 1024
FILE_MAGIC = b"IPAMJNL\n"
FILE_HEADER = struct.Struct("<8sI20x")  # 32 bytes
RECORD_MAGIC = 0x4C4E524A  # "JRNL"
RECORD_HEADER = struct.Struct("<IQII")  # magic, seq, length, crc
SEQ_TAIL = re.compile(rb',"journalSeq":(\d{1,19})\}\s*$')
_quote = json.encoder.encode_basestring_ascii  # a JSON string as json.dumps writes it

Fields = tuple[Any, ...]


def read_file(path: str, limit: int) -> bytes | None:
    """A state file's bytes (None: there is none); a link, FIFO, device or oversized file is
    :class:`UnsafeStateFile` (:mod:`backends.statefile`: never followed, waited on or read
    without bound)."""
    try:
        return read_state_file(path, limit)
    except FileNotFoundError:
        return None


_SEQ_LENGTH = struct.Struct("<QI")  # what the CRC covers before the payload


def make_record(seq: int, payload: bytes) -> bytes:
    n = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(_SEQ_LENGTH.pack(seq, n)))
    return RECORD_HEADER.pack(RECORD_MAGIC, seq, n, crc) + payload


def _record_at(data: bytes, off: int) -> tuple[int, bytes, int] | None:
    """(seq, payload, next offset) of a well-formed record at ``off``, else None."""
    if off + RECORD_HEADER.size > len(data):
        return None
    magic, seq, length, crc = RECORD_HEADER.unpack_from(data, off)
    end = off + RECORD_HEADER.size + length
    if magic != RECORD_MAGIC or end > len(data):
        return None
    payload = data[off + RECORD_HEADER.size : end]
    if zlib.crc32(payload, zlib.crc32(_SEQ_LENGTH.pack(seq, length))) != crc:
        return None
    return seq, payload, end


def parse_journal(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The chain of records of a journal file and the offset after its last one.

    :class:`CheckpointError` for a file that is not a journal or whose chain is broken in
    the middle; :class:`UnsupportedCheckpointVersion` for a newer format."""
    if len(data) < FILE_HEADER.size:
        raise CheckpointError("journal shorter than its header")
    magic, version = FILE_HEADER.unpack_from(data, 0)
    if magic != FILE_MAGIC:
        raise CheckpointError("not a checkpoint journal (bad header)")
    if version != JOURNAL_VERSION:
        raise UnsupportedCheckpointVersion(f"ipam-journal/{version}")
    records: list[tuple[int, bytes]] = []
    off = FILE_HEADER.size
    while True:
        found = _record_at(data, off)
        if found is None or (records and found[0] != records[-1][0] + 1):
            if found is None:
                _check_tail(data, off, records[-1][0] if records else None)
            return records, off
        records.append((found[0], found[1]))
        off = found[2]


def _check_tail(data: bytes, off: int, last: int | None) -> None:
    """The chain ended at ``off`` on a bad record: if the next record of the chain follows
    it (by the bad record's own length), acknowledged data is damaged."""
    if off + RECORD_HEADER.size > len(data):
        return
    magic, seq, length, _crc = RECORD_HEADER.unpack_from(data, off)
    if magic != RECORD_MAGIC:
        return
    after = _record_at(data, off + RECORD_HEADER.size + length)
    if after is not None and after[0] == seq + 1 and (last is None or seq == last + 1):
        raise CheckpointError(f"journal record {seq} is damaged (checksum) and later ones follow")


def _key_of(entry: list[Any]) -> AllocationKey:
    if not (isinstance(entry, list) and len(entry) == 3 and all(isinstance(x, str) for x in entry)):
        raise CheckpointError("journal: a removed key must be [network, container, ifname]")
    return AllocationKey(entry[0], entry[1], entry[2])


class State:
    """The stored checkpoint as per-key JSON entries (what the next record is a diff to),
    and what the next record must carry: the entries changed since the last record.

    The next record (:meth:`take`) holds each changed entry's value *now*: ``puts`` and
    ``dels`` by key, ``rels`` and ``unrels`` by address, the later change of an entry
    replacing the earlier. A replay applies ``del``, ``put``, ``unrel``, ``rel`` in that
    order, so a key deleted and put again (or an address unreleased and released again)
    keeps both, and the record takes any state that holds every earlier record to this
    one. Several changes (a DEL held in memory, then an ADD: :mod:`backends.checkpoint.journal`)
    thus become one record, and one of them rewritten (after a fold that already holds it)
    changes nothing."""

    __slots__ = ("allocs", "dels", "preserved", "puts", "released", "rels", "unrels")

    def __init__(self) -> None:
        self.allocs: dict[AllocationKey, tuple[Fields, str]] = {}
        self.released: dict[str, tuple[float, str]] = {}
        # What a decoded entry keeps (exact timestamp, unknown fields), written back for as
        # long as the allocation lives (ipamcore.checkpoint.Preserved).
        self.preserved: dict[AllocationKey, Preserved] = {}
        self.puts: dict[AllocationKey, str] = {}
        self.dels: dict[AllocationKey, None] = {}
        self.rels: dict[str, str] = {}
        self.unrels: dict[str, None] = {}

    def document(self, seq: int) -> bytes:
        doc = _document(
            [js for _f, js in self.allocs.values()], [js for _t, js in self.released.values()]
        )
        return doc[:-1] + b',"journalSeq":%d}' % seq

    @property
    def holds_changes(self) -> bool:
        """Changes not yet in a record."""
        return bool(self.puts or self.dels or self.rels or self.unrels)

    def take(self) -> bytes | None:
        """The payload of the next record (None: no change since the last one); the
        changes it carries are forgotten."""
        puts, dels, rels, unrels = self.puts, self.dels, self.rels, self.unrels
        if not (puts or dels or rels or unrels):
            return None
        self.puts, self.dels, self.rels, self.unrels = {}, {}, {}, {}
        # (json.dumps's text, made without it: entries are encoded already, keys are strings)
        parts = []
        if puts:
            parts.append('"put":[' + ",".join(puts.values()) + "]")
        if dels:
            q, keys = _quote, []
            for k in dels:
                keys.append(f"[{q(k[0])},{q(k[1])},{q(k[2])}]")
            parts.append('"del":[' + ",".join(keys) + "]")
        if rels:
            parts.append('"rel":[' + ",".join(rels.values()) + "]")
        if unrels:
            parts.append('"unrel":[' + ",".join(map(_quote, unrels)) + "]")
        return ("{" + ",".join(parts) + "}").encode()

    def forget_changes(self) -> None:
        """The state's document was written whole: nothing is waiting for a record."""
        self.puts, self.dels, self.rels, self.unrels = {}, {}, {}, {}


def _fields(a: Any, netns: str, kept: Preserved | None = None) -> Fields:
    return (a.key.network_name, a.key.container_id, a.key.if_name, a.ipv4, a.ipv6,
            a.allocated_at, a.pod.namespace, a.pod.name, netns, kept)  # fmt: skip


def state_of(cp: Checkpoint, known: dict[AllocationKey, Preserved] | None = None) -> State:
    state = State()
    paths = dict(cp.netns)
    state.preserved = {**known, **dict(cp.preserved)} if known else dict(cp.preserved)
    for a in cp.allocations:
        netns = paths.get(a.key, "")
        kept = _kept(a, state.preserved.get(a.key))
        state.allocs[a.key] = (_fields(a, netns, kept), _allocation_json(a, netns, kept))
    for r in cp.released_at:
        state.released[r[0]] = (r[1], _released_json(r))
    return state


def checkpoint_of(state: State) -> Checkpoint:
    return decode_file_bytes(state.document(0))


def apply_record(state: State, payload: bytes) -> None:
    try:
        change = json.loads(payload)
    except ValueError as exc:
        raise CheckpointError(f"journal record is not JSON: {exc}") from None
    if not isinstance(change, dict):
        raise CheckpointError("journal record must be an object")
    for raw in change.get("del", []):
        key = _key_of(raw)
        state.allocs.pop(key, None)
        state.preserved.pop(key, None)
    puts = change.get("put", [])
    if puts:
        cp = decode_file_bytes(_document([json.dumps(e, separators=(",", ":")) for e in puts], []))
        paths = dict(cp.netns)
        state.preserved.update(cp.preserved)
        for a in cp.allocations:
            netns = paths.get(a.key, "")
            kept = _kept(a, state.preserved.get(a.key))
            state.allocs[a.key] = (_fields(a, netns, kept), _allocation_json(a, netns, kept))
    for addr in change.get("unrel", []):
        state.released.pop(addr, None)
    rel = change.get("rel", [])
    if rel:
        doc = b'{"version":"vpc-cni-ipam/1","allocations":[],"releasedAddresses":%s}'
        cp = decode_file_bytes(doc % json.dumps(rel).encode())
        for r in cp.released_at:
            state.released[r[0]] = (r[1], _released_json(r))


def apply_change(state: State, change: CheckpointChange) -> bool:
    """Make ``change`` in ``state`` (in place) and note it for the next record
    (:meth:`State.take`); False: nothing changed."""
    allocs, released, preserved = state.allocs, state.released, state.preserved
    changed = False
    if change.put:
        puts = state.puts
        for a, netns in change.put:
            key = a.key
            kept = _kept(a, preserved.get(key)) if preserved else None
            fields = (key.network_name, key.container_id, key.if_name, a.ipv4, a.ipv6,
                      a.allocated_at, a.pod.namespace, a.pod.name, netns, kept)  # fmt: skip
            old = allocs.get(key)
            if old is None or old[0] != fields:
                js = _allocation_json(a, netns, kept)
                allocs[key] = (fields, js)
                puts[key] = js
                changed = True
    if change.removed:
        for key in change.removed:
            if allocs.pop(key, None) is not None:
                state.puts.pop(key, None)
                state.dels[key] = None
                changed = True
            if preserved:
                preserved.pop(key, None)
    if change.released:
        rels = state.rels
        for r in change.released:
            prev = released.get(r[0])
            if prev is None or prev[0] != r[1]:
                js = _released_json(r)
                released[r[0]] = (r[1], js)
                rels[r[0]] = js
                changed = True
    if change.unreleased:
        for address in change.unreleased:
            if released.pop(address, None) is not None:
                state.rels.pop(address, None)
                state.unrels[address] = None
                changed = True
    return changed


def diff_state(state: State, cp: Checkpoint) -> tuple[State, bool, bool]:
    """The state after ``cp`` (holding the changes from ``state`` to it for the next record,
    after those ``state`` held), whether anything changed, and whether an allocation was
    added or changed."""
    new = State()
    new.puts, new.dels, new.rels, new.unrels = state.puts, state.dels, state.rels, state.unrels
    old_allocs, old_rel = state.allocs, state.released
    adds = False
    paths = dict(cp.netns) if cp.netns else {}
    preserved = state.preserved
    if cp.preserved:
        preserved = {**preserved, **dict(cp.preserved)}
    for a in cp.allocations:
        netns = paths.get(a.key, "")
        kept = _kept(a, preserved.get(a.key)) if preserved else None
        fields = _fields(a, netns, kept)
        old = old_allocs.get(a.key)
        if old is not None and old[0] == fields:
            new.allocs[a.key] = old
        else:
            js = _allocation_json(a, netns, kept)
            new.allocs[a.key] = (fields, js)
            new.puts[a.key] = js
            adds = True
    deleted = False
    if len(new.allocs) != len(old_allocs) or adds:
        for k in old_allocs:
            if k not in new.allocs:
                new.puts.pop(k, None)
                new.dels[k] = None
                deleted = True
    if deleted and preserved:
        preserved = {k: v for k, v in preserved.items() if k in new.allocs}
    new.preserved = preserved
    changed = adds or deleted
    rels = 0
    for r in cp.released_at:
        prev = old_rel.get(r[0])
        if prev is not None and prev[0] == r[1]:
            new.released[r[0]] = prev
        else:
            js = _released_json(r)
            new.released[r[0]] = (r[1], js)
            new.rels[r[0]] = js
            rels += 1
    if len(new.released) - rels != len(old_rel):
        for address in old_rel:
            if address not in new.released:
                new.rels.pop(address, None)
                new.unrels[address] = None
                changed = True
    changed = changed or rels > 0
    return new, changed, adds


def read_checkpoint_file(path: str = DEFAULT_PATH, attempts: int = 5) -> Checkpoint | None:
    """The checkpoint as the daemon would restore it (``ipam.json`` + its journal), read
    without changing anything, for tools (``ipamctl checkpoint``, ``doctor``) that may run
    next to the daemon. A compaction between the two reads shows as a journal that does not
    continue the document read: both are read again."""
    for _ in range(attempts):
        try:
            data = read_file(path, MAX_CHECKPOINT_BYTES)
            journal = read_file(path + ".journal", MAX_JOURNAL_BYTES)
        except UnsafeStateFile as exc:
            raise CheckpointError(f"{exc.filename}: {exc.strerror}") from None
        if data is None:
            return None
        checkpoint = decode_file_bytes(data)
        found = SEQ_TAIL.search(data[-64:])
        if found is None:
            return checkpoint
        if journal is None:
            return checkpoint
        base = int(found.group(1))
        records, _end = parse_journal(journal)
        fresh = [r for r in records if r[0] > base]
        if fresh and fresh[0][0] != base + 1:
            continue  # compacted meanwhile
        state = state_of(checkpoint)
        for _seq, payload in fresh:
            apply_record(state, payload)
        return decode_file_bytes(state.document(0))
    raise CheckpointError("the checkpoint kept changing while it was read")
