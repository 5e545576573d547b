"""Errors of the checkpoint stores: a bad checkpoint that was moved aside.

Both classes are :class:`ipamcore.errors.CheckpointError` (the port's documented error),
so callers that only know the port catch them; callers that want to tell the operator where
the bad file went read :attr:`CheckpointMovedAside.moved_to`.
"""

from __future__ import annotations

from ipamcore.errors import CheckpointError, UnsupportedCheckpointVersion


class CheckpointMovedAside(CheckpointError):
    """The stored checkpoint did not decode; it was moved aside, never overwritten.

    ``path`` is where the checkpoint was, ``moved_to`` where its bytes are now (for the
    in-memory store a label such as ``memory:corrupt-1700000000``), ``cause`` the error
    :func:`ipamcore.checkpoint.decode` raised.
    """

    def __init__(self, path: str, moved_to: str, cause: CheckpointError) -> None:
        # Not super().__init__: the MRO of UnsupportedCheckpoint puts
        # UnsupportedCheckpointVersion.__init__(version) next, with another signature.
        Exception.__init__(self, f"{path}: {cause}; moved aside to {moved_to}")
        self.path = path
        self.moved_to = moved_to
        self.cause = cause


class CorruptCheckpoint(CheckpointMovedAside):
    """Malformed, truncated or empty checkpoint (moved aside)."""


class UnsupportedCheckpoint(CheckpointMovedAside, UnsupportedCheckpointVersion):
    """A checkpoint of a format version this core does not know, e.g. from a newer daemon.

    It is moved aside like a corrupt one (so the daemon can start with an empty pool only
    if the operator decides to restart it), and is also an
    :class:`~ipamcore.errors.UnsupportedCheckpointVersion` with ``version`` set.
    """

    def __init__(self, path: str, moved_to: str, cause: UnsupportedCheckpointVersion) -> None:
        super().__init__(path, moved_to, cause)
        self.version = cause.version


def moved_aside_error(path: str, moved_to: str, cause: CheckpointError) -> CheckpointMovedAside:
    """The right subclass for ``cause``."""
    if isinstance(cause, UnsupportedCheckpointVersion):
        return UnsupportedCheckpoint(path, moved_to, cause)
    return CorruptCheckpoint(path, moved_to, cause)
