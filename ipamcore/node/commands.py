"""Commands: what a :class:`~ipamcore.node.machine.Node` asks its executor to do.

Every command with a ``cid`` is answered by exactly one input carrying that ``cid`` (its
typed result from :mod:`ipamcore.node.inputs`, or :class:`~ipamcore.node.inputs.Done` when
it has no value, or :class:`~ipamcore.node.inputs.Failed`). The others (``Reply``, ``Log``,
``Count``, ``Ready``, ``Abort``) are one-way. An executor may run answered commands
concurrently, in any order; the node never depends on which finishes first.
"""

from __future__ import annotations

import attrs

from ipamcore.checkpoint import CheckpointChange
from ipamcore.effects import Effect
from ipamcore.model import Allocation, AllocationKey
from ipamcore.netspec import EniNetwork, LiveNetwork, NodeNetwork, PodNetwork

# ---------------------------------------------------------------- start-up observations


@attrs.frozen
class ReadIdentity:
    """Read the instance identity from instance metadata -> ``IdentityRead``."""

    cid: int


@attrs.frozen
class DescribeInstanceType:
    """The limits of an instance type missing from the core's table -> ``InstanceTypeDescribed``."""

    cid: int
    instance_type: str


@attrs.frozen
class DescribeEnis:
    """EC2's view of the ENIs attached to ``instance_id`` -> ``EnisDescribed``."""

    cid: int
    instance_id: str


@attrs.frozen
class ReadMetadataEnis:
    """Instance metadata's view of the attached ENIs -> ``MetadataEnisRead``."""

    cid: int


@attrs.frozen
class DescribeSubnets:
    """Subnets by id, or tagged with ``tag_key`` -> ``SubnetsDescribed``."""

    cid: int
    subnet_ids: tuple[str, ...] = ()
    tag_key: str = ""


@attrs.frozen
class FindLeakedEnis:
    """Available ENIs tagged by this CNI and created over ``min_age_s`` before the executor's
    wall time (``None``: at any age) -> ``LeakedEnisFound``. The wall time is the executor's:
    the backend compares it with ``createdAt`` tags, and stamps it on an ENI without one."""

    cid: int
    instance_id: str
    any_instance: bool
    min_age_s: float | None


@attrs.frozen
class FreeLeakedEni:
    """Detach (if needed) and delete one leaked ENI -> ``Done``."""

    cid: int
    eni_id: str


@attrs.frozen
class ReadCheckpoint:
    """Read the stored checkpoint (and an earlier version's netns side file)
    -> ``CheckpointRead``."""

    cid: int


@attrs.frozen
class PodToCheck:
    """One restored allocation's pod: is its netns and host veth still there?"""

    key: AllocationKey
    netns: str
    host_veth: str
    ipv4: str | None = None  # a host veth routing it counts too (one named the upstream way)


@attrs.frozen
class CheckPodsPresent:
    """Check each pod's netns and host veth -> ``PodsPresent``. The executor runs the checks
    off its event loop; a check that fails counts as present (keep the address)."""

    cid: int
    pods: tuple[PodToCheck, ...]


@attrs.frozen
class ReadPendingDels:
    """DELs the plugin recorded while the daemon was down -> ``PendingDelsRead``."""

    cid: int


@attrs.frozen
class RemovePendingDels:
    """Remove the pending-DEL records of ``keys`` (their release is durable) -> ``Done``."""

    cid: int
    keys: tuple[AllocationKey, ...]


@attrs.frozen
class DropLegacyHints:
    """Remove an earlier version's netns side file (a durable checkpoint carries the paths)."""

    cid: int


# ---------------------------------------------------------------- cloud and datapath


@attrs.frozen
class PerformEffect:
    """Perform a cloud effect -> ``EffectDone`` with its outcome."""

    cid: int
    effect: Effect


@attrs.frozen
class SetUpEni:
    """Set up a secondary ENI in the datapath -> ``Done``. ``created``: this node just made it."""

    cid: int
    eni_id: str
    network: EniNetwork
    created: bool = False


@attrs.frozen
class TearDownEni:
    """Remove a freed ENI's rule and routes from the host -> ``Done``."""

    cid: int
    eni_id: str
    network: EniNetwork


@attrs.frozen
class RemoveStale:
    """Remove the host pieces no live allocation needs (pods and ENIs gone while the daemon
    was down) -> ``StaleRemoved``."""

    cid: int
    live: LiveNetwork


@attrs.frozen
class SetUpNode:
    """Node-wide datapath setup (SNAT, sysctls) -> ``Done``."""

    cid: int
    network: NodeNetwork


@attrs.frozen
class SetUpPod:
    """Build a pod's datapath -> ``Done``. ``repeat``: the key already had this address (a
    repeated ADD): check the pieces first and rebuild only if one is missing."""

    cid: int
    network: PodNetwork
    repeat: bool = False


@attrs.frozen
class TearDownPod:
    """Remove a pod's datapath -> ``Done``."""

    cid: int
    network: PodNetwork


@attrs.frozen
class CheckPod:
    """Which pieces of a pod's datapath are missing or wrong -> ``PodChecked``."""

    cid: int
    network: PodNetwork


@attrs.frozen
class Persist:
    """Make every change made before this command durable -> ``Done``.

    ``change``: what changed since the previous ``Persist`` (the entries' values when this
    command was made), for a store that writes changes (a journal): work in proportion to
    the change. None: write ``Node.checkpoint()`` whole (the first write, and after
    anything the node does not track entry by entry: restore, reconciliation, the pool
    policy, a failed write). A store may always write ``Node.checkpoint()`` instead (taken
    when the write starts, it holds at least this change)."""

    cid: int
    change: CheckpointChange | None = None


# ---------------------------------------------------------------- one-way


@attrs.frozen
class Reply:
    """Answer request ``request_id``. ``error`` is "" on success, else one of
    :mod:`ipamcore.node.replies`' codes."""

    request_id: int
    error: str = ""
    message: str = ""
    allocation: Allocation | None = None  # ADD, CHECK, DEL (the address released)
    pod: PodNetwork | None = None  # ADD: the datapath built
    # ADD, DEL, CHECK of a multi-NIC pod: its interfaces on cards above 0, in order
    extra: tuple[tuple[Allocation, PodNetwork], ...] = ()
    released: int = 0  # DEL: 0 or 1; GC: how many


@attrs.frozen
class Log:
    """A log line the executor writes (the node does no logging itself)."""

    level: str
    event: str
    fields: tuple[tuple[str, object], ...] = ()


@attrs.frozen
class Count:
    """Add ``amount`` to counter ``metric`` (with ``label`` when it has one)."""

    metric: str
    label: str = ""
    amount: int = 1


@attrs.frozen
class Observe:
    """Record ``value`` in histogram ``metric`` (e.g. how long an ADD waited for an address)."""

    metric: str
    value: float


@attrs.frozen
class Ready:
    """Start-up is complete: serve requests. ``startup_s`` on the inputs' clock."""

    startup_s: float


@attrs.frozen
class Abort:
    """Start-up cannot go on: the executor stops, with the failure of ``cause_cid``."""

    cause_cid: int
    message: str


Command = (
    ReadIdentity | DescribeInstanceType | DescribeEnis | ReadMetadataEnis | DescribeSubnets
    | FindLeakedEnis | FreeLeakedEni | ReadCheckpoint | CheckPodsPresent | ReadPendingDels
    | RemovePendingDels | DropLegacyHints | PerformEffect | SetUpEni | TearDownEni | RemoveStale
    | SetUpNode | SetUpPod
    | TearDownPod | CheckPod | Persist | Reply | Log | Count | Observe | Ready | Abort
)  # fmt: skip
