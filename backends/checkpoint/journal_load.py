"""What a journal store (:mod:`backends.checkpoint.journal`) finds at start, and opening its
journal for appends.

:func:`read_stored` reads ``ipam.json`` and replays the journal's records after its
``journalSeq``, moving aside what cannot be trusted (the module's rules: a link, FIFO or
oversized file; a document that does not decode; a journal whose chain is broken in the
middle, or that is not one, or of a newer format: both files go, as a corrupt checkpoint).
:func:`open_journal` opens (creating and preallocating) the file records are appended to.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import NamedTuple

from backends.checkpoint.errors import moved_aside_error
from backends.checkpoint.journal_records import (
    FILE_HEADER,
    FILE_MAGIC,
    JOURNAL_VERSION,
    MAX_JOURNAL_BYTES,
    RECORD_HEADER,
    SEQ_TAIL,
    State,
    apply_record,
    parse_journal,
    read_file,
    state_of,
)
from backends.checkpoint.jsonfile import (
    DIR_MODE,
    FILE_MODE,
    MAX_CHECKPOINT_BYTES,
    _fsync_dir,
    _move_aside,
    decode_file_bytes,
)
from backends.statefile import UnsafeStateFile
from ipamcore.checkpoint import Checkpoint
from ipamcore.errors import CheckpointError


class Stored(NamedTuple):
    """What :func:`read_stored` found."""

    checkpoint: Checkpoint | None  # ipam.json as decoded (None: there is none)
    base: int | None  # its journalSeq (None: none, or a document without one: upstream's)
    replayed: State | None  # ipam.json with the journal's fresh records (None: none were)
    last_seq: int  # the last replayed record's seq (0: none)
    end: int  # the offset after the journal's chain (where the next record goes)


def read_stored(path: str, journal_path: str, aside: Callable[[str], str]) -> Stored:
    """``ipam.json`` at ``path`` and the records of ``journal_path`` that follow it.
    ``aside(p)`` names where a file that cannot be trusted is moved; the error raised is
    :func:`~backends.checkpoint.errors.moved_aside_error`'s."""
    base: int | None = None
    checkpoint: Checkpoint | None = None
    try:
        data = read_file(path, MAX_CHECKPOINT_BYTES)
    except UnsafeStateFile as exc:
        # Never followed, waited on or read without bound: moved aside (a link is
        # renamed, not its target), and the start goes on as for a corrupt file.
        moved = _move_aside(path, aside(path))
        raise moved_aside_error(path, moved, CheckpointError(f"{path}: {exc.strerror}")) from None
    if data is not None:
        try:
            checkpoint = decode_file_bytes(data)
        except CheckpointError as exc:
            moved = _move_aside(path, aside(path))
            raise moved_aside_error(path, moved, exc) from exc
        found = SEQ_TAIL.search(data[-64:])
        base = int(found.group(1)) if found else None
    if base is None:
        return Stored(checkpoint, None, None, 0, FILE_HEADER.size)

    def both_aside(cause: CheckpointError) -> CheckpointError:
        """The journal cannot be trusted: it and ipam.json are moved aside (ipam.json
        without its journal could lack acknowledged changes) and the start goes on as for
        a corrupt checkpoint (every address quarantined)."""
        moved = _move_aside(journal_path, aside(journal_path))
        if data is not None:
            _move_aside(path, aside(path))
        return moved_aside_error(journal_path, moved, cause)

    try:
        journal = read_file(journal_path, MAX_JOURNAL_BYTES)
    except UnsafeStateFile as exc:
        raise both_aside(CheckpointError(f"{journal_path}: {exc.strerror}")) from None
    if not journal:
        return Stored(checkpoint, base, None, 0, FILE_HEADER.size)
    try:
        records, end = parse_journal(journal)
        records = [r for r in records if r[0] > base]
        state = state_of(checkpoint) if checkpoint is not None else State()
        for _seq, payload in records:
            apply_record(state, payload)
    except CheckpointError as exc:
        raise both_aside(exc) from exc
    if not records:
        return Stored(checkpoint, base, None, 0, end)
    return Stored(checkpoint, base, state, records[-1][0], end)


def remove_stale_temps(directory: str, prefix: str) -> None:
    """Temporary files an interrupted compaction left (``prefix``...)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass


def open_journal(path: str, capacity: int, reset: bool) -> tuple[int, int]:
    """Open the journal at ``path`` for appends (creating it, and preallocating it to
    ``capacity`` when it is new, short or its header is not this format's): its file
    descriptor and the fsyncs made. ``reset``: the first record is zeroed and synced, so
    nothing older is ever replayed (else records were replayed and the next one goes after
    them). An ``OSError`` (a full disk cannot preallocate) leaves nothing open."""
    directory = os.path.dirname(path)
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
        created = False
    except FileNotFoundError:
        os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
        created = True
    syncs = 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "journal is not a regular file", path)
        size = os.fstat(fd).st_size
        header = FILE_HEADER.pack(FILE_MAGIC, JOURNAL_VERSION)
        if created or size < capacity or os.pread(fd, len(header), 0) != header:
            _preallocate(fd, max(size, capacity), header, directory)
            syncs += 2
        if reset:
            os.pwrite(fd, bytes(RECORD_HEADER.size), FILE_HEADER.size)
            os.fdatasync(fd)
            syncs += 1
    except BaseException:
        os.close(fd)
        raise
    return fd, syncs


def _preallocate(fd: int, size: int, header: bytes, directory: str) -> None:
    """Write the header and zeros up to ``size`` and make the file's size durable, so
    later appends are data-only writes (two fsyncs: the file and its directory)."""
    os.pwrite(fd, header, 0)
    zeros = bytes(1 << 20)
    off = max(os.fstat(fd).st_size, FILE_HEADER.size)
    while off < size:
        n = os.pwrite(fd, zeros[: min(len(zeros), size - off)], off)
        off += n
    os.fsync(fd)
    _fsync_dir(directory)
