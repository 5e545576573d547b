"""Step hooks: the named steps of a checkpoint write and of an ENI creation.

The checkpoint stores (:mod:`backends.checkpoint`), the EC2
backend (:meth:`backends.aws.ec2.Ec2Backend.create_eni`) and the daemon call a :data:`Step`
callable with the step's name right after each step. In production it is :func:`no_step`,
which does nothing. The crash-injection tests pass one that kills the process at a chosen
step (``tests/rigs/crashpoints.py``, not shipped), to check that a crash between any two
steps leaves a state the next start recovers from.
"""

from __future__ import annotations

from collections.abc import Callable

# The steps of JsonFileCheckpointStore.save, in order.
CHECKPOINT_STEPS = (
    "checkpoint.temp-created",  # the temporary file exists, empty
    "checkpoint.temp-written",  # every byte written, not yet fsynced
    "checkpoint.temp-fsynced",  # the temporary file is durable, not yet renamed
    "checkpoint.renamed",  # renamed over the checkpoint, directory not yet fsynced
    "checkpoint.dir-fsynced",  # durable; the caller has not been told yet
)
# The steps of JournalCheckpointStore: a commit's append, then a compaction, in order.
JOURNAL_STEPS = (
    "journal.appended",  # the record is written (page cache), not yet fdatasynced
    "journal.synced",  # the record is durable; the caller has not been told yet
    "compact.temp-written",  # the new ipam.json is written to its temp file, not fsynced
    "compact.renamed",  # the temp file (fsynced) replaced ipam.json; directory not fsynced
    "compact.dir-fsynced",  # the new ipam.json is durable; the journal is not reset yet
    "journal.reset",  # the journal's first record is zeroed and synced
)
# The steps of an ENI creation, in order (Ec2Backend.create_eni, then the agent).
ENI_STEPS = (
    "eni.created",  # CreateNetworkInterface done (tags are part of that call): not attached
    "eni.attached",  # AttachNetworkInterface done; DeleteOnTermination not yet set
    "eni.configured",  # DeleteOnTermination set (or not asked for); the agent has not heard
    "eni.recorded",  # the core applied EniCreated and the datapath set the ENI up
)
STEPS = CHECKPOINT_STEPS + JOURNAL_STEPS + ENI_STEPS

Step = Callable[[str], None]
"""Called with a step's name (one of :data:`STEPS`) right after that step is done."""


def no_step(_name: str) -> None:
    """The production hook: does nothing."""
