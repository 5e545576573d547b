"""Checkpoint stores: the JSON file the daemon uses, and an in-memory one for tests."""

from backends.checkpoint.errors import (
    CheckpointMovedAside,
    CorruptCheckpoint,
    UnsupportedCheckpoint,
)
from backends.checkpoint.journal import JournalCheckpointStore
from backends.checkpoint.jsonfile import (
    DEFAULT_PATH,
    JsonFileCheckpointStore,
    read_checkpoint_file,
)
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
