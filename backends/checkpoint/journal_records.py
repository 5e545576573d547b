"""The journal's format (:mod:`backends.checkpoint.journal`): its header and records, and
the stored state the records are changes to (per-key JSON entries), with the three ways a
record is made or used: from a change (:func:`apply_change`, work proportional to it), from
a whole checkpoint compared with the state (:func:`diff_state`), and in a replay
(:func:`apply_record`). No I/O but :func:`read_file`."""

from __future__ import annotations

import json
import json.encoder
import re
import struct
import zlib
from typing import Any

from backends.checkpoint.jsonfile import decode_file_bytes
from backends.statefile import read_state_file
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


def make_record(seq: int, payload: bytes) -> bytes:
    head = struct.pack("<QI", seq, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(head))
    return RECORD_HEADER.pack(RECORD_MAGIC, seq, len(payload), crc) + payload


def _record_at(data: bytes, off: int) -> tuple[int, bytes, int] | None:
    """(seq, payload, next offset) of a well-formed record at ``off``, else None."""
    if off + RECORD_HEADER.size > len(data):
        return None
    magic, seq, length, crc = RECORD_HEADER.unpack_from(data, off)
    end = off + RECORD_HEADER.size + length
    if magic != RECORD_MAGIC or end > len(data):
        return None
    payload = data[off + RECORD_HEADER.size : end]
    if zlib.crc32(payload, zlib.crc32(struct.pack("<QI", seq, length))) != crc:
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


def _payload(puts: list[str], dels: list[list[str]], rels: list[str], unrel: list[str]) -> bytes:
    """A record's JSON payload from its parts (entries already encoded)."""
    parts = []
    if puts:
        parts.append(f'"put":[{",".join(puts)}]')
    if dels:  # (json.dumps's text, made without it: lists of strings)
        keys = ",".join("[" + ",".join(map(_quote, k)) + "]" for k in dels)
        parts.append(f'"del":[{keys}]')
    if rels:
        parts.append(f'"rel":[{",".join(rels)}]')
    if unrel:
        parts.append(f'"unrel":[{",".join(map(_quote, unrel))}]')
    return ("{" + ",".join(parts) + "}").encode()


class State:
    """The stored checkpoint as per-key JSON entries (what the next record is a diff to)."""

    def __init__(self) -> None:
        self.allocs: dict[AllocationKey, tuple[Fields, str]] = {}
        self.released: dict[str, tuple[float, str]] = {}
        # What a decoded entry keeps (exact timestamp, unknown fields), written back for as
        # long as the allocation lives (ipamcore.checkpoint.Preserved).
        self.preserved: dict[AllocationKey, Preserved] = {}

    def document(self, seq: int) -> bytes:
        doc = _document(
            [js for _f, js in self.allocs.values()], [js for _t, js in self.released.values()]
        )
        return doc[:-1] + b',"journalSeq":%d}' % seq


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
        cp = decode_file_bytes(
            _document([json.dumps(e, separators=(",", ":")) for e in puts], [])
        )
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


def apply_change(state: State, change: CheckpointChange) -> bytes | None:
    """Make ``change`` in ``state`` (in place) and return its record's payload (None:
    nothing changed)."""
    allocs, released, preserved = state.allocs, state.released, state.preserved
    puts: list[str] = []
    for a, netns in change.put:
        key = a.key
        kept = _kept(a, preserved.get(key)) if preserved else None
        fields = _fields(a, netns, kept)
        old = allocs.get(key)
        if old is None or old[0] != fields:
            js = _allocation_json(a, netns, kept)
            allocs[key] = (fields, js)
            puts.append(js)
    dels: list[list[str]] = []
    for key in change.removed:
        if allocs.pop(key, None) is not None:
            dels.append(list(key))
        if preserved:
            preserved.pop(key, None)
    rels: list[str] = []
    for r in change.released:
        prev = released.get(r[0])
        if prev is None or prev[0] != r[1]:
            js = _released_json(r)
            released[r[0]] = (r[1], js)
            rels.append(js)
    unrel = [a for a in change.unreleased if released.pop(a, None) is not None]
    if not (puts or dels or rels or unrel):
        return None
    return _payload(puts, dels, rels, unrel)


def diff_state(state: State, cp: Checkpoint) -> tuple[State, bytes | None, bool]:
    """The state after ``cp`` and the record that takes ``state`` there (None: same)."""
    new = State()
    old_allocs, old_rel = state.allocs, state.released
    puts: list[str] = []
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
            puts.append(js)
    dels = [k for k in old_allocs if k not in new.allocs] if (
        len(new.allocs) - len(puts) != len(old_allocs)) else []  # fmt: skip
    if dels and preserved:
        preserved = {k: v for k, v in preserved.items() if k in new.allocs}
    new.preserved = preserved
    rels: list[str] = []
    for r in cp.released_at:
        prev = old_rel.get(r[0])
        if prev is not None and prev[0] == r[1]:
            new.released[r[0]] = prev
        else:
            js = _released_json(r)
            new.released[r[0]] = (r[1], js)
            rels.append(js)
    unrel = [a for a in old_rel if a not in new.released] if (
        len(new.released) - len(rels) != len(old_rel)) else []  # fmt: skip
    if not (puts or dels or rels or unrel):
        return new, None, False
    return new, _payload(puts, [list(k) for k in dels], rels, unrel), bool(puts)
