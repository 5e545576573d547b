"""The checkpoint store as a JSON file (upstream's ``/var/run/aws-node/ipam.json``).

Durability: :meth:`JsonFileCheckpointStore.save` writes the encoded document to a temporary
file in the same directory (``.ipam.json.tmp-<pid>-<random>``, mode 0600), fsyncs it,
renames it over the target and fsyncs the directory. A crash at any moment leaves either the
old or the new document at the target, never a mix; the temporary file it may leave behind
is removed by the next :meth:`~JsonFileCheckpointStore.load`.

What ``load`` makes of the file:

* missing file: ``None`` (no checkpoint yet: first start of the node);
* a symbolic link, a FIFO, a device or a directory, or more than ``MAX_CHECKPOINT_BYTES``:
  never followed, waited on or read (:mod:`backends.statefile`); moved aside and reported as
  corrupt, like the next case;
* empty, truncated or malformed file: corrupt. The file is renamed to
  ``ipam.json.corrupt-<timestamp>`` (an injectable clock, Unix seconds; ``.1``, ``.2``... is
  appended rather than overwrite an earlier one) and :class:`CorruptCheckpoint` is raised,
  with ``moved_to`` naming the new path. An empty file is corrupt, not "no checkpoint":
  the store never creates one (it renames a complete file into place), so an empty file
  means something went wrong and starting with an empty pool could hand out addresses
  that pods still use;
* a document of an unknown (e.g. newer) format version: moved aside the same way and
  :class:`UnsupportedCheckpoint` is raised (also an ``UnsupportedCheckpointVersion``). The
  bytes are kept for a downgrade to be undone, and the next ``load`` returns ``None``, so
  whoever decides to start anyway starts from a clean state, never from a half-understood one.

Other I/O failures (permission denied, the path is a directory) are raised as ``OSError``.

The store assumes one owner of the file (the daemon); ``save`` calls of that owner are
serialised by an ``asyncio.Lock`` and complete in call order, so the latest call wins. A
save whose caller is cancelled still completes in the background (under the lock), so
cancellation never reorders saves. :func:`read_checkpoint_file` is the read-only, synchronous
reader for tools (``ipamctl checkpoint``) that may run next to the daemon.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import time
from collections.abc import Callable

import aiofiles
import aiofiles.os

from backends.checkpoint.errors import moved_aside_error
from backends.statefile import UnsafeStateFile, read_state_file
from backends.steps import Step, no_step
from ipamcore.checkpoint import Checkpoint, CheckpointEncoder, decode
from ipamcore.errors import CheckpointError

DEFAULT_PATH = "/var/run/aws-node/ipam.json"
# A bound on what is read: far above any node's checkpoint (a few hundred bytes an address).
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
DIR_MODE = 0o700
FILE_MODE = 0o600


def decode_file_bytes(data: bytes) -> Checkpoint:
    """Decode the bytes of a checkpoint file; an empty file is corrupt."""
    if not data.strip():
        raise CheckpointError("empty checkpoint file")
    return decode(data)


def read_checkpoint_file(path: str = DEFAULT_PATH) -> Checkpoint | None:
    """Read a checkpoint file without changing anything (no move aside, no cleanup).

    ``None`` when the file does not exist; :class:`ipamcore.errors.CheckpointError` (or
    ``UnsupportedCheckpointVersion``) when it does not decode. Since the daemon replaces the
    file by rename, a concurrent save never shows a partial document to this reader.
    """
    try:
        data = read_state_file(path, MAX_CHECKPOINT_BYTES)
    except FileNotFoundError:
        return None
    except UnsafeStateFile as exc:
        raise CheckpointError(f"{path}: {exc.strerror}") from None
    return decode_file_bytes(data)


def _fsync_fd(fd: int) -> None:
    os.fsync(fd)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_aside(path: str, base: str) -> str:
    """Rename ``path`` to ``base`` (or ``base.N``) without replacing an existing file."""
    candidate = base
    n = 0
    while True:
        try:
            os.link(path, candidate)
        except FileExistsError:
            n += 1
            candidate = f"{base}.{n}"
            continue
        except OSError:
            # No hard links on this filesystem: check, then rename (single owner).
            if os.path.lexists(candidate):
                n += 1
                candidate = f"{base}.{n}"
                continue
            os.rename(path, candidate)
            break
        os.unlink(path)
        break
    _fsync_dir(os.path.dirname(path) or ".")
    return candidate


def _create_private(path: str, flags: int) -> int:
    return os.open(path, flags, FILE_MODE)


def _write_all(fd: int, data: bytes, name: str) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if not written:
            raise OSError(errno.EIO, f"short write to {name}")
        view = view[written:]


def _save_file(directory: str, tmp: str, path: str, data: bytes, step: Step) -> None:
    """The whole durable save, blocking: temp file, write, fsync, rename, directory fsync.

    One worker-thread job per save. It used to be one executor round trip per file operation
    (open, write, fsync, close, rename, directory fsync: six hops); each hop costs the event
    loop a hand-off and a wake-up (``benchmarks/rpc.py``, one client: daemon CPU 3.6 -> 2.3 ms
    a pair, ADD p50 2.0 -> 1.5 ms). An earlier attempt at one job looked two to three times
    slower; that was the daemon's netns side file being renamed in the same directory by
    another thread during this save's fsyncs (the paths now ride in the checkpoint itself).
    """
    try:
        try:
            fd = _create_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileNotFoundError:
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
            fd = _create_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        step("checkpoint.temp-created")
        try:
            _write_all(fd, data, tmp)
            step("checkpoint.temp-written")
            _fsync_fd(fd)
        finally:
            os.close(fd)
        step("checkpoint.temp-fsynced")
        _replace(tmp, path)
        step("checkpoint.renamed")
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    step("checkpoint.dir-fsynced")


def _replace(src: str, dst: str) -> None:
    os.replace(src, dst)


# Through aiofiles' executor wrapper, like the reads: one hop for the whole save.
_asave_file = aiofiles.os.wrap(_save_file)
_amove_aside = aiofiles.os.wrap(_move_aside)
_aread = aiofiles.os.wrap(read_state_file)


class JsonFileCheckpointStore:
    """:class:`ipamcore.ports.CheckpointStore` backed by one JSON file.

    ``path``: the checkpoint file (default :data:`DEFAULT_PATH`); its directory is created
    (mode 0700) by the first save if missing. ``clock``: Unix seconds, used to name corrupt
    files moved aside (default ``time.time``). ``step``: called after each step of a save
    (:data:`backends.steps.CHECKPOINT_STEPS`; crash-injection tests kill there).
    """

    def __init__(
        self,
        path: str = DEFAULT_PATH,
        *,
        clock: Callable[[], float] = time.time,
        step: Step = no_step,
    ) -> None:
        self.path = os.path.abspath(path)
        self.directory = os.path.dirname(self.path)
        self._name = os.path.basename(self.path)
        self._tmp_prefix = f".{self._name}.tmp-"
        self._clock = clock
        self._step = step
        self._lock = asyncio.Lock()
        self._encoder = CheckpointEncoder()  # re-encodes only what changed since the last save
        self._background: set[asyncio.Task[None]] = set()

    def corrupt_path(self, timestamp: float) -> str:
        """Where a corrupt file is moved at ``timestamp`` (before collision suffixes)."""
        return f"{self.path}.corrupt-{int(timestamp)}"

    async def load(self) -> Checkpoint | None:
        async with self._lock:
            await self._remove_stale_temps()
            try:
                data = await _aread(self.path, MAX_CHECKPOINT_BYTES)
            except FileNotFoundError:
                return None
            except UnsafeStateFile as exc:
                # Never followed, waited on or read without bound: moved aside (a link is
                # renamed, not its target) and the start goes on as for a corrupt file.
                moved_to = await _amove_aside(self.path, self.corrupt_path(self._clock()))
                bad = CheckpointError(f"{self.path}: {exc.strerror}")
                raise moved_aside_error(self.path, moved_to, bad) from None
            try:
                checkpoint = decode_file_bytes(data)
            except CheckpointError as exc:
                moved_to = await _amove_aside(self.path, self.corrupt_path(self._clock()))
                raise moved_aside_error(self.path, moved_to, exc) from exc
            self._encoder.preserve(checkpoint)  # unknown fields, exact timestamps: kept
            return checkpoint

    async def save(self, checkpoint: Checkpoint) -> None:
        data = self._encoder.encode(checkpoint)
        task = asyncio.ensure_future(self._locked_write(data))
        self._background.add(task)
        task.add_done_callback(self._forget)
        await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a save whose caller was cancelled may fail unseen

    async def _locked_write(self, data: bytes) -> None:
        async with self._lock:
            await self._write_atomic(data)

    async def _write_atomic(self, data: bytes) -> None:
        tmp = os.path.join(
            self.directory, f"{self._tmp_prefix}{os.getpid()}-{secrets.token_hex(4)}"
        )
        await _asave_file(self.directory, tmp, self.path, data, self._step)

    async def _remove_stale_temps(self) -> None:
        try:
            names = await aiofiles.os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(self._tmp_prefix):
                try:
                    await aiofiles.os.remove(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass
