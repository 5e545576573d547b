"""Checkpoint stores: ipam.json with a journal (the default), ipam.json rewritten whole, and
an in-memory one for tests. ``read_checkpoint_file`` reads what the daemon would restore."""

from backends.checkpoint.errors import (
    CheckpointMovedAside,
    CorruptCheckpoint,
    UnsupportedCheckpoint,
)
from backends.checkpoint.journal import JournalCheckpointStore, read_checkpoint_file
from backends.checkpoint.jsonfile import DEFAULT_PATH, JsonFileCheckpointStore
from backends.checkpoint.memory import MemoryCheckpointStore

__all__ = [
    "DEFAULT_PATH",
    "CheckpointMovedAside",
    "CorruptCheckpoint",
    "JournalCheckpointStore",
    "JsonFileCheckpointStore",
    "MemoryCheckpointStore",
    "UnsupportedCheckpoint",
    "read_checkpoint_file",
]
