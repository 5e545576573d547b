"""The checkpoint stores: the shared contract, file specifics, and a SIGKILL crash test."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backends.checkpoint import (
    DEFAULT_PATH,
    CorruptCheckpoint,
    JsonFileCheckpointStore,
    MemoryCheckpointStore,
    UnsupportedCheckpoint,
    jsonfile,
    read_checkpoint_file,
)
from ipamcore.checkpoint import Checkpoint, encode
from ipamcore.errors import CheckpointError, UnsupportedCheckpointVersion
from ipamcore.ports import CheckpointStore
from tests.backends.checkpoint_writer import crash_checkpoint, sequence_of
from tests.contract.checkpoint_contract import (
    UPSTREAM_IPAM_JSON,
    CheckpointStoreContract,
    sample_checkpoint,
)

NOW = 1_700_000_000.75


def fixed_clock() -> float:
    return NOW


class FileHarness:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.store: CheckpointStore = JsonFileCheckpointStore(str(path), clock=fixed_clock)

    def put_raw(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(data)

    def read_moved(self, moved_to: str) -> bytes:
        moved = Path(moved_to)
        assert moved != self.path
        assert moved.parent == self.path.parent
        assert moved.name.startswith("ipam.json.corrupt-")
        return moved.read_bytes()

    def reopen(self) -> CheckpointStore:
        return JsonFileCheckpointStore(str(self.path), clock=fixed_clock)


class MemoryHarness:
    def __init__(self) -> None:
        self.memory = MemoryCheckpointStore(clock=fixed_clock)
        self.store: CheckpointStore = self.memory

    def put_raw(self, data: bytes) -> None:
        self.memory.put_raw(data)

    def read_moved(self, moved_to: str) -> bytes:
        return self.memory.moved_aside[moved_to]

    def reopen(self) -> CheckpointStore:
        return self.memory  # memory does not survive a restart: same object stands in


class TestJsonFileStoreContract(CheckpointStoreContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> FileHarness:
        return FileHarness(tmp_path / "aws-node" / "ipam.json")


class TestMemoryStoreContract(CheckpointStoreContract):
    @pytest.fixture
    def harness(self) -> MemoryHarness:
        return MemoryHarness()


# --- JSON file store specifics -------------------------------------------------------------


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "aws-node" / "ipam.json"


def test_default_path() -> None:
    assert DEFAULT_PATH == "/var/run/aws-node/ipam.json"
    assert JsonFileCheckpointStore().path == DEFAULT_PATH


async def test_save_creates_private_directory_and_file(path: Path) -> None:
    await JsonFileCheckpointStore(str(path)).save(sample_checkpoint(2))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes() == encode(sample_checkpoint(2))


async def test_save_leaves_only_the_checkpoint(path: Path) -> None:
    store = JsonFileCheckpointStore(str(path))
    for i in range(5):
        await store.save(sample_checkpoint(i))
    assert os.listdir(path.parent) == ["ipam.json"]


async def test_stale_temp_files_are_removed_at_load(path: Path) -> None:
    store = JsonFileCheckpointStore(str(path))
    await store.save(sample_checkpoint(3))
    stale = [path.parent / ".ipam.json.tmp-4242-0badf00d", path.parent / ".ipam.json.tmp-1-2"]
    stale[0].write_bytes(encode(sample_checkpoint(9))[:20])
    stale[1].write_bytes(b"")
    others = [path.parent / "ipam.json.corrupt-1", path.parent / "other.tmp-1"]
    for other in others:
        other.write_bytes(b"keep")
    assert await JsonFileCheckpointStore(str(path)).load() == sample_checkpoint(3)
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"keep" for p in others)


async def test_only_a_stale_temp_file_loads_as_none(path: Path) -> None:
    path.parent.mkdir(parents=True)
    (path.parent / ".ipam.json.tmp-7-aa").write_bytes(encode(sample_checkpoint(1)))
    assert await JsonFileCheckpointStore(str(path)).load() is None
    assert os.listdir(path.parent) == []


async def test_corrupt_file_is_moved_aside_with_clock_timestamp(path: Path) -> None:
    store = JsonFileCheckpointStore(str(path), clock=lambda: 1234.9)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{first")
    with pytest.raises(CorruptCheckpoint) as first:
        await store.load()
    assert first.value.moved_to == f"{path}.corrupt-1234"
    assert first.value.path == str(path)
    assert isinstance(first.value.cause, CheckpointError)
    assert str(path) in str(first.value) and first.value.moved_to in str(first.value)
    assert not path.exists()
    # A second corrupt file at the same second does not overwrite the first one.
    path.write_bytes(b"")
    with pytest.raises(CorruptCheckpoint) as second:
        await store.load()
    assert second.value.moved_to == f"{path}.corrupt-1234.1"
    assert Path(first.value.moved_to).read_bytes() == b"{first"
    assert Path(second.value.moved_to).read_bytes() == b""
    assert sorted(os.listdir(path.parent)) == ["ipam.json.corrupt-1234", "ipam.json.corrupt-1234.1"]


async def test_future_version_file_is_moved_aside(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"version":"vpc-cni-ipam/9","allocations":[]}')
    with pytest.raises(UnsupportedCheckpoint) as info:
        await JsonFileCheckpointStore(str(path), clock=fixed_clock).load()
    assert info.value.version == "vpc-cni-ipam/9"
    assert info.value.moved_to == f"{path}.corrupt-{int(NOW)}"
    assert not path.exists()


async def test_unreadable_path_is_an_os_error_and_not_moved(path: Path) -> None:
    path.mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(OSError):
        await JsonFileCheckpointStore(str(path)).load()
    assert path.is_dir()


@pytest.mark.parametrize("step", ["fsync", "replace"])
async def test_failed_save_keeps_the_old_checkpoint(
    path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    store = JsonFileCheckpointStore(str(path))
    await store.save(sample_checkpoint(4))

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(5, f"injected {step} failure")

    monkeypatch.setattr(jsonfile, "_fsync_fd" if step == "fsync" else "_replace", fail)
    with pytest.raises(OSError, match="injected"):
        await store.save(sample_checkpoint(1, base=50))
    monkeypatch.undo()
    assert os.listdir(path.parent) == ["ipam.json"]
    assert await store.load() == sample_checkpoint(4)
    await store.save(sample_checkpoint(1, base=50))
    assert await store.load() == sample_checkpoint(1, base=50)


async def test_save_fsyncs_file_then_renames_then_fsyncs_directory(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order that makes a save durable."""
    store = JsonFileCheckpointStore(str(path))
    steps: list[str] = []
    real = (jsonfile._fsync_fd, jsonfile._replace, jsonfile._fsync_dir)

    def fsync_file(fd: int) -> None:
        steps.append("fsync file")
        real[0](fd)

    def replace(src: str, dst: str) -> None:
        steps.append("rename")
        real[1](src, dst)

    def fsync_dir(directory: str) -> None:
        steps.append(f"fsync dir {directory}")
        real[2](directory)

    monkeypatch.setattr(jsonfile, "_fsync_fd", fsync_file)
    monkeypatch.setattr(jsonfile, "_replace", replace)
    monkeypatch.setattr(jsonfile, "_fsync_dir", fsync_dir)
    await store.save(sample_checkpoint(3))
    assert steps == ["fsync file", "rename", f"fsync dir {path.parent}"]
    assert read_checkpoint_file(str(path)) == sample_checkpoint(3)


async def test_cancelled_save_completes_in_order(path: Path) -> None:
    store = JsonFileCheckpointStore(str(path))
    first, second = sample_checkpoint(5), sample_checkpoint(6, base=10)
    task = asyncio.create_task(store.save(first))
    await asyncio.sleep(0)  # let the save start
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.load() == first  # the write was not torn nor dropped
    later = asyncio.create_task(store.save(first))
    await asyncio.sleep(0)
    later.cancel()
    await store.save(second)  # queued after the cancelled one: still wins
    assert await store.load() == second


# --- read_checkpoint_file ------------------------------------------------------------------


def test_read_checkpoint_file_missing_is_none(path: Path) -> None:
    assert read_checkpoint_file(str(path)) is None


async def test_read_checkpoint_file_reads_what_the_store_wrote(path: Path) -> None:
    await JsonFileCheckpointStore(str(path)).save(sample_checkpoint(8))
    assert read_checkpoint_file(str(path)) == sample_checkpoint(8)


def test_read_checkpoint_file_reads_upstream(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(UPSTREAM_IPAM_JSON)
    cp = read_checkpoint_file(str(path))
    assert cp is not None and len(cp.allocations) == 3


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", CheckpointError),
        (b"{trunc", CheckpointError),
        (b'{"version":"vpc-cni-ipam/2"}', UnsupportedCheckpointVersion),
    ],
)
def test_read_checkpoint_file_is_read_only(
    path: Path, content: bytes, error: type[Exception]
) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    (path.parent / ".ipam.json.tmp-1-1").write_bytes(b"x")
    with pytest.raises(error):
        read_checkpoint_file(str(path))
    assert path.read_bytes() == content
    assert sorted(os.listdir(path.parent)) == [".ipam.json.tmp-1-1", "ipam.json"]


# --- memory store specifics ----------------------------------------------------------------


async def test_memory_store_keeps_encoded_bytes_and_counts_saves() -> None:
    store = MemoryCheckpointStore(initial=sample_checkpoint(1))
    assert store.raw == encode(sample_checkpoint(1))
    await store.save(sample_checkpoint(2))
    assert store.raw == encode(sample_checkpoint(2))
    assert store.saves == 1


async def test_memory_store_fails_the_next_save_only() -> None:
    store = MemoryCheckpointStore()
    await store.save(sample_checkpoint(2))
    store.fail_next_save()
    with pytest.raises(OSError):
        await store.save(sample_checkpoint(3))
    assert await store.load() == sample_checkpoint(2)
    store.fail_next_save(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        await store.save(sample_checkpoint(3))
    await store.save(sample_checkpoint(3))
    assert await store.load() == sample_checkpoint(3)
    assert store.saves == 2


# --- crash test: SIGKILL a writer at random moments ----------------------------------------

WRITER = Path(__file__).with_name("checkpoint_writer.py")
KILLS = int(os.environ.get("CHECKPOINT_KILLS", "50"))
KILL_SEED = int(os.environ.get("CHECKPOINT_KILL_SEED", "20240601"))
MAX_KILL_DELAY_S = 0.03


def _spawn_writer(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parents[2]),
    )


def test_sigkill_during_saves_leaves_old_or_new_checkpoint(path: Path) -> None:
    """Kill a process saving checkpoints N, N+1, ... at random moments (seeded delays).

    After every kill, ``load`` must return exactly the last checkpoint the writer reported
    as saved, or the one it was writing (never an error, a mix or a truncated document).
    """
    rng = random.Random(KILL_SEED)
    asyncio.run(JsonFileCheckpointStore(str(path)).save(crash_checkpoint(0)))
    last = 0
    torn_writes_seen = 0  # kills that left a temporary file (a write was in flight)
    landed_unreported = 0  # kills after rename but before "saved N" reached the parent
    spare = _spawn_writer(path)
    try:
        for _ in range(KILLS):
            writer, spare = spare, _spawn_writer(path)  # the next one starts up meanwhile
            assert writer.stdin is not None and writer.stdout is not None
            start = last + 1
            writer.stdin.write(f"{start}\n")
            writer.stdin.flush()
            assert writer.stdout.readline() == "go\n"
            # A real, short delay: it only picks the moment of the kill.
            delay = rng.uniform(0, MAX_KILL_DELAY_S)
            try:
                writer.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            writer.send_signal(signal.SIGKILL)
            assert writer.wait() == -signal.SIGKILL
            saved = [int(line.split()[1]) for line in writer.stdout.read().splitlines()]
            writer.stdout.close()
            writer.stdin.close()
            assert saved == list(range(start, start + len(saved)))
            reported = saved[-1] if saved else last
            if any(n.startswith(".ipam.json.tmp-") for n in os.listdir(path.parent)):
                torn_writes_seen += 1
            loaded = asyncio.run(JsonFileCheckpointStore(str(path)).load())
            assert loaded is not None
            n = sequence_of(loaded)
            assert n in (reported, reported + 1), (n, reported)
            assert loaded == crash_checkpoint(n)
            assert path.read_bytes() == encode(crash_checkpoint(n))
            assert os.listdir(path.parent) == ["ipam.json"]  # temp cleaned, nothing moved
            landed_unreported += n == reported + 1
            last = n
    finally:
        assert spare.stdin is not None
        spare.stdin.close()  # an empty line: the spare exits without writing
        spare.wait(timeout=10)
    print(
        f"kills={KILLS} final_seq={last} kills_mid_write={torn_writes_seen} "
        f"landed_unreported={landed_unreported}"
    )
    assert last > KILLS // 2  # the writers did make progress between kills


def test_crash_checkpoints_are_distinct() -> None:
    docs = {encode(crash_checkpoint(n)) for n in range(200)}
    assert len(docs) == 200
    assert all(sequence_of(crash_checkpoint(n)) == n for n in (0, 1, 99))
    assert isinstance(crash_checkpoint(3), Checkpoint)
