"""Value classes of the model: ENIs as observed, allocations, pods.

Everything here is a frozen value (attrs classes; named tuples for the two made on every
ADD and DEL): safe to share, hash and compare. The mutable bookkeeping lives in
:mod:`ipamcore.pool`.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

import attrs

NO_MANAGE_TAG = "node.k8s.amazonaws.com/no_manage"
INSTANCE_ID_TAG = "node.k8s.amazonaws.com/instance_id"
CREATED_AT_TAG = "node.k8s.amazonaws.com/createdAt"
CLUSTER_NAME_TAG = "cluster.k8s.amazonaws.com/name"
SUBNET_DISCOVERY_TAG = "kubernetes.io/role/cni"
ENI_DESCRIPTION_PREFIX = "aws-K8S-"
IPS_PER_PREFIX = 16  # an IPv4 /28 prefix


class AllocationKey(NamedTuple):
    """The identity of one pod interface, as the CNI spec defines it.

    A named tuple: it is looked up on every ADD and DEL, and a tuple hashes and compares in
    C, where attrs' ``__hash__`` is a Python call (and its cached hash an object per key).
    """

    network_name: str
    container_id: str
    if_name: str

    def __str__(self) -> str:
        return f"{self.network_name}/{self.container_id}/{self.if_name}"


@attrs.frozen
class PodRef:
    """The Kubernetes pod an allocation belongs to (may be empty strings when unknown)."""

    namespace: str = ""
    name: str = ""


class Allocation(NamedTuple):
    """One address handed to one pod interface.

    ``eni_id`` and ``device_index`` tell the datapath which route table serves the pod
    (device N uses table N+1; the primary ENI, device 0, uses the main table).
    ``allocated_at`` is Unix seconds as given by the caller's ``now``.

    A named tuple (``_replace`` makes a changed copy): one is made on every ADD and DEL, and
    an attrs frozen class takes several times longer to make.
    """

    key: AllocationKey
    pod: PodRef
    ipv4: str | None
    ipv6: str | None
    allocated_at: float
    eni_id: str = ""
    device_index: int = 0

    @property
    def address(self) -> str:
        """The pod's address: the IPv4 one, else the IPv6 one."""
        addr = self.ipv4 or self.ipv6
        assert addr is not None
        return addr


@attrs.frozen
class ObservedEni:
    """One ENI attached to the instance as the cloud (EC2 or metadata) reports it.

    ``ipv4_addresses`` are the secondary IPv4 addresses only (the primary IP is separate).
    """

    eni_id: str
    mac: str
    device_index: int
    subnet_id: str
    subnet_cidr: str
    primary_ip: str
    network_card: int = 0
    ipv4_addresses: tuple[str, ...] = ()
    ipv4_prefixes: tuple[str, ...] = ()
    ipv6_prefixes: tuple[str, ...] = ()
    is_primary: bool = False
    is_trunk: bool = False
    is_efa: bool = False  # interface type efa or efa-only: carries no pod addresses
    # interface type efa-only (no IP address at all): a card above 0 holding one and no other
    # ENI the CNI may manage is left alone, as upstream's markUnmanagedNetworkCards does
    is_efa_only: bool = False
    tags: tuple[tuple[str, str], ...] = ()
    security_groups: tuple[str, ...] = ()

    @property
    def tag_map(self) -> dict[str, str]:
        """The ENI's tags as a dict."""
        return dict(self.tags)

    @property
    def unmanaged(self) -> bool:
        """Tagged ``no_manage=true``: left alone, but counted against the ENI limit."""
        return self.tag_map.get(NO_MANAGE_TAG, "").lower() == "true"

    @property
    def counts_as_primary(self) -> bool:
        """The instance's primary ENI: flagged ``is_primary``, or device 0 on network card 0."""
        return self.is_primary or (self.device_index == 0 and self.network_card == 0)

    @property
    def subnet_gateway(self) -> str:
        """The VPC router of the subnet: its network address + 1."""
        net = ipaddress.ip_network(self.subnet_cidr, strict=False)
        return str(net.network_address + 1)


@attrs.frozen
class ObservedNode:
    """A snapshot of every ENI attached to the instance, for reconciliation."""

    enis: tuple[ObservedEni, ...]


@attrs.frozen
class Subnet:
    """A VPC subnet as described by EC2, for ENI placement and subnet discovery."""

    subnet_id: str
    cidr: str
    availability_zone: str
    free_addresses: int
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def tag_map(self) -> dict[str, str]:
        """The subnet's tags as a dict."""
        return dict(self.tags)


@attrs.frozen
class InstanceIdentity:
    """What instance metadata says about this node."""

    instance_id: str
    instance_type: str
    availability_zone: str
    primary_mac: str
    vpc_cidrs: tuple[str, ...] = ()
    region: str = ""
    # IPv6 (IMDS ``subnet-ipv6-cidr-blocks`` and ``ipv6s`` of the primary MAC): the primary
    # subnet's IPv6 CIDRs, and the node's own IPv6 address ("" when it has none).
    subnet_ipv6_cidrs: tuple[str, ...] = ()
    ipv6_address: str = ""
