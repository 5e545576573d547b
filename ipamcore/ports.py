"""Ports: the interfaces the shell's backends implement (``typing.Protocol``).

The cloud, metadata and datapath ports are synchronous: they are called from worker
threads by an asyncio daemon (``asyncio.to_thread``) and directly by the simulator. The
checkpoint store is asynchronous (the daemon awaits durable writes). Cloud backends raise
:class:`ipamcore.errors.CloudError` and nothing else for cloud failures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from ipamcore.checkpoint import Checkpoint, CheckpointChange
from ipamcore.effects import CreateEni
from ipamcore.limits import InstanceLimits
from ipamcore.model import InstanceIdentity, ObservedEni, Subnet
from ipamcore.netspec import EniNetwork, LiveNetwork, NodeNetwork, PodNetwork


class CloudPort(Protocol):
    """EC2 as the node agent needs it (one instance's view)."""

    def describe_enis(self, instance_id: str) -> list[ObservedEni]:
        """Every ENI attached to the instance, with addresses, tags and security groups."""
        ...

    def describe_subnets(self, subnet_ids: Sequence[str] = (), tag_key: str = "") -> list[Subnet]:
        """Subnets by id, or all carrying ``tag_key`` (subnet discovery) when ids are empty."""
        ...

    def create_eni(
        self, instance_id: str, effect: CreateEni, tags: Mapping[str, str] | None = None
    ) -> ObservedEni:
        """Perform ``effect``: create the ENI in its subnet with its security groups and
        addresses, tag it (``createdAt`` in the create call itself, plus ``tags``), attach
        it at its ``device_index`` (0: the lowest free one), and set DeleteOnTermination
        unless the backend was built with it off (``ENI_DELETE_ON_TERMINATION=false``: one
        mutating call fewer per ENI).

        On failure after creation the backend deletes what it created before raising.
        """
        ...

    def assign_ipv4(self, eni_id: str, count: int) -> tuple[str, ...]:
        """Assign ``count`` secondary IPv4 addresses to the ENI; the addresses EC2 chose."""

    def assign_prefixes(self, eni_id: str, count: int) -> tuple[str, ...]:
        """Assign ``count`` /28 prefixes to the ENI; the prefixes EC2 chose."""

    def assign_ipv6_prefixes(self, eni_id: str, count: int) -> tuple[str, ...]:
        """Assign ``count`` IPv6 /80 prefixes to the ENI (``AssignIpv6Addresses`` with
        ``Ipv6PrefixCount``); the prefixes EC2 chose."""

    def unassign_ipv4(self, eni_id: str, addresses: Sequence[str]) -> None:
        """Unassign these secondary addresses from the ENI."""

    def unassign_prefixes(self, eni_id: str, prefixes: Sequence[str]) -> None:
        """Unassign these prefixes from the ENI."""

    def free_eni(self, eni_id: str) -> None:
        """Detach (if attached), wait until available, delete."""
        ...

    def find_leaked_enis(
        self,
        instance_id: str,
        now: float,
        any_instance: bool = False,
        min_age_s: float | None = 300.0,
    ) -> list[str]:
        """Available ENIs whose ``createdAt`` tag is over ``min_age_s`` before ``now``
        (``None``: at any age): those tagged for ``instance_id``; with ``any_instance``,
        those tagged for any instance (upstream's scope: ENIs a terminated node left
        detached), in ``instance_id``'s VPC and, when the backend has a cluster name, tagged
        with it. An ENI without our instance-id tag is never reported. ``now`` is the real
        time: an ENI of ours without a ``createdAt`` tag is tagged with it. The age rule is
        the caller's (:data:`ipamcore.node.config.LEAKED_ENI_AGE_S`)."""
        ...

    def describe_instance_type(self, instance_type: str) -> InstanceLimits:
        """The networking limits of ``instance_type`` (for types the shipped table lacks)."""


class MetadataPort(Protocol):
    """Instance metadata (IMDS): identity, and the per-MAC view of attached ENIs."""

    def identity(self) -> InstanceIdentity:
        """This instance's id, type, region, availability zone and primary ENI."""

    def enis(self) -> list[ObservedEni]:
        """The ENIs instance metadata shows attached, with their addresses."""


class DatapathPort(Protocol):
    """The Linux datapath: veth pairs, addresses, routes, rules, SNAT."""

    def setup_node(self, node: NodeNetwork) -> None:
        """Host-wide setup once at start: sysctls, SNAT rules, the primary ENI."""

    def setup_eni(self, eni: EniNetwork) -> None:
        """Set up a secondary ENI: the link up, its route table and rule."""

    def teardown_eni(self, eni: EniNetwork) -> None:
        """Remove what :meth:`setup_eni` added for an ENI that was freed: its
        ``from <primary ip> lookup <table>`` rule and its table's routes through its link (if
        the link is still there). Idempotent."""
        ...

    def setup_pod(self, pod: PodNetwork) -> None:
        """Build every piece; on failure, remove what was built and raise.

        Never takes over another attachment's host veth: a link of that name that is not
        this attachment's (see :class:`PodNetwork`) is an error, and so is a pod namespace
        that already holds another attachment of this plugin (a second interface or a second
        network: both would route through 169.254.1.1)."""
        ...

    def teardown_pod(self, pod: PodNetwork) -> None:
        """Idempotent; tolerates missing pieces (netns gone, veth gone). Removes only what
        belongs to this attachment: its address's rules and host route, and a host veth only
        when it is this attachment's."""
        ...

    def remove_stale(self, live: LiveNetwork) -> list[str]:
        """Remove what no live allocation needs (pods and ENIs gone while the daemon was
        down): pod rules of addresses no live pod holds, host veths tagged for attachments
        that are not live, ENI rules of addresses no attached ENI has. Returns a description
        of each piece removed."""
        ...

    def check_pod(self, pod: PodNetwork) -> list[str]:
        """Names of missing or wrong pieces; empty when all is in place."""
        ...

    def pod_present(self, netns_path: str, host_veth: str, ipv4: str | None = None) -> bool:
        """Whether the pod's netns and host veth still exist (for restore at start). With
        ``ipv4``, a host veth that routes it counts too (a veth named the upstream way)."""
        ...


class CheckpointStore(Protocol):
    """Durable storage of the checkpoint document."""

    async def load(self) -> Checkpoint | None:
        """The stored checkpoint, None when there is none yet.

        Raises :class:`ipamcore.errors.CheckpointError` for corrupt content (after moving
        the bad file aside, for file stores).
        """
        ...

    async def save(self, checkpoint: Checkpoint) -> None:
        """Durably replace the stored checkpoint (all or nothing)."""
        ...


@runtime_checkable
class ChangeStore(CheckpointStore, Protocol):
    """A checkpoint store that also writes changes (a journal): the daemon's commits cost
    work in proportion to what changed, not to the pool."""

    async def commit(
        self,
        change: CheckpointChange | None,
        snapshot: Callable[[], Checkpoint],
        *,
        others_waiting: bool = False,
    ) -> None:
        """Durably make ``change`` (every change before it is stored); None, or whenever
        the store cannot apply a change to what it holds: durably store ``snapshot()``.
        The store may hold a change that only removes allocations and records release
        times (in memory, or written unsynced) until its next commit that adds (see
        :mod:`backends.checkpoint.journal`). ``others_waiting``: other requests wait on
        the host, so the store should let the caller's thread go on gathering the next
        commit while this one syncs (a hint; group commit)."""
        ...
