"""Inputs: what an executor feeds a :class:`~ipamcore.node.machine.Node`, each with ``now``.

Requests (``Add``, ``Del``, ``Check``, ``Gc``) carry the executor's ``request_id``; answers
carry the ``cid`` of the command they answer. ``now`` is the executor's clock (Unix seconds).
"""

from __future__ import annotations

import attrs

from ipamcore.checkpoint import Checkpoint
from ipamcore.errors import FailureKind
from ipamcore.events import Outcome
from ipamcore.limits import InstanceLimits
from ipamcore.model import AllocationKey, InstanceIdentity, ObservedEni, PodRef, Subnet

# ---------------------------------------------------------------- life cycle


@attrs.frozen
class Start:
    """Begin start-up (the node asks for what it needs to observe)."""

    now: float


@attrs.frozen
class Tick:
    """Time has reached (or passed) :attr:`Node.wake_at`."""

    now: float


@attrs.frozen
class Stop:
    """Stop: no new effects; requests get ``shutting_down``."""

    now: float


@attrs.frozen
class Flush:
    """Write the checkpoint one last time; answered by ``Reply(request_id)``."""

    now: float
    request_id: int


@attrs.frozen
class EniConfigChanged:
    """Custom networking from Kubernetes: the node's ENIConfig ``name`` now says new ENIs
    go to ``subnet_id`` with ``security_groups`` (none: the primary ENI's);
    ``subnet_id`` None: no such ENIConfig exists, so no new ENI until it does."""

    now: float
    name: str
    subnet_id: str | None
    security_groups: tuple[str, ...] = ()


@attrs.frozen
class MaxPodsChanged:
    """The Node's capacity ``pods`` (None: unknown): it caps the pool's max pods."""

    now: float
    max_pods: int | None


# ---------------------------------------------------------------- requests


@attrs.frozen
class Add:
    """A CNI ADD: an address for ``key`` (the same one again if it has one), for ``pod``;
    ``multi_nic``: the pod is annotated for a multi-NIC attachment (one interface per card)."""

    now: float
    request_id: int
    key: AllocationKey
    pod: PodRef
    netns: str = ""
    mtu: int | None = None
    multi_nic: bool = False


@attrs.frozen
class Del:
    """A CNI DEL: release ``key``'s address and tear down its pod network in ``netns``."""

    now: float
    request_id: int
    key: AllocationKey
    netns: str = ""


@attrs.frozen
class Check:
    """A CNI CHECK: does ``key`` hold an address, and is its pod network in ``netns`` intact?"""

    now: float
    request_id: int
    key: AllocationKey
    netns: str = ""
    mtu: int | None = None


@attrs.frozen
class Cancel:
    """The client of request ``request_id`` is gone (it will read no reply): an ADD keeps no
    address for it. Other requests go on (a DEL still frees)."""

    now: float
    request_id: int


@attrs.frozen
class Gc:
    """Release ``network_name``'s allocations whose (container id, interface) is not valid."""

    now: float
    request_id: int
    network_name: str
    valid: frozenset[tuple[str, str]] = frozenset()


# ---------------------------------------------------------------- answers


@attrs.frozen
class Done:
    """A command without a value succeeded."""

    now: float
    cid: int


@attrs.frozen
class Failed:
    """A command failed. ``kind`` when the cloud classified the failure; ``error_type``
    names the exception (for replies)."""

    now: float
    cid: int
    message: str
    kind: FailureKind | None = None
    error_type: str = ""

    def describe(self) -> str:
        """The failure as one line: ``<error type>: <message>``."""
        return f"{self.error_type}: {self.message}" if self.error_type else self.message


@attrs.frozen
class IdentityRead:
    """Answer to a metadata identity read: the instance's identity."""

    now: float
    cid: int
    identity: InstanceIdentity


@attrs.frozen
class InstanceTypeDescribed:
    """Answer to DescribeInstanceTypes: the instance type's limits."""

    now: float
    cid: int
    limits: InstanceLimits


@attrs.frozen
class EnisDescribed:
    """Answer to DescribeNetworkInterfaces: the ENIs EC2 shows attached."""

    now: float
    cid: int
    enis: tuple[ObservedEni, ...]


@attrs.frozen
class MetadataEnisRead:
    """Answer to a metadata read: the ENIs instance metadata shows."""

    now: float
    cid: int
    enis: tuple[ObservedEni, ...]


@attrs.frozen
class SubnetsDescribed:
    """Answer to DescribeSubnets: the candidate subnets for new ENIs."""

    now: float
    cid: int
    subnets: tuple[Subnet, ...]


@attrs.frozen
class LeakedEnisFound:
    """Answer to the leaked-ENI search: ENIs to free."""

    now: float
    cid: int
    eni_ids: tuple[str, ...]


UNREADABLE = "unreadable"
NEWER_VERSION = "newer-version"


@attrs.frozen
class CheckpointRead:
    """The stored checkpoint (``None``: none, or ``problem`` says why it could not be used:
    ``UNREADABLE`` or ``NEWER_VERSION``), plus netns paths an earlier version's side file
    gave (``legacy_file``: that file exists). Paths are already validated by the executor."""

    now: float
    cid: int
    checkpoint: Checkpoint | None
    problem: str = ""
    detail: str = ""
    moved_to: str = ""
    legacy_hints: tuple[tuple[AllocationKey, str], ...] = ()
    legacy_file: bool = False


@attrs.frozen
class PodsPresent:
    """Answer to ``CheckPodsPresent``: the keys whose pod is gone."""

    now: float
    cid: int
    gone: frozenset[AllocationKey]


@attrs.frozen
class PendingDel:
    """A DEL the plugin recorded on disk while the daemon was down."""

    key: AllocationKey
    netns: str = ""


@attrs.frozen
class PendingDelsRead:
    """Answer to a read of the pending-DEL records."""

    now: float
    cid: int
    dels: tuple[PendingDel, ...]


@attrs.frozen
class StaleRemoved:
    """Answer to ``RemoveStale``: a description of each piece removed."""

    now: float
    cid: int
    removed: tuple[str, ...]


@attrs.frozen
class PodChecked:
    """Answer to "check these pods exist": the container ids of those missing."""

    now: float
    cid: int
    missing: tuple[str, ...]


@attrs.frozen
class EffectDone:
    """Answer to a cloud effect: its outcome, for :meth:`ipamcore.ipam.Ipam.apply`."""

    now: float
    cid: int
    outcome: Outcome


Answer = (
    Done | Failed | IdentityRead | InstanceTypeDescribed | EnisDescribed | MetadataEnisRead
    | SubnetsDescribed | LeakedEnisFound | CheckpointRead | PodsPresent | PendingDelsRead
    | PodChecked | EffectDone | StaleRemoved
)  # fmt: skip
Request = Add | Del | Check | Gc
Input = (
    Start | Tick | Stop | Flush | Cancel | EniConfigChanged | MaxPodsChanged | Request
    | Answer
)  # fmt: skip
