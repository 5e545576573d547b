"""What the datapath must build, as data: the core decides it, a datapath backend does it."""

from __future__ import annotations

import hashlib

import attrs

POD_GATEWAY = "169.254.1.1"
DEFAULT_VETH_PREFIX = "eni"
POD_RULE_TO_PRIORITY = 512  # to <pod ip> lookup main
POD_RULE_FROM_PRIORITY = 1536  # from <pod ip> lookup <eni table>
ENI_RULE_PRIORITY = 32765  # from <eni primary ip> lookup <eni table>


ATTACHMENT_TAG_PREFIX = "vpc-cni:"  # the host veth's ifalias: whose veth it is
VETH_HASH_DIGITS = 11  # a prefix has at most 4 characters: 4 + 11 = IFNAMSIZ - 1


def attachment_digest(network_name: str, container_id: str, if_name: str) -> str:
    """sha256 of one attachment (network, container, interface): the CNI spec's identity of an
    attachment, so two sandboxes of one pod, or two interfaces of one sandbox, never share it."""
    raw = f"{network_name}\0{container_id}\0{if_name}".encode()
    return hashlib.sha256(raw).hexdigest()


def attachment_tag(network_name: str, container_id: str, if_name: str) -> str:
    """The ifalias set on an attachment's host veth: teardown deletes a veth only when it
    carries this tag (or routes the attachment's own address), setup never replaces a veth
    that carries another."""
    return attachment_names(network_name, container_id, if_name)[1]


def attachment_names(
    network_name: str, container_id: str, if_name: str, prefix: str = DEFAULT_VETH_PREFIX
) -> tuple[str, str]:
    """``(host_veth_name(...), attachment_tag(...))`` of one attachment, from one digest (the
    node makes both for every ADD and DEL)."""
    digest = attachment_digest(network_name, container_id, if_name)
    return f"{prefix}{digest[:VETH_HASH_DIGITS]}", ATTACHMENT_TAG_PREFIX + digest[:32]


def host_veth_name(
    network_name: str, container_id: str, if_name: str, prefix: str = DEFAULT_VETH_PREFIX
) -> str:
    """The host veth of one attachment: ``prefix`` + 11 hex digits of its digest.

    Upstream derives the name from the pod's namespace and name only, so a recreated sandbox
    of the same pod, or a second interface of one pod, got the same name and the setup of one
    deleted the other's veth. The container id and interface name make it unique per
    attachment; the prefix (``AWS_VPC_K8S_CNI_VETHPREFIX``) and the length (at most 15
    characters) are upstream's."""
    return attachment_names(network_name, container_id, if_name, prefix)[0]


def legacy_veth_suffix(namespace: str, pod_name: str) -> str:
    """Upstream's veth name without its prefix: the first 11 hex digits of sha1("<ns>.<pod>")."""
    return hashlib.sha1(f"{namespace}.{pod_name}".encode()).hexdigest()[:VETH_HASH_DIGITS]


def legacy_host_veth_name(namespace: str, pod_name: str, prefix: str = DEFAULT_VETH_PREFIX) -> str:
    """Upstream's host veth name (pods set up by upstream, or by an earlier version of this
    daemon, carry it): the prefix and :func:`legacy_veth_suffix`."""
    return prefix + legacy_veth_suffix(namespace, pod_name)


def route_table_for_device(device_index: int) -> int | None:
    """Device N > 0 routes through table N+1; the primary ENI (device 0) uses the main table."""
    return None if device_index == 0 else device_index + 1


@attrs.frozen
class PodNetwork:
    """Everything needed to wire (or unwire, or check) one pod interface.

    ``route_table`` is None for a pod on the primary ENI (no ``from`` rule is added).
    ``tag`` (:func:`attachment_tag`) is set as the host veth's ifalias; a host veth is this
    attachment's when it carries the tag or routes ``ipv4`` (a veth set up before tags,
    by upstream or an earlier version). Empty: ownership by the route only.
    ``attachment_index`` is the interface's place in a multi-NIC pod (0: the only or first
    one): as upstream, interface N > 0 reaches its gateway 169.254.1.(N+1) through the
    pod's own table N, chosen by a ``from <its address>`` rule inside the pod.
    """

    netns_path: str
    if_name: str
    host_veth: str
    ipv4: str
    mtu: int = 9001
    route_table: int | None = None
    tag: str = ""
    attachment_index: int = 0

    @property
    def gateway(self) -> str:
        """The pod's next hop on this interface: 169.254.1.1, .2 for the second..."""
        return (
            POD_GATEWAY if not self.attachment_index else f"169.254.1.{self.attachment_index + 1}"
        )


@attrs.frozen
class EniNetwork:
    """A secondary ENI's host setup: link by MAC, its primary address, MTU and route table."""

    mac: str
    primary_ip: str
    subnet_cidr: str
    gateway: str
    route_table: int
    mtu: int = 9001


@attrs.frozen
class LiveNetwork:
    """What the node's live allocations need, for :meth:`DatapathPort.remove_stale`: every
    live pod attachment and the primary address of every ENI attached to the instance."""

    pods: tuple[PodNetwork, ...] = ()
    eni_ips: tuple[str, ...] = ()


@attrs.frozen
class NodeNetwork:
    """Node-wide settings: SNAT for traffic leaving the VPC unless external SNAT is on."""

    primary_ip: str
    vpc_cidrs: tuple[str, ...]
    external_snat: bool = False
    snat_chain: str = "AWS-SNAT-CHAIN-0"
