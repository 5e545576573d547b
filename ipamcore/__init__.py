"""ipamcore: the side-effect-free IPAM core of a VPC CNI node agent.

The core decides; the caller does the I/O. An embedding program builds one :class:`Ipam`
from a :class:`PoolConfig` and the instance's :class:`InstanceLimits`, tells it what the cloud
shows (:meth:`Ipam.load`), assigns and releases pod addresses, and runs the loop
``effects = ipam.plan(now)`` -> perform each effect against the cloud -> ``ipam.apply(outcome,
now)``. Time arrives as ``now`` (seconds); nothing here reads a clock, the environment, a file
or the network. See ``docs/embedding.md`` for a complete, runnable example.

The names below are the public API; the submodules hold the rest (``ipamcore.checkpoint`` for
the checkpoint codec, ``ipamcore.warm`` for upstream's warm-target arithmetic, ...).
"""

from ipamcore.checkpoint import Checkpoint, decode, encode
from ipamcore.config import PolicyName, PoolConfig
from ipamcore.effects import AssignAddresses, CreateEni, Effect, FreeEni, UnassignAddresses
from ipamcore.errors import (
    CheckpointError,
    CloudError,
    ConfigError,
    DataError,
    FailureKind,
    IpamError,
    PoolExhausted,
    UnknownInstanceType,
    UnsupportedCheckpointVersion,
    UsageError,
)
from ipamcore.events import (
    AddressesAssigned,
    AddressesUnassigned,
    EffectFailed,
    EniCreated,
    EniFreed,
    Outcome,
)
from ipamcore.ipam import Ipam, RestoreReport
from ipamcore.limits import InstanceLimits, known_instance_types, limits_for
from ipamcore.model import (
    Allocation,
    AllocationKey,
    ObservedEni,
    ObservedNode,
    PodRef,
    Subnet,
)
from ipamcore.reconcile import ReconcileReport
from ipamcore.views import PoolStats

# The one place the version is written; both distributions' metadata read it from here.
__version__ = "0.1.0"

__all__ = [
    "AddressesAssigned",
    "AddressesUnassigned",
    "Allocation",
    "AllocationKey",
    "AssignAddresses",
    "Checkpoint",
    "CheckpointError",
    "CloudError",
    "ConfigError",
    "CreateEni",
    "DataError",
    "Effect",
    "EffectFailed",
    "EniCreated",
    "EniFreed",
    "FailureKind",
    "FreeEni",
    "InstanceLimits",
    "Ipam",
    "IpamError",
    "ObservedEni",
    "ObservedNode",
    "Outcome",
    "PodRef",
    "PolicyName",
    "PoolConfig",
    "PoolExhausted",
    "PoolStats",
    "ReconcileReport",
    "RestoreReport",
    "Subnet",
    "UnassignAddresses",
    "UnknownInstanceType",
    "UnsupportedCheckpointVersion",
    "UsageError",
    "__version__",
    "decode",
    "encode",
    "known_instance_types",
    "limits_for",
]
